"""The run configuration: one typed schema (`schema`) and its loading from YAML plus overrides (`loading`)."""

from trainer.config.loading import (
                                    DEFAULT_CONFIG_PATH,
                                    build_dataclass,
                                    config_from_dict,
                                    flatten,
                                    load_config,
                                    read_yaml_mapping,
                                    set_nested,
                                    to_dict,
)
from trainer.config.schema import (
                                    Config,
                                    DataConfig,
                                    EmaConfig,
                                    EvalConfig,
                                    FaultsConfig,
                                    ModelConfig,
                                    OptimConfig,
                                    ProbeConfig,
                                    RunConfig,
                                    ScalingConfig,
                                    TrackingConfig,
                                    TrainConfig,
)

__all__ = ["Config", "DataConfig", "ModelConfig", "EmaConfig", "OptimConfig", "ProbeConfig", "EvalConfig",
           "TrainConfig", "ScalingConfig", "RunConfig", "FaultsConfig", "TrackingConfig", "DEFAULT_CONFIG_PATH",
           "build_dataclass", "config_from_dict", "flatten", "load_config", "read_yaml_mapping", "set_nested",
           "to_dict"]
