"""Experiment configs: the typed schema, YAML loading with ``base:`` and overrides, and the hash.

- :mod:`.schema`: one dataclass per section, with defaults;
- :mod:`.validation`: the range and choice checks of a whole config;
- :mod:`.loading`: YAML files (``base:`` inheritance), ``key=value`` overrides, typed construction;
- :mod:`.hashing`: the hash that ties checkpoints to a config, and the keys a resume may change.
"""

from .choices import THRESHOLD_RULES
from .hashing import RESUME_NEUTRAL_KEYS, config_hash, flatten_config
from .loading import dump_config, from_dict, load_config, parse_override, read_yaml
from .schema import (
    DEFAULT_CONFIG,
    DEFAULT_METHODS,
    CEAGConfig,
    CheckpointConfig,
    ConstraintConfig,
    DataConfig,
    DenseConfig,
    DualConfig,
    ELConfig,
    EvaluationConfig,
    ExperimentConfig,
    FinetuneConfig,
    GuardsConfig,
    LoggingConfig,
    ModelConfig,
    PruningConfig,
    ThresholdsConfig,
)

__all__ = [
    "DEFAULT_CONFIG",
    "DEFAULT_METHODS",
    "RESUME_NEUTRAL_KEYS",
    "THRESHOLD_RULES",
    "CEAGConfig",
    "CheckpointConfig",
    "ConstraintConfig",
    "DataConfig",
    "DenseConfig",
    "DualConfig",
    "ELConfig",
    "EvaluationConfig",
    "ExperimentConfig",
    "FinetuneConfig",
    "GuardsConfig",
    "LoggingConfig",
    "ModelConfig",
    "PruningConfig",
    "ThresholdsConfig",
    "config_hash",
    "dump_config",
    "flatten_config",
    "from_dict",
    "load_config",
    "parse_override",
    "read_yaml",
]
