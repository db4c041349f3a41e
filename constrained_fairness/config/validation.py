"""The range and choice checks of :class:`~.schema.ExperimentConfig`: one-line
:class:`~constrained_fairness.errors.ConfigError` messages naming the key and the fix."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from . import choices
from .choices import THRESHOLD_RULES

if TYPE_CHECKING:
    from .schema import ExperimentConfig

FLOAT32_MAX = 3.4028234663852886e38  # learning rates beyond it overflow inside the optimizers


def validate_config(config: ExperimentConfig) -> None:
    """Check value ranges and choices; raise :class:`ConfigError` naming the key and the fix."""
    p, f = config.pruning, config.finetune
    _require(0.0 <= p.sparsity < 1.0, f"pruning.sparsity must lie in [0, 1), got {p.sparsity}; e.g. 0.95")
    _require(p.epochs >= 1, f"pruning.epochs must be >= 1, got {p.epochs}")
    _require(f.epochs >= 0, f"finetune.epochs must be >= 0, got {f.epochs}")
    _require_one_of("pruning.scope", p.scope, choices.PRUNING_SCOPES)
    for key, value in (("ceag.tolerance", config.ceag.tolerance), ("el.tolerance", config.el.tolerance)):
        _require(value >= 0, f"{key} must be >= 0, got {value}; a tolerance is a non-negative gap")
    _require(config.ceag.buffer_size >= 1, f"ceag.buffer_size must be >= 1, got {config.ceag.buffer_size}")
    _require(
        config.el.buffer_size >= 1,
        f"el.buffer_size (of method el_rb) must be >= 1, got {config.el.buffer_size}",
    )
    _require_one_of("ceag.overall_estimate", config.ceag.overall_estimate, choices.OVERALL_ESTIMATES)
    _require_one_of("el.overall_estimate", config.el.overall_estimate, choices.OVERALL_ESTIMATES)
    _require_one_of("el.form", config.el.form, choices.EL_FORMS)
    _require_one_of("pruning.schedule", p.schedule, choices.PRUNING_SCHEDULES)
    _require_one_of("pruning.rounding", p.rounding, choices.PRUNING_ROUNDINGS)
    _require_one_of("finetune.weight_decay_scope", f.weight_decay_scope, choices.WEIGHT_DECAY_SCOPES)
    _require_one_of("data.split", config.data.split, choices.DATA_SPLITS)
    _require_one_of("data.transforms", config.data.transforms, choices.TRANSFORM_STYLES)
    _require(
        0 <= config.data.val_fraction < 1,
        f"data.val_fraction must lie in [0, 1) (0: no validation split), got {config.data.val_fraction}",
    )
    _require_one_of("thresholds.rule", config.thresholds.rule, THRESHOLD_RULES)
    e = config.evaluation
    _require(
        e.bootstrap_resamples >= 1,
        f"evaluation.bootstrap_resamples must be >= 1, got {e.bootstrap_resamples}; e.g. 1000",
    )
    _require(0 < e.confidence < 1, f"evaluation.confidence must lie in (0, 1), got {e.confidence}; e.g. 0.95")
    _require(e.min_group_size >= 1, f"evaluation.min_group_size must be >= 1, got {e.min_group_size}")
    _require(
        config.checkpoint.keep_last >= 1,
        f"checkpoint.keep_last must be >= 1, got {config.checkpoint.keep_last}; keep at least the newest",
    )
    _require(
        config.checkpoint.every_steps >= 0,
        f"checkpoint.every_steps must be >= 0 (0: each epoch only), got {config.checkpoint.every_steps}",
    )
    _require_one_of("guards.nonfinite", config.guards.nonfinite, choices.NONFINITE_POLICIES)
    _require(
        config.guards.multiplier_warning > 0,
        f"guards.multiplier_warning must be > 0, got {config.guards.multiplier_warning}",
    )
    _require(
        config.guards.divergence_factor > 0,
        f"guards.divergence_factor must be > 0 (e.g. 100), got {config.guards.divergence_factor}",
    )
    _require(
        config.guards.check_every >= 1,
        f"guards.check_every must be >= 1 (1: every step), got {config.guards.check_every}",
    )
    _require_one_of("guards.fixed_shapes", config.guards.fixed_shapes, choices.FIXED_SHAPES)
    _require_one_of("data.cache", config.data.cache, choices.IMAGE_CACHES)
    _require(
        config.evaluation.every_epochs >= 1,
        f"evaluation.every_epochs must be >= 1 (1: every epoch), got {config.evaluation.every_epochs}",
    )
    duals = [("ceag.dual", config.ceag.dual), ("el.dual", config.el.dual)]
    duals += [(f"constraints[{i}].dual", c.dual) for i, c in enumerate(config.constraints)]
    for key, dual in duals:
        _require_one_of(f"{key}.optimizer", dual.optimizer, choices.DUAL_OPTIMIZERS)
        _require(
            0 < dual.lr <= FLOAT32_MAX,
            f"{key}.lr must be > 0 and at most {FLOAT32_MAX:.3g} (a float32), got {dual.lr}",
        )
        _require(0 <= dual.nupi_ema < 1, f"{key}.nupi_ema must lie in [0, 1), got {dual.nupi_ema}")
    for key, value in (
        ("dense.batch_size", config.dense.batch_size),
        ("finetune.batch_size", f.batch_size),
        ("eval_batch_size", config.eval_batch_size),
    ):
        _require(value >= 1, f"{key} must be >= 1, got {value}")
    for key, value in (
        ("dense.min_steps_per_epoch", config.dense.min_steps_per_epoch),
        ("finetune.min_steps_per_epoch", f.min_steps_per_epoch),
    ):
        _require(value >= 0, f"{key} must be >= 0 (0: the batch_size as given), got {value}")
    _require(config.dense.epochs >= 0, f"dense.epochs must be >= 0, got {config.dense.epochs}")
    for key, value in (
        ("dense.lr", config.dense.lr),
        ("finetune.lr", f.lr),
        ("finetune.lr_gamma", f.lr_gamma),
    ):
        _require(0 < value <= FLOAT32_MAX, f"{key} must be > 0 and at most {FLOAT32_MAX:.3g}, got {value}")
    for key, value in (
        ("dense.weight_decay", config.dense.weight_decay),
        ("finetune.weight_decay", f.weight_decay),
        ("finetune.momentum", f.momentum),
    ):
        _require(value >= 0, f"{key} must be >= 0, got {value}")
    _require(not f.nesterov or f.momentum > 0, "finetune.nesterov needs finetune.momentum > 0")
    _require(
        all(0 < m <= 1 for m in config.dense.lr_milestones) and config.dense.lr_gamma > 0,
        f"dense.lr_milestones must be fractions in (0, 1] and dense.lr_gamma > 0, got "
        f"{config.dense.lr_milestones} and {config.dense.lr_gamma}",
    )
    _require_one_of("dense.optimizer", config.dense.optimizer, choices.DENSE_OPTIMIZERS)
    _require(
        all(h >= 1 for h in config.model.hidden),
        f"model.hidden widths must be >= 1, got {config.model.hidden}",
    )
    _require(
        set(p.dense_layers) <= {"first", "last"},
        f"pruning.dense_layers may hold first and last, got {p.dense_layers}",
    )
    _require(
        config.device in ("auto", "cpu") or config.device.startswith("cuda"),
        f"device must be auto, cpu, cuda or cuda:N, got {config.device!r}",
    )
    _require(
        all(0 < m <= 1 for m in f.lr_milestones),
        f"finetune.lr_milestones are fractions of the sparse-stage epochs in (0, 1], got {f.lr_milestones}",
    )
    # registered names, or package.module:function (imported when the run starts)
    from ..data.registry import DATASETS
    from ..experiment.methods import check_methods
    from ..models import MODELS

    check_methods(config.methods)
    DATASETS.check(config.data.name)
    MODELS.check(config.model.name)
    _require(
        "constrained" not in config.methods or bool(config.constraints),
        "method constrained needs a constraints: list, e.g. [{type: demographic_parity}]",
    )
    for i, c in enumerate(config.constraints):
        key = f"constraints[{i}]"
        _require(bool(c.type), f"{key}.type is missing; e.g. type: demographic_parity")
        _require(c.tolerance >= 0, f"{key}.tolerance must be >= 0, got {c.tolerance}")
        _require(c.mode in choices.GROUPING_MODES, f"{key}.mode must be intersectional or marginal")
        _require(c.form in choices.CONSTRAINT_FORMS, f"{key}.form must be group_vs_overall or max_min")
        _require(
            c.buffer_size >= 0, f"{key}.buffer_size must be >= 0 (0: batch estimate), got {c.buffer_size}"
        )
        _require(c.temperature > 0, f"{key}.temperature must be > 0, got {c.temperature}")
        _require_one_of(f"{key}.overall_estimate", c.overall_estimate, choices.OVERALL_ESTIMATES)
    _require_one_of("precision", config.precision, choices.PRECISIONS)
    _require(config.model.width > 0, f"model.width must be > 0, got {config.model.width}")
    _require(config.data.num_workers >= 0, f"data.num_workers must be >= 0, got {config.data.num_workers}")
    _require(
        config.data.image_size is None or config.data.image_size >= 8,
        f"data.image_size must be >= 8 pixels, got {config.data.image_size}",
    )
    if config.data.name == "csv":
        _require(config.data.path is not None, "data.path is required when data.name is csv")
        _require(config.data.target is not None, "data.target is required when data.name is csv")
    _require_one_of("logging.wandb", config.logging.wandb, choices.WANDB_MODES)
    _require_one_of("logging.progress", config.logging.progress, choices.PROGRESS_MODES)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _require_one_of(key: str, value: Any, choices: Sequence[str]) -> None:
    listed = " or ".join([", ".join(choices[:-1]), choices[-1]]) if len(choices) > 1 else choices[0]
    _require(value in choices, f"{key} must be {listed}, got {value!r}")
