"""The run configuration: one typed schema (`schema`, the methods' sections from trainer/methods/catalog.py) and its
loading from YAML plus overrides (`loading`; moved keys: `legacy`)."""

from trainer.config.loading import (
                                    DEFAULT_CONFIG_PATH,
                                    build_dataclass,
                                    config_from_dict,
                                    config_sections,
                                    flatten,
                                    load_config,
                                    params_of,
                                    read_extended_mapping,
                                    read_yaml_mapping,
                                    set_nested,
                                    to_dict,
)
from trainer.config.schema import (
                                    Config,
                                    DataConfig,
                                    DebugConfig,
                                    EmaConfig,
                                    EvalConfig,
                                    ModelConfig,
                                    OptimConfig,
                                    ProbeConfig,
                                    RunConfig,
                                    ScalingConfig,
                                    TrackingConfig,
                                    TrainConfig,
)

__all__ = ["Config", "DataConfig", "ModelConfig", "EmaConfig", "OptimConfig", "ProbeConfig", "EvalConfig",
           "TrainConfig", "ScalingConfig", "RunConfig", "DebugConfig", "TrackingConfig", "DEFAULT_CONFIG_PATH",
           "build_dataclass", "config_from_dict", "config_sections", "flatten", "load_config", "params_of",
           "read_extended_mapping", "read_yaml_mapping", "set_nested", "to_dict"]
