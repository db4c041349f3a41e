r"""Per-group evaluation with bootstrap confidence intervals, aggregates and verdicts.

For predictions ``ŷ_i``, targets ``y_i``, per-sample losses ``ℓ_i`` and groups ``g_i``, per
group ``g`` (a vocabulary close to fairlearn's ``MetricFrame``):

* ``n``; ``accuracy`` = mean 1[ŷ = y]; ``loss`` = mean ℓ; ``positive_rate`` = mean 1[ŷ = c];
  ``tpr`` = mean 1[ŷ = c] over y = c; ``fpr`` = mean 1[ŷ = c] over y ≠ c (c the positive class;
  the rates exist for binary targets only);
* with a dense reference ``ŷ^d``: ``eag[g] = (acc^d[g] − acc[g]) − (acc^d − acc)``, the
  excess accuracy gap of CEAG (paired: both models are resampled with the same rows).

Every statistic gets a percentile bootstrap interval (:mod:`constrained_fairness.bootstrap`),
and so does ``max_g eag[g]``. Aggregates over the groups present: ``group_min``,
``group_max``, ``difference`` = max − min and ``ratio`` = min / max.

**Verdicts.** For a tolerance ε and a per-group statistic ``s[g]`` that the constraint
bounds by ε (``eag[g]``, or a constraint's ``max_row violation + ε``), each group with at
least ``min_group_size`` rows is *satisfied* if its upper bound is ≤ ε, *violated* if its
lower bound is > ε, and *uncertain* otherwise; smaller groups are listed as *too small*.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..constraints.base import BatchOutputs
from ..constraints.statistic import GroupStatisticConstraint
from ..errors import DataError
from ..metrics import excess_gap, finite_or_none
from .bootstrap import (
    check_resamples,
    group_design,
    percentile_interval,
    resample_weights,
    weighted_group_means,
)

VERDICTS = ("satisfied", "violated", "uncertain", "too_small")


@dataclass
class BootstrapSettings:
    """Resamples, confidence level, seed, and the smallest group that gets a verdict."""

    resamples: int = 1000
    confidence: float = 0.95
    seed: int = 0
    min_group_size: int = 30

    def __post_init__(self) -> None:
        check_resamples(self.resamples, self.confidence)


@dataclass
class Estimate:
    """Point estimates ``(G,)`` (or a scalar) with their interval bounds."""

    value: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor


@dataclass
class GroupEvaluation:
    """Per-group statistics with intervals; see the module docstring."""

    group_names: list[str]
    counts: torch.Tensor
    statistics: dict[str, Estimate]
    max_eag: Estimate | None
    settings: BootstrapSettings
    verdicts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def records(self) -> list[dict[str, Any]]:
        """A tidy table: one record per group with each statistic and its interval."""
        out = []
        for g, name in enumerate(self.group_names):
            record: dict[str, Any] = {"group": name, "n": int(self.counts[g])}
            for stat, est in self.statistics.items():
                record[stat] = finite_or_none(est.value[g])
                record[f"{stat}_ci_low"] = finite_or_none(est.low[g])
                record[f"{stat}_ci_high"] = finite_or_none(est.high[g])
            out.append(record)
        return out

    def aggregates(self) -> dict[str, dict[str, float | None]]:
        """``group_min``, ``group_max``, ``difference`` and ``ratio`` of each statistic."""
        out = {}
        for stat, est in self.statistics.items():
            present = est.value[~torch.isnan(est.value)]
            if present.numel() == 0:
                out[stat] = dict.fromkeys(("group_min", "group_max", "difference", "ratio"))
                continue
            low, high = float(present.min()), float(present.max())
            out[stat] = {
                "group_min": low,
                "group_max": high,
                "difference": high - low,
                "ratio": low / high if high != 0 else None,
            }
        return out

    def to_pandas(self) -> Any:
        """The records as a pandas DataFrame (pandas is optional)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("to_pandas needs pandas: pip install pandas (or use records())") from None
        return pd.DataFrame(self.records())


def classify(
    value: torch.Tensor,
    low: torch.Tensor,
    high: torch.Tensor,
    counts: torch.Tensor,
    tolerance: float,
    names: Sequence[str],
    min_group_size: int,
) -> dict[str, Any]:
    """The verdict of each group for ``s[g] ≤ tolerance`` (see the module docstring)."""
    groups: dict[str, list[str]] = {v: [] for v in VERDICTS}
    for g, name in enumerate(names):  # a loop over the reported groups, after the tensor work
        if counts[g] == 0 or math.isnan(float(value[g])):
            continue
        if counts[g] < min_group_size or math.isnan(float(low[g])):
            groups["too_small"].append(name)
        elif float(high[g]) <= tolerance:
            groups["satisfied"].append(name)
        elif float(low[g]) > tolerance:
            groups["violated"].append(name)
        else:
            groups["uncertain"].append(name)
    return {
        "tolerance": tolerance,
        "counts": {v: len(groups[v]) for v in VERDICTS},
        "groups": groups,
        "min_group_size": min_group_size,
    }


def evaluate_groups(
    predictions: torch.Tensor,
    targets: torch.Tensor,
    groups: torch.Tensor,
    *,
    num_groups: int | None = None,
    group_names: Sequence[str] | None = None,
    losses: torch.Tensor | None = None,
    dense_predictions: torch.Tensor | None = None,
    positive_class: int = 1,
    num_classes: int | None = None,
    eag_tolerance: float | None = None,
    rows: torch.Tensor | None = None,
    settings: BootstrapSettings | None = None,
) -> GroupEvaluation:
    """Per-group statistics of predicted labels ``predictions`` (``(n,)``) against ``targets``.

    ``groups`` are ``(n,)`` ids, or with ``rows`` the memberships ``rows[m] ∈ groups[m]``
    (marginal groups: a row in several groups). ``losses`` adds the per-group loss,
    ``dense_predictions`` the EAG (and its verdicts at ``eag_tolerance``). The rates
    (``positive_rate``, ``tpr``, ``fpr`` of ``positive_class``) are binary statistics: with
    ``num_classes > 2`` they are left out (a multi-class run has no single positive class; a
    declared rate constraint with its ``positive_class`` measures one class vs the rest)."""
    settings = settings or BootstrapSettings()
    predictions, targets = predictions.reshape(-1).long(), targets.reshape(-1).long()
    n = predictions.numel()
    if n == 0 or targets.numel() != n:
        raise DataError(f"predictions ({n} rows) and targets ({targets.numel()}) must be non-empty and match")
    rows = torch.arange(n) if rows is None else rows.long()
    groups = groups.reshape(-1).long()
    if groups.numel() != rows.numel():
        raise DataError("groups must have one entry per row (or per membership, with rows)")
    num_groups = int(num_groups if num_groups is not None else int(groups.max()) + 1)
    names = list(group_names) if group_names is not None else [str(g) for g in range(num_groups)]
    correct = (predictions == targets).double()
    positive = (predictions == positive_class).double()
    is_pos = targets == positive_class
    per_row: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {"accuracy": (correct, None)}
    if num_classes is None or num_classes <= 2:  # rates of "the" positive class: binary targets only
        per_row |= {"positive_rate": (positive, None), "tpr": (positive, is_pos), "fpr": (positive, ~is_pos)}
    if losses is not None:
        per_row["loss"] = (losses.reshape(-1).double(), None)
    dense_correct = None
    if dense_predictions is not None:
        dense_correct = (dense_predictions.reshape(-1).long() == targets).double()
        per_row["dense_accuracy"] = (dense_correct, None)

    stats = list(per_row)
    ones = torch.ones(rows.numel())
    numerators = torch.cat(
        [
            group_design(v[rows], rows, groups, n, num_groups, None if m is None else m[rows])
            for v, m in per_row.values()
        ],
        dim=1,
    )
    denominators = torch.cat(
        [
            group_design(ones, rows, groups, n, num_groups, None if m is None else m[rows])
            for _, m in per_row.values()
        ],
        dim=1,
    )
    overall_design = torch.stack(
        [correct, dense_correct if dense_correct is not None else correct], dim=1
    ).float()

    def means(weights: torch.Tensor) -> dict[str, torch.Tensor]:
        """All statistics under ``weights`` (``(R, n)``): ``(R, G)`` each, plus the EAG."""
        table = weighted_group_means(weights, numerators, denominators).reshape(len(weights), len(stats), -1)
        out = {stat: table[:, k] for k, stat in enumerate(stats)}
        if dense_correct is not None:
            overall = (weights @ overall_design).double() / weights.sum(dim=1, keepdim=True).double()
            out["eag"] = excess_gap(out["dense_accuracy"], out["accuracy"], overall[:, 1:], overall[:, :1])
        return out

    point = {k: v[0] for k, v in means(torch.ones(1, n)).items()}
    samples: dict[str, list[torch.Tensor]] = {k: [] for k in point}
    for weights in resample_weights(n, settings.resamples, settings.seed):
        for k, v in means(weights).items():
            samples[k].append(v)
    statistics = {}
    for k, v in point.items():
        low, high = percentile_interval(torch.cat(samples[k]), settings.confidence)
        statistics[k] = Estimate(v, low, high)
    counts = torch.bincount(groups, minlength=num_groups)
    result = GroupEvaluation(names, counts, statistics, None, settings)
    if "eag" in statistics:
        # over every group present, like the reported max EAG, from a simultaneous band
        result.max_eag = max_interval(statistics["eag"].value, torch.cat(samples["eag"]), settings.confidence)
        if eag_tolerance is not None:
            est = statistics["eag"]
            result.verdicts["eag"] = classify(
                est.value, est.low, est.high, counts, eag_tolerance, names, settings.min_group_size
            )
    return result


def max_interval(value: torch.Tensor, draws: torch.Tensor, confidence: float) -> Estimate:
    r"""``max_g ψ[g]`` with an interval from a simultaneous (max-t) bootstrap band over groups.

    With ``se[g]`` the bootstrap standard deviation of ``ψ*[g]`` (``draws``: ``(R, G)``, NaN
    where a resample has no member of the group) and ``c`` the ``confidence`` quantile over
    resamples of ``max_g |ψ*[g] − ψ[g]| / se[g]``, every group's band is ``ψ[g] ± c·se[g]``,
    and the interval of the maximum is

        [max_g (ψ[g] − c·se[g]),  max_g (ψ[g] + c·se[g])]   over the groups present.

    When the band covers every ``ψ[g]`` (probability ≈ ``confidence``), it covers their
    maximum, so the coverage is at least nominal up to the bootstrap's own error, and the
    interval always contains the estimate ``max_g ψ[g]``. (The percentile interval of the
    resampled maximum did neither: the maximum of noisy estimates is biased upwards, and with
    tied groups its interval missed the true maximum almost always; see the coverage test.)
    """
    present = ~torch.isnan(value)
    if not bool(present.any()):
        nan = torch.tensor(math.nan, dtype=torch.float64)
        return Estimate(nan, nan, nan)
    value, draws = value[present].double(), draws[:, present].double()
    seen = ~torch.isnan(draws)
    count = seen.sum(dim=0).clamp(min=2)
    mean = torch.where(seen, draws, 0.0).sum(dim=0) / count
    se = (torch.where(seen, draws - mean, 0.0).square().sum(dim=0) / (count - 1)).sqrt()
    spread = torch.where(seen & (se > 0), (draws - value).abs() / se.clamp(min=1e-300), 0.0)
    c = torch.quantile(spread.amax(dim=1), confidence)
    return Estimate(value.max(), (value - c * se).max(), (value + c * se).max())


@torch.no_grad()
def evaluate_model(
    model: torch.nn.Module,
    loader: Any,
    *,
    dense_model: torch.nn.Module | None = None,
    **kwargs: Any,
) -> GroupEvaluation:
    """:func:`evaluate_groups` of a classifier on every batch ``(inputs, targets, groups)`` of
    ``loader`` (``groups``: ``(B,)`` ids); per-sample cross-entropy gives the loss, and
    ``dense_model`` the EAG. Other keyword arguments go to :func:`evaluate_groups`."""
    models = [model] if dense_model is None else [model, dense_model]
    modes = [m.training for m in models]
    device = next(model.parameters()).device
    predictions, dense, targets, groups, losses = [], [], [], [], []
    width = 0
    try:
        for m in models:
            m.eval()
        for batch in loader:
            if not isinstance(batch, (list, tuple)) or len(batch) != 3:
                raise DataError("evaluate_model needs a loader of (inputs, targets, groups) batches")
            inputs, y, g = batch
            logits = model(inputs.to(device)).float().cpu()
            width = logits.shape[1]
            predictions.append(logits.argmax(dim=1))
            losses.append(torch.nn.functional.cross_entropy(logits, y.long(), reduction="none"))
            if dense_model is not None:
                dense.append(dense_model(inputs.to(device)).argmax(dim=1).cpu())
            targets.append(y.long())
            groups.append(g.long().reshape(-1))
    finally:
        for m, mode in zip(models, modes, strict=True):
            m.train(mode)
    if not predictions:
        raise DataError("the loader yields no batch; pass a loader with at least one row")
    return evaluate_groups(
        torch.cat(predictions),
        torch.cat(targets),
        torch.cat(groups),
        losses=torch.cat(losses),
        dense_predictions=torch.cat(dense) if dense else None,
        **{"num_classes": width, **kwargs},
    )


def constraint_verdicts(
    constraint: GroupStatisticConstraint, outputs: BatchOutputs, settings: BootstrapSettings
) -> dict[str, Any]:
    """Verdicts of a per-group statistic constraint on a whole split.

    The group statistic is ``max over the group's rows of (violation + ε)`` (for the default
    form, ``|s[g] − s̄|``), resampled by rows of ``outputs``."""
    stat = constraint.sample_statistic(outputs)
    rows, groups = constraint.memberships(outputs, stat)
    values = stat.strict.detach().double()  # the memberships already exclude masked-out rows
    num_groups, partition, tol = constraint.num_groups, constraint.partition.cpu(), constraint.tolerance
    n = outputs.targets.numel()

    value_design = group_design(values[rows], rows, groups, n, num_groups)
    count_design = group_design(torch.ones(rows.numel()), rows, groups, n, num_groups)

    def group_statistic(weights: torch.Tensor) -> torch.Tensor:
        w = weights
        sums, counts = (w @ value_design).double(), (w @ count_design).double()
        part_sums = torch.zeros(w.shape[0], constraint.num_partitions, dtype=torch.float64)
        part_sums.index_add_(1, partition, sums)
        part_counts = torch.zeros_like(part_sums).index_add_(1, partition, counts)
        overall = (part_sums / part_counts)[:, partition]
        means = sums / counts
        out = torch.full_like(means, math.nan)
        for r in range(w.shape[0]):  # the constraint's own violation formula, per resample
            ids = torch.nonzero(counts[r] > 0).flatten()
            if ids.numel():
                v = constraint.strict_violations(means[r, ids], overall[r, ids], ids)
                out[r, ids] = v.double().amax(dim=0) + tol
        return out

    point = group_statistic(torch.ones(1, n))[0]
    draws = torch.cat(list(map(group_statistic, resample_weights(n, settings.resamples, settings.seed))))
    low, high = percentile_interval(draws, settings.confidence)
    counts = torch.bincount(groups, minlength=num_groups)
    names = constraint.group_names()
    verdict = classify(point, low, high, counts, tol, names, settings.min_group_size)
    verdict["statistic"] = {
        name: {
            "value": finite_or_none(point[g]),
            "ci": [finite_or_none(low[g]), finite_or_none(high[g])],
            "n": int(counts[g]),
        }
        for g, name in enumerate(names)
        if counts[g] > 0
    }
    return verdict
