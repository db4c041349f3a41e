"""The typed results of a run: run → method → split → group, as ``metrics.json`` holds them.

The run and method levels are here; a split and its groups are :mod:`.split_results`. The
protocol builds one :class:`RunResults` and writes ``metrics.json`` from
:meth:`RunResults.to_json`; every report (``report.md``, ``report.html``, ``cfair compare``,
the seed tables, the CLI summary) reads a file back through :meth:`RunResults.from_json` and
then reads attributes, never string keys. A change of the schema is a change of these classes,
so it breaks the round-trip test (``to_json(from_json(file)) == file``, key order included),
not a plot.

Reading is tolerant of files written by older versions: an absent key reads as missing
(``None``, an empty table), a statistic that is not a finite number reads as ``None``, and a
key this version does not know is ignored. A malformed ``splits`` entry (not a list of split
names) is a :class:`TypeError`.

Numbers keep the type they were written with (an ``int`` stays an ``int``), so a file this
version (or the dict-based writer before it) wrote reads and writes back byte-identical; an
older or hand-made file may not (absent keys are written, unknown ones dropped).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..data.splits import SPLITS
from .split_results import (
    BASE_GROUP_STATISTICS,
    JSON,
    Aggregate,
    ConstraintReport,
    GroupMaximum,
    GroupResult,
    Interval,
    Number,
    SplitResult,
    Verdict,
    VerdictStatistic,
    from_json_all,
    from_json_optional,
    integer,
    mapping,
    number,
    to_json_all,
)

__all__ = [
    "BASE_GROUP_STATISTICS",
    "Aggregate",
    "ConstraintReport",
    "DenseSplit",
    "GroupMaximum",
    "GroupResult",
    "Interval",
    "MethodResult",
    "ResultsLike",
    "RunResults",
    "SplitResult",
    "Verdict",
    "VerdictStatistic",
    "number",
    "read_groups",
    "read_splits",
]


def _omit_none(pairs: Sequence[tuple[str, Any]]) -> JSON:
    return {k: v for k, v in pairs if v is not None}


@dataclass
class MethodResult:
    """One method of a run: its results per split, the epoch they come from, the declared
    constraints on each split, and what the kind of method adds.

    ``skipped_batches`` and ``multipliers`` (final values by constraint) belong to a trained
    method; ``selected_on`` to one picked by an evaluation (NFT+ES: ``val``, or ``test`` in a
    run without a validation split); ``thresholds`` and ``thresholds_rule`` to the
    post-processing baseline (a ``null`` threshold: the group's scores never reach the rate, so
    it gets no positive prediction). A method whose training failed has only its one-line
    ``error`` (``metrics.json``: ``{"error": "..."}``); the run's other methods are complete.
    """

    splits: dict[str, SplitResult] = field(default_factory=dict)
    epoch: int | None = None
    constraints: dict[str, dict[str, ConstraintReport]] | None = None
    skipped_batches: int | None = None
    multipliers: dict[str, list[float]] | None = None
    selected_on: str | None = None
    thresholds: dict[str, float] | None = None
    thresholds_rule: str | None = None
    error: str | None = None
    infeasible: dict[str, Any] | None = None  # CEAG over ε on train: the groups and one advice

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
        if self.error is not None:
            return {"error": self.error}
        out: JSON = to_json_all(self.splits)
        out["epoch"] = self.epoch
        if self.constraints is not None:
            out["constraints"] = {c: to_json_all(by_split) for c, by_split in self.constraints.items()}
        return out | _omit_none(
            [
                ("skipped_batches", self.skipped_batches),
                ("multipliers", self.multipliers),
                ("selected_on", self.selected_on),
                ("thresholds", self.thresholds),
                ("thresholds_rule", self.thresholds_rule),
                ("infeasible", self.infeasible),
            ]
        )

    @classmethod
    def from_json(cls, entry: Any, splits: Sequence[str]) -> MethodResult:
        e = mapping(entry)
        constraints = e.get("constraints")
        epoch, skipped = e.get("epoch"), e.get("skipped_batches")
        return cls(
            splits={s: SplitResult.from_json(e[s]) for s in splits if isinstance(e.get(s), Mapping)},
            epoch=integer(epoch),
            constraints=None
            if not isinstance(constraints, Mapping)
            else {str(c): from_json_all(ConstraintReport, by_split) for c, by_split in constraints.items()},
            skipped_batches=integer(skipped),
            multipliers=e.get("multipliers") if isinstance(e.get("multipliers"), Mapping) else None,
            selected_on=e.get("selected_on") if isinstance(e.get("selected_on"), str) else None,
            thresholds=e.get("thresholds") if isinstance(e.get("thresholds"), Mapping) else None,
            thresholds_rule=e.get("thresholds_rule") if isinstance(e.get("thresholds_rule"), str) else None,
            error=str(e["error"]) if e.get("error") is not None else None,
            infeasible=dict(e["infeasible"]) if isinstance(e.get("infeasible"), Mapping) else None,
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
            out["groups"] = to_json_all(self.groups)
        return out

    @classmethod
    def from_json(cls, entry: Any) -> DenseSplit:
        e = mapping(entry)
        return cls(
            number(e.get("accuracy")), number(e.get("loss")), from_json_optional(GroupResult, e.get("groups"))
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
    dense: dict[str, DenseSplit] | None = None
    methods: dict[str, MethodResult] = field(default_factory=dict)
    world_size: int | None = None
    groups_below_buffer: dict[str, Any] | None = None  # {constraint: {buffer_size, groups: {g: n}}}
    pending: list[str] | None = None  # a run still going: the methods not finished yet
    wall_seconds: float | None = None
    explicit_splits: bool = True  # False when read from a file without "splits"

    def method(self, name: str) -> MethodResult:
        return self.methods.get(name) or MethodResult()

    def dense_split(self, name: str) -> DenseSplit:
        return (self.dense or {}).get(name) or DenseSplit()

    def items(self) -> Iterator[tuple[str, MethodResult]]:
        return iter(self.methods.items())

    @property
    def finished(self) -> bool:
        """Whether the run wrote its last ``metrics.json`` (no method is ``pending``)."""
        return not self.pending

    @property
    def failed(self) -> dict[str, str]:
        """The methods whose training failed, with their one-line errors."""
        return {name: m.error for name, m in self.methods.items() if m.error is not None}

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
            **({} if self.groups_below_buffer is None else {"groups_below_buffer": self.groups_below_buffer}),
            "dense": to_json_all(self.dense or {}),
            "methods": to_json_all(self.methods),
        }
        if self.world_size is not None:
            out["world_size"] = self.world_size
        if self.pending is not None:
            out["pending"] = list(self.pending)
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
            achieved_sparsity=dict(mapping(metrics.get("achieved_sparsity"))),
            groups=read_groups(metrics.get("groups")),
            dense=from_json_optional(DenseSplit, metrics.get("dense")),
            methods={str(m): MethodResult.from_json(e, splits) for m, e in methods.items()},
            world_size=integer(world),
            pending=[str(m) for m in metrics["pending"]]
            if isinstance(metrics.get("pending"), list)
            else None,
            groups_below_buffer=dict(metrics["groups_below_buffer"])
            if isinstance(metrics.get("groups_below_buffer"), Mapping)
            else None,
            wall_seconds=None if wall is None else float(wall),
            explicit_splits="splits" in metrics,
        )


ResultsLike = RunResults | Mapping
"""What a report reads: the typed results of a run, or the content of its ``metrics.json``."""


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


def read_groups(groups: Any) -> list[str]:
    """The run's group names (``metrics["groups"]``; none when absent)."""
    if groups is None:
        return []
    if isinstance(groups, (str, bytes)) or not isinstance(groups, Sequence):
        raise TypeError(f"metrics['groups'] must be a list of group names, got {groups!r}")
    return [str(g) for g in groups]
