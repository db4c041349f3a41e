"""The typed results of a run: run → method → split → group, as ``metrics.json`` holds them.

The protocol builds one :class:`RunResults` and writes ``metrics.json`` from
:meth:`RunResults.to_json`; every report (``report.md``, ``report.html``, ``cfair compare``,
the seed tables, the CLI summary) reads a file back through :meth:`RunResults.from_json` and
then reads attributes, never string keys. A change of the schema is a change of these classes,
so it breaks the round-trip test (``to_json(from_json(file)) == file``, key order included),
not a plot.

Reading is tolerant of files written by older versions: an absent key reads as missing
(``None``, an empty table), a statistic that is not a finite number reads as ``None``, and a
key this version does not know is ignored. A malformed ``splits`` entry (not a list of split
names) is a :class:`TypeError`.

Numbers keep the type they were written with (an ``int`` stays an ``int``), so a file read and
written again is byte-identical.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..data.splits import SPLITS

Number = float | int | None
JSON = dict[str, Any]

BASE_GROUP_STATISTICS = ("accuracy", "dense_accuracy", "eag")
"""The per-group statistics every method entry has (the others come from the bootstrap)."""


def number(value: Any) -> Number:
    """``value`` if it is a finite ``int`` or ``float`` (booleans excluded), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def _mapping(value: Any) -> Mapping:
    return value if isinstance(value, Mapping) else {}


def _omit_none(pairs: Sequence[tuple[str, Any]]) -> JSON:
    return {k: v for k, v in pairs if v is not None}


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
        entry = _mapping(entry)
        n = entry.get("n")
        out = cls(
            n=n if isinstance(n, int) and not isinstance(n, bool) else None,
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
        e = _mapping(entry)
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
        e = _mapping(entry)
        n = e.get("n")
        return cls(
            number(e.get("value")),
            Interval.from_json(e.get("ci")) or Interval(),
            n if isinstance(n, int) else None,
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
            out["statistic"] = {g: s.to_json() for g, s in self.statistic.items()}
        return out

    @classmethod
    def from_json(cls, entry: Any) -> Verdict:
        e = _mapping(entry)
        statistic = e.get("statistic")
        return cls(
            tolerance=number(e.get("tolerance")),
            counts={str(k): v for k, v in _mapping(e.get("counts")).items() if isinstance(v, int)},
            groups={
                str(k): [str(g) for g in v]
                for k, v in _mapping(e.get("groups")).items()
                if isinstance(v, list)
            },
            min_group_size=e.get("min_group_size") if isinstance(e.get("min_group_size"), int) else None,
            statistic=None
            if not isinstance(statistic, Mapping)
            else {str(g): VerdictStatistic.from_json(s) for g, s in statistic.items()},
        )


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

    def group(self, name: str) -> GroupResult:
        """The group's result (an empty one when the split does not list it)."""
        return self.groups.get(name) or GroupResult()

    def to_json(self) -> JSON:
        out: JSON = {"accuracy": self.accuracy, "loss": self.loss, "max_eag": self.max_eag}
        if self.score is not None:
            out["score"] = self.score
        out["groups"] = {g: r.to_json() for g, r in self.groups.items()}
        if self.max_eag_ci is not None:
            out["max_eag_ci"] = self.max_eag_ci.to_json()
        if self.aggregates is not None:  # the bootstrap writes both
            out["aggregates"] = {s: a.to_json() for s, a in self.aggregates.items()}
        if self.aggregates is not None or self.verdicts:
            out["verdicts"] = {c: v.to_json() for c, v in self.verdicts.items()}
        return out

    @classmethod
    def from_json(cls, entry: Any) -> SplitResult:
        e = _mapping(entry)
        aggregates = e.get("aggregates")
        return cls(
            accuracy=number(e.get("accuracy")),
            loss=number(e.get("loss")),
            max_eag=number(e.get("max_eag")),
            score=number(e.get("score")),
            groups={str(g): GroupResult.from_json(r) for g, r in _mapping(e.get("groups")).items()},
            max_eag_ci=Interval.from_json(e.get("max_eag_ci")),
            aggregates=None
            if not isinstance(aggregates, Mapping)
            else {str(s): Aggregate.from_json(a) for s, a in aggregates.items()},
            verdicts={str(c): Verdict.from_json(v) for c, v in _mapping(e.get("verdicts")).items()},
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
        e = _mapping(entry)
        violations = {str(r): number(v) for r, v in _mapping(e.get("violations")).items()}
        return cls(number(e.get("max_violation")), violations)


@dataclass
class MethodResult:
    """One method of a run: its results per split, the epoch they come from, the declared
    constraints on each split, and what the kind of method adds.

    ``skipped_batches`` and ``multipliers`` (final values by constraint) belong to a trained
    method; ``selected_on`` to one picked by an evaluation (NFT+ES: ``val``, or ``test`` in a
    run without a validation split); ``thresholds`` and ``thresholds_rule`` to the
    post-processing baseline.
    """

    splits: dict[str, SplitResult] = field(default_factory=dict)
    epoch: int | None = None
    constraints: dict[str, dict[str, ConstraintReport]] | None = None
    skipped_batches: int | None = None
    multipliers: dict[str, list[float]] | None = None
    selected_on: str | None = None
    thresholds: dict[str, float] | None = None
    thresholds_rule: str | None = None

    def split(self, name: str) -> SplitResult:
        """The results on a split (empty when the method was not evaluated there)."""
        return self.splits.get(name) or SplitResult()

    def constraint(self, name: str, split: str) -> ConstraintReport | None:
        return (self.constraints or {}).get(name, {}).get(split)

    @property
    def selected_on_test(self) -> bool:
        """Selected on the test split: its test numbers are optimistic."""
        return self.selected_on == "test"

    def to_json(self) -> JSON:
        out: JSON = {s: r.to_json() for s, r in self.splits.items()}
        out["epoch"] = self.epoch
        if self.constraints is not None:
            out["constraints"] = {
                c: {s: r.to_json() for s, r in by_split.items()} for c, by_split in self.constraints.items()
            }
        return out | _omit_none(
            [
                ("skipped_batches", self.skipped_batches),
                ("multipliers", self.multipliers),
                ("selected_on", self.selected_on),
                ("thresholds", self.thresholds),
                ("thresholds_rule", self.thresholds_rule),
            ]
        )

    @classmethod
    def from_json(cls, entry: Any, splits: Sequence[str]) -> MethodResult:
        e = _mapping(entry)
        constraints = e.get("constraints")
        epoch, skipped = e.get("epoch"), e.get("skipped_batches")
        return cls(
            splits={s: SplitResult.from_json(e[s]) for s in splits if isinstance(e.get(s), Mapping)},
            epoch=epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None,
            constraints=None
            if not isinstance(constraints, Mapping)
            else {
                str(c): {str(s): ConstraintReport.from_json(r) for s, r in _mapping(by_split).items()}
                for c, by_split in constraints.items()
            },
            skipped_batches=skipped if isinstance(skipped, int) else None,
            multipliers=e.get("multipliers") if isinstance(e.get("multipliers"), Mapping) else None,
            selected_on=e.get("selected_on") if isinstance(e.get("selected_on"), str) else None,
            thresholds=e.get("thresholds") if isinstance(e.get("thresholds"), Mapping) else None,
            thresholds_rule=e.get("thresholds_rule") if isinstance(e.get("thresholds_rule"), str) else None,
        )


@dataclass
class DenseSplit:
    """The dense model on one split: its accuracy and loss (and per-group results, which the
    protocol stores with each method as ``dense_accuracy``; a hand-made file may hold them here)."""

    accuracy: Number = None
    loss: Number = None
    groups: dict[str, GroupResult] | None = None

    def group(self, name: str) -> GroupResult:
        return (self.groups or {}).get(name) or GroupResult()

    def to_json(self) -> JSON:
        out: JSON = {"accuracy": self.accuracy, "loss": self.loss}
        if self.groups is not None:
            out["groups"] = {g: r.to_json() for g, r in self.groups.items()}
        return out

    @classmethod
    def from_json(cls, entry: Any) -> DenseSplit:
        e = _mapping(entry)
        groups = e.get("groups")
        return cls(
            number(e.get("accuracy")),
            number(e.get("loss")),
            None
            if not isinstance(groups, Mapping)
            else {str(g): GroupResult.from_json(r) for g, r in groups.items()},
        )


@dataclass
class RunResults:
    """A whole run: the evaluated splits, the dense model, each method, and the run's settings
    (ε, the target and achieved sparsity, the groups, the dense checkpoint, the world size).

    ``wall_seconds`` is this invocation's wall time: it goes to ``timing.json`` and the reports,
    never to ``metrics.json`` (a resumed run's file equals an uninterrupted one's).
    """

    splits: tuple[str, ...] = SPLITS
    dense_checkpoint: dict[str, Any] | None = None
    tolerance: Number = None
    sparsity: Number = None
    achieved_sparsity: dict[str, Any] = field(default_factory=dict)
    groups: list[str] = field(default_factory=list)
    dense: dict[str, DenseSplit] = field(default_factory=dict)
    methods: dict[str, MethodResult] = field(default_factory=dict)
    world_size: int | None = None
    wall_seconds: float | None = None
    explicit_splits: bool = True  # False when read from a file without "splits"

    def method(self, name: str) -> MethodResult:
        return self.methods.get(name) or MethodResult()

    def dense_split(self, name: str) -> DenseSplit:
        return self.dense.get(name) or DenseSplit()

    def items(self) -> Iterator[tuple[str, MethodResult]]:
        return iter(self.methods.items())

    @property
    def methods_selected_on_test(self) -> list[str]:
        """The methods selected on the test split, in order."""
        return [name for name, m in self.methods.items() if m.selected_on_test]

    def to_json(self) -> JSON:
        """The content of ``metrics.json`` (without :attr:`wall_seconds`)."""
        out: JSON = {"splits": list(self.splits)} if self.explicit_splits else {}
        if self.dense_checkpoint is not None:
            out["dense_checkpoint"] = dict(self.dense_checkpoint)
        out |= {
            "tolerance": self.tolerance,
            "sparsity": self.sparsity,
            "achieved_sparsity": self.achieved_sparsity,
            "groups": list(self.groups),
            "dense": {s: d.to_json() for s, d in self.dense.items()},
            "methods": {m: r.to_json() for m, r in self.methods.items()},
        }
        if self.world_size is not None:
            out["world_size"] = self.world_size
        return out

    @classmethod
    def from_json(cls, metrics: Any) -> RunResults:
        """Read a ``metrics.json`` dict (or pass a :class:`RunResults` through)."""
        if isinstance(metrics, RunResults):
            return metrics
        if not isinstance(metrics, Mapping):
            raise TypeError(f"metrics must be a mapping (the content of metrics.json), got {type(metrics)}")
        splits = read_splits(metrics.get("splits"))
        methods = metrics.get("methods") or {}
        if not isinstance(methods, Mapping):
            raise TypeError(f"metrics['methods'] must map method names to results, got {type(methods)}")
        world, wall = metrics.get("world_size"), number(metrics.get("wall_seconds"))
        return cls(
            splits=splits,
            dense_checkpoint=dict(metrics["dense_checkpoint"])
            if isinstance(metrics.get("dense_checkpoint"), Mapping)
            else None,
            tolerance=number(metrics.get("tolerance")),
            sparsity=number(metrics.get("sparsity")),
            achieved_sparsity=dict(_mapping(metrics.get("achieved_sparsity"))),
            groups=[str(g) for g in metrics.get("groups") or []],
            dense={s: DenseSplit.from_json(d) for s, d in _mapping(metrics.get("dense")).items()},
            methods={str(m): MethodResult.from_json(e, splits) for m, e in methods.items()},
            world_size=world if isinstance(world, int) and not isinstance(world, bool) else None,
            wall_seconds=None if wall is None else float(wall),
            explicit_splits="splits" in metrics,
        )


def read_splits(splits: Any) -> tuple[str, ...]:
    """The evaluated splits, in order: ``metrics["splits"]`` (e.g. ``("train", "test")`` for a
    run without a validation split), or ``("train", "val", "test")`` when absent (files
    written before the key existed)."""
    if splits is None:
        return SPLITS
    if isinstance(splits, (str, bytes)) or not isinstance(splits, Sequence):
        raise TypeError(f"metrics['splits'] must be a list of split names, got {splits!r}")
    out: list[str] = []
    for split in splits:
        if not isinstance(split, str) or not split:
            raise TypeError(f"metrics['splits'] must be a list of split names, got {splits!r}")
        if split not in out:
            out.append(split)
    return tuple(out)
