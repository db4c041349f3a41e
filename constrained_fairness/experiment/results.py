"""The results of one method (:class:`~constrained_fairness.reporting.results.MethodResult`): per
split and per group, with bootstrap intervals, the EAG verdicts, and the declared constraints
evaluated on each whole split. Each group's result is built once, from the split's statistics
and its bootstrap."""

from __future__ import annotations

from typing import Any

from ..config import EvaluationConfig
from ..constraints.base import BatchOutputs
from ..constraints.statistic import GroupStatisticConstraint
from ..groups import Grouping
from ..metrics import finite_or_none
from ..reporting.group_evaluation import BootstrapSettings, constraint_verdicts, evaluate_groups
from ..reporting.results import (
    BASE_GROUP_STATISTICS,
    Aggregate,
    ConstraintReport,
    GroupMaximum,
    GroupResult,
    Interval,
    MethodResult,
    SplitResult,
    Verdict,
    VerdictStatistic,
)
from ..sparsity import MagnitudePruner
from ..training.evaluation import Evaluator, SplitEvaluation


class MethodResultBuilder:
    """Builds each method's entry from an evaluation of its model on every split.

    ``report_constraints`` are the declared ``constraints:`` (on the CPU), each evaluated
    strictly on the whole split, with a verdict; ``tolerance`` is the EAG's ε.
    """

    def __init__(
        self,
        grouping: Grouping,
        split_names: tuple[str, ...],
        evaluator: Evaluator,
        evaluation: EvaluationConfig,
        tolerance: float,
        report_constraints: list[tuple[str, GroupStatisticConstraint]],
    ) -> None:
        self.grouping, self.split_names, self.evaluator = grouping, split_names, evaluator
        self.tolerance, self.report_constraints = tolerance, report_constraints
        e = evaluation
        self.settings = BootstrapSettings(e.bootstrap_resamples, e.confidence, e.seed, e.min_group_size)

    def entry(self, evaluation: dict[str, SplitEvaluation], epoch: int) -> MethodResult:
        """Final results of one model's ``evaluation`` (from the evaluator, or post-processed)."""
        out = MethodResult({s: self._split(evaluation[s], s) for s in self.split_names}, epoch)
        if self.report_constraints:
            out.constraints = {}
            for name, c in self.report_constraints:
                out.constraints[name] = {
                    s: constraint_report(c, evaluation[s].outputs) for s in self.split_names
                }
                for s in self.split_names:
                    verdict = constraint_verdicts(c, evaluation[s].outputs, self.settings)
                    out.splits[s].verdicts[name] = verdict_of(verdict)
        return out

    def _split(self, evaluation: SplitEvaluation, split: str) -> SplitResult:
        """One split: the summary, then each group (statistics with bootstrap intervals), the
        max-EAG interval, the aggregates over groups and the EAG verdicts."""
        outputs, stats, eag = evaluation.outputs, evaluation.stats, evaluation.eag
        rows, groups = self.grouping.memberships(outputs.attributes)
        dense = self.evaluator.dense_outputs[split] if self.evaluator.dense_outputs else None
        result = evaluate_groups(
            outputs.logits.argmax(dim=1),
            outputs.targets,
            groups,
            rows=rows,
            num_groups=self.grouping.num_groups,
            group_names=self.grouping.names,
            losses=outputs.losses,
            dense_predictions=None if dense is None else dense.logits.argmax(dim=1),
            num_classes=outputs.logits.shape[1],
            eag_tolerance=self.tolerance,
            settings=self.settings,
        )
        summary = evaluation.summary()  # a value that is NaN or ±inf is written null, and named
        out = SplitResult(*(finite_or_none(summary.get(k)) for k in ("accuracy", "loss", "max_eag", "score")))
        out.nonfinite = [k for k, v in summary.items() if v is not None and finite_or_none(v) is None]
        for g, (name, record) in enumerate(zip(self.grouping.names, result.records(), strict=True)):
            n = int(stats.counts[g])
            group = GroupResult(
                n,
                finite_or_none(stats.accuracy[g]) if n else None,
                finite_or_none(evaluation.dense.accuracy[g]) if n and evaluation.dense is not None else None,
                finite_or_none(eag[g]) if n and eag is not None else None,
            )
            if record["n"]:
                for stat in result.statistics:
                    if stat not in BASE_GROUP_STATISTICS:
                        group.statistics[stat] = record[stat]
                    group.intervals[stat] = Interval(record[f"{stat}_ci_low"], record[f"{stat}_ci_high"])
            out.groups[name] = group
        if result.max_eag is not None:
            out.max_eag_ci = Interval(finite_or_none(result.max_eag.low), finite_or_none(result.max_eag.high))
        if eag is not None:  # where the maxima are: all groups, and those big enough for a verdict
            out.max_eag_at = GroupMaximum.over(out.groups)
            out.max_eag_min_size = GroupMaximum.over(out.groups, self.settings.min_group_size)
        out.aggregates = {stat: Aggregate(**a) for stat, a in result.aggregates().items()}
        out.verdicts = {name: verdict_of(v) for name, v in result.verdicts.items()}
        return out


def verdict_of(verdict: dict[str, Any]) -> Verdict:
    """The :class:`Verdict` of :func:`~constrained_fairness.reporting.group_evaluation.classify`
    (with a constraint's ``statistic`` from ``constraint_verdicts``), values as computed."""
    statistic = verdict.get("statistic")
    return Verdict(
        verdict["tolerance"],
        verdict["counts"],
        verdict["groups"],
        verdict["min_group_size"],
        None
        if statistic is None
        else {g: VerdictStatistic(s["value"], Interval(*s["ci"]), s["n"]) for g, s in statistic.items()},
    )


def nft_es_name(select_on: str) -> str:
    """``nft_es`` when selected on validation; ``nft_es_test`` when on test (the reference's leak)."""
    return "nft_es" if select_on == "val" else f"nft_es_{select_on}"


def constraint_report(constraint: GroupStatisticConstraint, outputs: BatchOutputs) -> ConstraintReport:
    """Strict violations of every row of a constraint on a whole split (``None``: group absent)."""
    values = [finite_or_none(v) for v in constraint.evaluate(outputs).flatten().tolist()]
    finite = [v for v in values if v is not None]
    return ConstraintReport(
        max(finite) if finite else None, dict(zip(constraint.row_names(), values, strict=True))
    )


def achieved_sparsity(pruner: MagnitudePruner | None) -> dict[str, Any]:
    """The pruned fraction overall and per layer, as the run ended."""
    if pruner is None:
        return {}
    return {"overall": pruner.overall_sparsity(), "layers": pruner.layer_sparsity()}
