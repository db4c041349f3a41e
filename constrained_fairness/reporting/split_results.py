"""The leaves of the typed results (:mod:`.results`): one method on one split, its groups,
intervals, aggregates over groups, verdicts and declared-constraint reports.

Each class writes its ``metrics.json`` entry with ``to_json`` (keys in the order the protocol
writes them) and reads one with ``from_json``, where an absent key or a value that is not a
finite number reads as ``None`` and an unknown key is ignored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..metrics import finite_or_none

Number = float | int | None
JSON = dict[str, Any]

BASE_GROUP_STATISTICS = ("accuracy", "dense_accuracy", "eag")
"""The per-group statistics every method entry has (the others come from the bootstrap)."""


def number(value: Any) -> Number:
    """``value`` if it is a finite ``int`` or ``float`` (kept as written, so that a file reads and
    writes back unchanged); another finite number (a numeric string, a one-element tensor) as a
    ``float``, as :func:`~constrained_fairness.metrics.finite_or_none` reads it; else ``None``
    (NaN, ±inf, booleans, non-numbers)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value if math.isfinite(value) else None
    return finite_or_none(value)


def integer(value: Any) -> int | None:
    """A count or an epoch: an ``int``, or a float with an integral value (``5.0``); else ``None``."""
    x = number(value)
    return int(x) if x is not None and float(x).is_integer() else None


def mapping(value: Any) -> Mapping:
    return value if isinstance(value, Mapping) else {}


def to_json_all(nodes: Mapping[str, Any]) -> JSON:
    """``{name: node.to_json()}`` of a table of result nodes, in order."""
    return {name: node.to_json() for name, node in nodes.items()}


def from_json_all(node_type: Any, value: Any) -> dict[str, Any]:
    """``{name: node_type.from_json(entry)}`` of a JSON table (``{}`` when it is not one)."""
    return {str(name): node_type.from_json(entry) for name, entry in mapping(value).items()}


def from_json_optional(node_type: Any, value: Any) -> dict[str, Any] | None:
    """:func:`from_json_all`, or ``None`` when the table is absent (kept absent on writing)."""
    return from_json_all(node_type, value) if isinstance(value, Mapping) else None


@dataclass
class Interval:
    """A confidence interval ``[low, high]`` (either end ``None`` when it does not exist)."""

    low: Number = None
    high: Number = None

    def to_json(self) -> list[Number]:
        return [self.low, self.high]

    @classmethod
    def from_json(cls, value: Any) -> Interval | None:
        if not isinstance(value, Sequence) or isinstance(value, (str, bytes)) or len(value) != 2:
            return None
        return cls(number(value[0]), number(value[1]))

    @property
    def complete(self) -> bool:
        return self.low is not None and self.high is not None


@dataclass
class GroupResult:
    """One group on one split: its size, accuracy, the dense model's accuracy, the EAG
    ``ψ[g] = (acc_d[g] − acc_s[g]) − (acc_d − acc_s)``, and the bootstrap statistics.

    ``intervals`` holds each bootstrapped statistic's interval in evaluation order;
    ``statistics`` the values of those beyond :data:`BASE_GROUP_STATISTICS` (``loss``,
    ``positive_rate``, ``tpr``, ``fpr``).
    """

    n: int | None = None
    accuracy: Number = None
    dense_accuracy: Number = None
    eag: Number = None
    statistics: dict[str, Number] = field(default_factory=dict)
    intervals: dict[str, Interval] = field(default_factory=dict)

    def value(self, statistic: str) -> Number:
        """A statistic by name: a base field or one of :attr:`statistics`."""
        if statistic in BASE_GROUP_STATISTICS:
            return getattr(self, statistic)
        return self.statistics.get(statistic)

    def interval(self, statistic: str) -> Interval | None:
        return self.intervals.get(statistic)

    def to_json(self) -> JSON:
        out: JSON = {"n": self.n, **{s: getattr(self, s) for s in BASE_GROUP_STATISTICS}}
        for name, interval in self.intervals.items():
            if name not in BASE_GROUP_STATISTICS:
                out[name] = self.statistics.get(name)
            out[f"{name}_ci"] = interval.to_json()
        return out

    @classmethod
    def from_json(cls, entry: Any) -> GroupResult:
        entry = mapping(entry)
        n = entry.get("n")
        out = cls(
            n=integer(n),
            **{s: number(entry.get(s)) for s in BASE_GROUP_STATISTICS},
        )
        for key, value in entry.items():
            if key.endswith("_ci"):
                interval = Interval.from_json(value)
                if interval is not None:
                    out.intervals[key[: -len("_ci")]] = interval
            elif key != "n" and key not in BASE_GROUP_STATISTICS:
                out.statistics[key] = number(value)
        return out


@dataclass
class Aggregate:
    """A statistic over the present groups: ``group_min``, ``group_max``, ``difference`` =
    max − min and ``ratio`` = min / max."""

    group_min: Number = None
    group_max: Number = None
    difference: Number = None
    ratio: Number = None

    def to_json(self) -> JSON:
        return {k: getattr(self, k) for k in ("group_min", "group_max", "difference", "ratio")}

    @classmethod
    def from_json(cls, entry: Any) -> Aggregate:
        e = mapping(entry)
        return cls(*(number(e.get(k)) for k in ("group_min", "group_max", "difference", "ratio")))


@dataclass
class VerdictStatistic:
    """A constraint's per-group statistic with its interval and the group's size."""

    value: Number = None
    ci: Interval = field(default_factory=Interval)
    n: int | None = None

    def to_json(self) -> JSON:
        return {"value": self.value, "ci": self.ci.to_json(), "n": self.n}

    @classmethod
    def from_json(cls, entry: Any) -> VerdictStatistic:
        e = mapping(entry)
        n = e.get("n")
        return cls(
            number(e.get("value")),
            Interval.from_json(e.get("ci")) or Interval(),
            integer(n),
        )


@dataclass
class Verdict:
    """The groups of one split by verdict (satisfied, violated, uncertain, too small) for
    ``s[g] ≤ tolerance``; see :mod:`.group_evaluation`."""

    tolerance: Number = None
    counts: dict[str, int] = field(default_factory=dict)
    groups: dict[str, list[str]] = field(default_factory=dict)
    min_group_size: int | None = None
    statistic: dict[str, VerdictStatistic] | None = None  # of a declared constraint

    def to_json(self) -> JSON:
        out: JSON = {
            "tolerance": self.tolerance,
            "counts": dict(self.counts),
            "groups": {k: list(v) for k, v in self.groups.items()},
            "min_group_size": self.min_group_size,
        }
        if self.statistic is not None:
            out["statistic"] = to_json_all(self.statistic)
        return out

    @classmethod
    def from_json(cls, entry: Any) -> Verdict:
        e = mapping(entry)
        return cls(
            tolerance=number(e.get("tolerance")),
            counts={str(k): c for k, v in mapping(e.get("counts")).items() if (c := integer(v)) is not None},
            groups={
                str(k): [str(g) for g in v]
                for k, v in mapping(e.get("groups")).items()
                if isinstance(v, list)
            },
            min_group_size=integer(e.get("min_group_size")),
            statistic=from_json_optional(VerdictStatistic, e.get("statistic")),
        )


@dataclass
class GroupMaximum:
    """Where a maximum over groups is: its ``value``, the ``group`` holding it (the first in
    group order on a tie) and that group's size ``n``; ``min_group_size`` when the maximum is
    over the groups of at least that many rows only."""

    value: Number = None
    group: str | None = None
    n: int | None = None
    min_group_size: int | None = None

    def to_json(self) -> JSON:
        out: JSON = {"value": self.value, "group": self.group, "n": self.n}
        if self.min_group_size is not None:
            out["min_group_size"] = self.min_group_size
        return out

    @classmethod
    def from_json(cls, entry: Any) -> GroupMaximum | None:
        if not isinstance(entry, Mapping):
            return None
        group = entry.get("group")
        return cls(
            number(entry.get("value")),
            None if group is None else str(group),
            integer(entry.get("n")),
            integer(entry.get("min_group_size")),
        )

    @classmethod
    def over(cls, groups: Mapping[str, GroupResult], min_group_size: int | None = None) -> GroupMaximum:
        """The maximum EAG over ``groups`` (those with an EAG, and with ``n ≥ min_group_size``)."""
        best: tuple[float, str, int | None] | None = None
        for name, g in groups.items():
            if g.eag is None or (min_group_size is not None and (g.n or 0) < min_group_size):
                continue
            if best is None or g.eag > best[0]:
                best = (g.eag, name, g.n)
        if best is None:
            return cls(min_group_size=min_group_size)
        return cls(best[0], best[1], best[2], min_group_size)


@dataclass
class SplitResult:
    """One method on one split: accuracy, loss, ``max_g ψ[g]`` with its interval, the sweeps'
    selection score, per-group results, aggregates over groups and verdicts by constraint."""

    accuracy: Number = None
    loss: Number = None
    max_eag: Number = None
    score: Number = None
    groups: dict[str, GroupResult] = field(default_factory=dict)
    max_eag_ci: Interval | None = None
    aggregates: dict[str, Aggregate] | None = None
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    nonfinite: list[str] = field(default_factory=list)  # summary statistics that were NaN or ±inf
    max_eag_at: GroupMaximum | None = None  # the group holding max_eag, and its size
    max_eag_min_size: GroupMaximum | None = None  # over the groups of >= min_group_size rows

    def group(self, name: str) -> GroupResult:
        """The group's result (an empty one when the split does not list it)."""
        return self.groups.get(name) or GroupResult()

    def to_json(self) -> JSON:
        out: JSON = {"accuracy": self.accuracy, "loss": self.loss, "max_eag": self.max_eag}
        if self.score is not None:
            out["score"] = self.score
        out["groups"] = to_json_all(self.groups)
        if self.max_eag_ci is not None:
            out["max_eag_ci"] = self.max_eag_ci.to_json()
        if self.aggregates is not None:  # the bootstrap writes both
            out["aggregates"] = to_json_all(self.aggregates)
        if self.aggregates is not None or self.verdicts:
            out["verdicts"] = to_json_all(self.verdicts)
        if self.max_eag_at is not None:
            out["max_eag_at"] = self.max_eag_at.to_json()
        if self.max_eag_min_size is not None:
            out["max_eag_min_size"] = self.max_eag_min_size.to_json()
        if self.nonfinite:  # written null above; this says why
            out["nonfinite"] = list(self.nonfinite)
        return out

    @classmethod
    def from_json(cls, entry: Any) -> SplitResult:
        e = mapping(entry)
        return cls(
            accuracy=number(e.get("accuracy")),
            loss=number(e.get("loss")),
            max_eag=number(e.get("max_eag")),
            score=number(e.get("score")),
            groups=from_json_all(GroupResult, e.get("groups")),
            max_eag_ci=Interval.from_json(e.get("max_eag_ci")),
            aggregates=from_json_optional(Aggregate, e.get("aggregates")),
            verdicts=from_json_all(Verdict, e.get("verdicts")),
            nonfinite=[str(k) for k in e.get("nonfinite") or [] if isinstance(k, str)],
            max_eag_at=GroupMaximum.from_json(e.get("max_eag_at")),
            max_eag_min_size=GroupMaximum.from_json(e.get("max_eag_min_size")),
        )


@dataclass
class ConstraintReport:
    """A declared constraint on one whole split: each row's strict violation (net of the
    tolerance; ``None`` for an absent group) and their maximum."""

    max_violation: Number = None
    violations: dict[str, Number] = field(default_factory=dict)

    def to_json(self) -> JSON:
        return {"max_violation": self.max_violation, "violations": dict(self.violations)}

    @classmethod
    def from_json(cls, entry: Any) -> ConstraintReport:
        e = mapping(entry)
        violations = {str(r): number(v) for r, v in mapping(e.get("violations")).items()}
        return cls(number(e.get("max_violation")), violations)
