"""Checks of a config against the machine and the data, made before any training, so that a
run never fails after hours on something knowable at the start. Each is a one-line
:class:`ConfigError` naming the key and the fix; :func:`groups_below_buffers` is a warning."""

from __future__ import annotations

from typing import Any

import torch

from ..config import ExperimentConfig
from ..errors import ConfigError
from ..groups import Grouping


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


def groups_below_buffers(
    cfg: ExperimentConfig,
    grouping: Grouping,
    constraint_groupings: list[Grouping],
    constraint_names: list[str],
    train_attributes: torch.Tensor,
) -> dict[str, dict[str, Any]]:
    """The groups that a replay buffer leaves out: per constraint with a buffer of ``k`` rows
    (``ceag``, ``el_rb``, a declared ``constraints:`` entry), the groups with at least one but
    fewer than ``k`` training rows, with their counts. Their buffer never fills, so they never
    get a strict estimate and their multiplier never moves: the constraint does not hold them."""
    buffered: list[tuple[str, Grouping, int]] = []
    if "ceag" in cfg.methods:
        buffered.append(("ceag", grouping, cfg.ceag.buffer_size))
    if "el_rb" in cfg.methods:
        buffered.append(("el_rb", grouping, cfg.el.buffer_size))
    if "constrained" in cfg.methods:
        for name, spec, g in zip(constraint_names, cfg.constraints, constraint_groupings, strict=True):
            if spec.buffer_size > 0:
                buffered.append((name, g, spec.buffer_size))
    out: dict[str, dict[str, Any]] = {}
    for name, g, k in buffered:
        counts = torch.bincount(g.memberships(train_attributes)[1], minlength=g.num_groups).tolist()
        small = {g.names[i]: c for i, c in enumerate(counts) if 0 < c < k}
        if small:
            out[name] = {"buffer_size": k, "groups": small}
    return out


def buffer_warning(left_out: dict[str, dict[str, Any]], min_group_size: int) -> str:
    """The one warning line naming every group a buffer leaves out, with the fix: a buffer no
    larger than the smallest of them that is big enough for a verdict (``min_group_size``)."""
    parts = [
        f"{name} (buffer_size {entry['buffer_size']}): "
        + ", ".join(f"{g} ({n} row{'s' if n != 1 else ''})" for g, n in entry["groups"].items())
        for name, entry in left_out.items()
    ]
    large = [n for entry in left_out.values() for n in entry["groups"].values() if n >= min_group_size]
    fix = (
        f"to constrain those of at least {min_group_size} rows set the buffer_size to at most {min(large)} "
        "(e.g. ceag.buffer_size); merge smaller groups"
        if large
        else f"all have fewer than evaluation.min_group_size = {min_group_size} rows: merge them, "
        "or accept them unconstrained"
    )
    return (
        "groups with fewer training rows than a constraint's replay buffer never fill it and are left "
        f"out of that constraint: {'; '.join(parts)}; {fix} (they are listed in metrics.json)"
    )
