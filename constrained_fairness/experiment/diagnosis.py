"""Why CEAG ended infeasible on train, and the one change most likely to help.

CEAG is *feasible on train* when ``max_g ψ[g] ≤ ε`` on the training split (where the
constraint is imposed). When it is not, :func:`infeasibility` names every violating group with
its size and EAG and picks one change, by the first rule that applies:

1. every violating group has fewer than ``evaluation.min_group_size`` rows: one sample moves
   such a group's EAG by ``1/n`` (33 points at ``n = 3``), so no step budget fixes it; raise
   ``ceag.tolerance`` or merge small groups;
2. every violating group of at least ``min_group_size`` rows has fewer training rows than
   ``ceag.buffer_size``: its buffer never fills, so the constraint never reaches it (see
   ``groups_below_buffer``); set the buffer size to at most the smallest of them;
3. the CEAG stage took fewer than half the steps of the Adult default
   (:data:`REFERENCE_STEPS`, at which CEAG reaches ε on every seed of the README's demo):
   the multipliers had too few dual steps; raise ``finetune.epochs`` or lower
   ``finetune.batch_size`` (small tables give a few steps per epoch);
4. otherwise the multipliers did not grow enough within the budget: raise ``ceag.dual.lr``.
"""

from __future__ import annotations

from typing import Any

from ..config import ExperimentConfig
from ..reporting.results import MethodResult

REFERENCE_STEPS = 6120
"""Steps of the CEAG stage of the Adult default (measured in its history): 102 batches of 256 of
the 26,049 training rows, for the 15 pruning and 45 fine-tuning epochs
(``pruning.mitigate_while_pruning: true``)."""


def infeasibility(
    result: MethodResult,
    tolerance: float,
    min_group_size: int,
    steps: int,
    dual_lr: float,
    buffer_size: int = 0,
) -> dict[str, Any] | None:
    """``{"groups": {g: {"n", "eag"}}, "steps", "advice"}`` when ``result`` is infeasible on
    train, else ``None`` (see the module docstring for the rule)."""
    train = result.split("train")
    if train.max_eag is None or train.max_eag <= tolerance:
        return None
    violating = {
        name: {"n": g.n, "eag": g.eag}
        for name, g in train.groups.items()
        if g.eag is not None and g.eag > tolerance
    }
    sizes = [v["n"] or 0 for v in violating.values()]
    large = [n for n in sizes if n >= min_group_size]
    if sizes and max(sizes) < min_group_size:
        advice = (
            f"every violating group has fewer than evaluation.min_group_size = {min_group_size} rows, where "
            f"one sample moves its EAG by 1/{min(sizes)}: raise ceag.tolerance, or merge small groups"
        )
    elif large and max(large) < buffer_size:
        advice = (
            f"the violating groups of at least {min_group_size} rows have fewer training rows than "
            f"ceag.buffer_size = {buffer_size}, so the constraint never reaches them: set ceag.buffer_size "
            f"to at most {min(large)}"
        )
    elif steps < REFERENCE_STEPS / 2:
        advice = (
            f"the CEAG stage took {steps} steps, under half the {REFERENCE_STEPS} of the Adult default "
            "(at which CEAG reaches ε): raise finetune.epochs or lower finetune.batch_size"
        )
    else:
        advice = (
            f"raise ceag.dual.lr (now {dual_lr:g}): in {steps} steps the multipliers did not grow enough "
            "to hold these groups within ε"
        )
    return {"groups": violating, "steps": steps, "advice": advice}


def ceag_infeasibility(result: MethodResult, cfg: ExperimentConfig, steps: int) -> dict[str, Any] | None:
    """:func:`infeasibility` of the ``ceag`` method of ``cfg``, after its stage took ``steps``."""
    c = cfg.ceag
    return infeasibility(result, c.tolerance, cfg.evaluation.min_group_size, steps, c.dual.lr, c.buffer_size)
