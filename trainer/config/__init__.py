"""The run configuration: one typed schema (`schema`) and its loading from YAML plus overrides (`loading`)."""

from trainer.config.loading import (
                                    DEFAULT_CONFIG_PATH,
                                    build_dataclass,
                                    config_from_dict,
                                    flatten,
                                    load_config,
                                    read_extended_mapping,
                                    read_yaml_mapping,
                                    set_nested,
                                    to_dict,
)
from trainer.config.schema import (
                                    METHOD_NAMES,
                                    Config,
                                    DataConfig,
                                    EmaConfig,
                                    EvalConfig,
                                    FaultsConfig,
                                    MethodConfig,
                                    ModelConfig,
                                    OptimConfig,
                                    ProbeConfig,
                                    RunConfig,
                                    ScalingConfig,
                                    TrackingConfig,
                                    TrainConfig,
)

__all__ = ["METHOD_NAMES", "Config", "DataConfig", "ModelConfig", "MethodConfig", "EmaConfig", "OptimConfig",
           "ProbeConfig", "EvalConfig", "TrainConfig", "ScalingConfig", "RunConfig", "FaultsConfig", "TrackingConfig",
           "DEFAULT_CONFIG_PATH", "build_dataclass", "config_from_dict", "flatten", "load_config",
           "read_extended_mapping", "read_yaml_mapping", "set_nested", "to_dict"]
