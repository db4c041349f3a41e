"""Checks of a config against the machine and the data, made before any training, so that a
run never fails after hours on something knowable at the start. Each is a one-line
:class:`ConfigError` naming the key and the fix."""

from __future__ import annotations

from ..config import ExperimentConfig
from ..errors import ConfigError


def check_batch_sizes(cfg: ExperimentConfig, world: int) -> None:
    """Batch sizes are global under DDP: each must split evenly over the ``world`` ranks."""
    for key, size in (
        ("dense.batch_size", cfg.dense.batch_size),
        ("finetune.batch_size", cfg.finetune.batch_size),
    ):
        if size % world:
            raise ConfigError(f"{key} = {size} is the global batch; make it a multiple of the {world} ranks")


def check_constraint_attributes(cfg: ExperimentConfig) -> None:
    """Every attribute a declared constraint names is loaded as a protected attribute."""
    for i, spec in enumerate(cfg.constraints):
        missing = [a for a in spec.attributes or [] if a not in cfg.data.protected]
        if missing:
            raise ConfigError(
                f"constraints[{i}] names attribute {missing[0]!r}, which is not in data.protected "
                f"{cfg.data.protected}; add it there (protected attributes are loaded as groups)"
            )


def check_methods_fit_data(cfg: ExperimentConfig, num_classes: int, has_val: bool) -> None:
    """``thresholds`` needs a binary target and a validation split to fit on."""
    if "thresholds" in cfg.methods and num_classes != 2:
        raise ConfigError(f"method thresholds needs a binary target; the data has {num_classes} classes")
    if not has_val and "thresholds" in cfg.methods:
        raise ConfigError(
            "method thresholds fits its thresholds on the validation split; set data.val_fraction > 0"
        )


def unique_names(names: list[str]) -> list[str]:
    """``["dp", "dp"]`` → ``["dp", "dp_2"]``."""
    out: list[str] = []
    for name in names:
        candidate, n = name, 1
        while candidate in out:
            n += 1
            candidate = f"{name}_{n}"
        out.append(candidate)
    return out
