"""What each method adds to plain fine-tuning, as the entries of
:data:`~constrained_fairness.registry.METHODS`: a function of a :class:`MethodContext` that
returns the :class:`MethodSetup` of one sparse run (its constraints, their names and dual
settings, and optional loss weights).

Built in: ``nft`` (nothing), ``reweighting`` (Kamiran–Calders loss weights), ``el`` and
``el_rb`` (equalized loss), ``ceag`` and ``constrained`` (the declared ``constraints:``).
Two more are read off the NFT run rather than trained: ``nft_es`` (its best epoch) and
``thresholds`` (its scores post-processed with group thresholds), so NFT is trained whenever
either is asked for. A method of one's own is registered with ``@METHODS.register("name")``
or named in ``methods:`` as ``package.module:function``; its results are reported under the
function's name. The built-in methods are trained first, in the order above, then the others
in the order of ``methods:``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..baselines import apply_thresholds, fit_thresholds, kamiran_calders_weights
from ..config import DualConfig, ExperimentConfig
from ..constraints import (
    AbsoluteEqualizedLoss,
    DenseReference,
    EqualizedLoss,
    ExcessAccuracyGap,
    GroupConstraint,
)
from ..constraints.base import BatchOutputs
from ..errors import ConfigError
from ..groups import Grouping
from ..metrics import finite_or_none
from ..registry import METHODS, is_import_path
from ..reporting.results import MethodResult
from ..training.evaluation import Evaluator, SplitEvaluation
from .results import MethodResultBuilder, nft_es_name

TRAINED = ("nft", "reweighting", "el", "el_rb", "ceag", "constrained")
DERIVED = ("nft_es", "thresholds")  # read off the NFT run


@dataclass
class MethodContext:
    """What a method may build its constraints from.

    Attributes:
        cfg: the run's config.
        reference: the dense model's per-group training accuracy and loss (:class:`DenseReference`).
        grouping: the intersectional groups of ``data.protected``.
        dense_train: the dense model's outputs on the training split.
        num_classes: number of target classes.
        device: where the constraints' tensors live.
        declared: builds fresh instances of the ``constraints:`` entries with their names and duals.
    """

    cfg: ExperimentConfig
    reference: DenseReference
    grouping: Grouping
    dense_train: BatchOutputs
    num_classes: int
    device: torch.device
    declared: Callable[[], tuple[list[GroupConstraint], list[str], list[DualConfig]]]


@dataclass
class MethodSetup:
    """One sparse run's additions to NFT: constraints (one Cooper multiplier row per group
    and constraint row), their names, one dual config per constraint, and optional per-sample
    loss weights ``w(targets, attributes)``."""

    constraints: list[GroupConstraint] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    duals: list[DualConfig] = field(default_factory=list)
    sample_weights: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None


def method_name(entry: str) -> str:
    """The name a ``methods:`` entry is reported and checkpointed under."""
    return entry.rpartition(":")[2] if is_import_path(entry) else entry


def check_methods(methods: list[str]) -> None:
    """Every entry is built in, registered, or an import path, and no two share a name."""
    for entry in methods:
        if entry not in DERIVED:
            METHODS.check(entry)
    names = [method_name(m) for m in methods]
    repeated = next((n for n in names if names.count(n) > 1), None)
    if repeated is not None:
        raise ConfigError(f"methods names {repeated!r} twice; list each method once")


def trained_methods(methods: list[str]) -> list[str]:
    """The sparse runs that ``methods`` need, in training order."""
    needs_nft = bool(set(DERIVED) & set(methods))
    builtin = [m for m in TRAINED if m in methods or (m == "nft" and needs_nft)]
    return builtin + [m for m in methods if m not in TRAINED and m not in DERIVED]


@METHODS.register("nft")
def _nft(context: MethodContext) -> MethodSetup:
    return MethodSetup()


@METHODS.register("ceag")
def _ceag(context: MethodContext) -> MethodSetup:
    c = context.cfg.ceag
    ceag = ExcessAccuracyGap(
        context.reference, c.tolerance, c.buffer_size, c.overall_estimate, context.grouping
    )
    return MethodSetup([ceag], ["ceag"], [c.dual])


def _equalized_loss(context: MethodContext, name: str, buffer_size: int) -> MethodSetup:
    c = context.cfg.el
    weights = context.reference.overall_weights(c.overall_estimate)
    if c.form == "reference":
        el: GroupConstraint = AbsoluteEqualizedLoss(context.grouping, buffer_size, weights, context.device)
    else:
        el = EqualizedLoss(context.grouping, c.tolerance, buffer_size, weights, context.device)
    return MethodSetup([el], [name], [c.dual])


@METHODS.register("el")
def _el(context: MethodContext) -> MethodSetup:
    return _equalized_loss(context, "el", 0)


@METHODS.register("el_rb")
def _el_rb(context: MethodContext) -> MethodSetup:
    return _equalized_loss(context, "el_rb", context.cfg.el.buffer_size)


@METHODS.register("constrained")
def _constrained(context: MethodContext) -> MethodSetup:
    return MethodSetup(*context.declared())


@METHODS.register("reweighting")
def _reweighting(context: MethodContext) -> MethodSetup:
    weights = reweighting_weights(context.grouping, context.dense_train, context.num_classes, context.device)
    return MethodSetup(sample_weights=weights)


for _derived in DERIVED:  # known names, so that configs and error messages list them
    METHODS.register(_derived)(lambda context: MethodSetup())


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
    builder: MethodResultBuilder,
) -> MethodResult:
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
    out = builder.entry(evaluator.evaluate_outputs(post), epoch)
    # a group whose scores never reach the rate has an infinite threshold: null in JSON
    out.thresholds = {
        name: finite_or_none(t) for name, t in zip(grouping.names, thresholds.tolist(), strict=True)
    }
    out.thresholds_rule = rule
    return out


def failed_entries(entry: str, error: str, listed: list[str], select_on: str) -> dict[str, MethodResult]:
    """The results of a method whose training failed with the one-line ``error``: the method
    itself if listed, and what is derived from NFT (NFT+ES, thresholds) when it was NFT."""
    out = {}
    if entry in listed:
        out[method_name(entry)] = MethodResult(error=error)
    if method_name(entry) == "nft":
        derived = f"derived from nft, which failed: {error}"
        if "nft_es" in listed:
            out[nft_es_name(select_on)] = MethodResult(error=derived)
        if "thresholds" in listed:
            out["thresholds"] = MethodResult(error=derived)
    return out


def in_order(methods: dict[str, MethodResult], listed: list[str]) -> dict[str, MethodResult]:
    """The methods' results in the order of ``methods:`` (``listed``, with NFT+ES's reported name)."""
    return {m: methods[m] for m in listed if m in methods}
