"""What each method adds to plain fine-tuning: its constraints and dual settings, the
Kamiran–Calders loss weights of ``reweighting``, and the group thresholds of ``thresholds``.

``TRAINED`` is the order in which the sparse methods are trained; ``nft_es`` and
``thresholds`` are read off the NFT run, so NFT is trained whenever either is asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..baselines import apply_thresholds, fit_thresholds, kamiran_calders_weights
from ..config import ExperimentConfig
from ..constraints import (
    AbsoluteEqualizedLoss,
    DenseReference,
    EqualizedLoss,
    ExcessAccuracyGap,
    GroupConstraint,
)
from ..constraints.base import BatchOutputs
from ..groups import Grouping
from ..training.evaluation import Evaluator, SplitEvaluation
from .results import MethodResults

TRAINED = ("nft", "reweighting", "el", "el_rb", "ceag", "constrained")
NEEDS_NFT = frozenset({"nft_es", "thresholds"})


def trained_methods(methods: list[str]) -> list[str]:
    """The sparse runs that ``methods`` need, in training order."""
    needs_nft = NEEDS_NFT & set(methods)
    return [m for m in TRAINED if m in methods or (m == "nft" and needs_nft)]


def builtin_constraints(
    method: str,
    cfg: ExperimentConfig,
    reference: DenseReference,
    grouping: Grouping,
    device: torch.device,
) -> tuple[list[GroupConstraint], list[str], list] | None:
    """The constraints, names and dual configs of ``ceag``, ``el`` and ``el_rb``; ``[]`` for the
    unconstrained methods; None for ``constrained`` (the declared ``constraints:``)."""
    if method == "ceag":
        c = cfg.ceag
        ceag = ExcessAccuracyGap(reference, c.tolerance, c.buffer_size, c.overall_estimate, grouping)
        return [ceag], ["ceag"], [c.dual]
    if method in ("el", "el_rb"):
        c = cfg.el
        buffer_size = c.buffer_size if method == "el_rb" else 0
        weights = reference.overall_weights(c.overall_estimate)
        if c.form == "reference":
            el: GroupConstraint = AbsoluteEqualizedLoss(grouping, buffer_size, weights, device)
        else:
            el = EqualizedLoss(grouping, c.tolerance, buffer_size, weights, device)
        return [el], [method], [c.dual]
    if method == "constrained":
        return None
    return [], [], []


def reweighting_weights(
    grouping: Grouping, train: BatchOutputs, num_classes: int, device: torch.device
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Kamiran–Calders loss weights ``w(g, y)`` from the training split, as a lookup."""
    groups = grouping.memberships(train.attributes)[1]  # intersectional: one per sample
    table = kamiran_calders_weights(groups, train.targets, grouping.num_groups, num_classes)
    table = table.to(device)

    def weights(targets: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
        return table[grouping.memberships(attributes)[1], targets]

    return weights


def thresholds_entry(
    evaluation: dict[str, SplitEvaluation],
    epoch: int,
    rule: str,
    grouping: Grouping,
    evaluator: Evaluator,
    results: MethodResults,
) -> dict[str, Any]:
    """The NFT model (its ``evaluation``) post-processed with group thresholds fit on its
    validation scores."""
    val = evaluation["val"].outputs
    groups = grouping.memberships(val.attributes)[1]
    thresholds = fit_thresholds(
        val.logits.softmax(dim=1)[:, 1], groups, grouping.num_groups, rule, val.targets
    )
    post = {}
    for split, e in evaluation.items():
        o = e.outputs
        predicted = apply_thresholds(
            o.logits.softmax(dim=1)[:, 1], grouping.memberships(o.attributes)[1], thresholds
        )
        # hard decisions as logits (the loss stays the base model's: thresholds change no score)
        logits = torch.nn.functional.one_hot(predicted, 2).float() * 20.0 - 10.0
        post[split] = BatchOutputs(logits, o.targets, o.attributes, o.losses)
    out = results.entry(evaluator.evaluate_outputs(post), epoch)
    out["thresholds"] = {name: float(t) for name, t in zip(grouping.names, thresholds.tolist(), strict=True)}
    out["thresholds_rule"] = rule
    return out
