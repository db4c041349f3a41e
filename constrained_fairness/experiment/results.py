"""The ``metrics.json`` entry of one method: per split and per group, with bootstrap intervals,
the EAG verdicts, and the declared constraints evaluated on each whole split."""

from __future__ import annotations

from typing import Any

from ..config import EvaluationConfig
from ..constraints.base import BatchOutputs
from ..constraints.statistic import GroupStatisticConstraint
from ..groups import Grouping
from ..metrics import finite_or_none
from ..reporting.group_evaluation import BootstrapSettings, constraint_verdicts, evaluate_groups
from ..sparsity import MagnitudePruner
from ..training.evaluation import Evaluator, SplitEvaluation


class MethodResults:
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

    def entry(self, evaluation: dict[str, SplitEvaluation], epoch: int) -> dict[str, Any]:
        """Final metrics of one model's ``evaluation`` (from the evaluator, or post-processed)."""
        splits, names = self.split_names, self.grouping.names
        out: dict[str, Any] = {s: evaluation[s].to_metrics(names) for s in splits}
        out["epoch"] = epoch
        for s in splits:
            self._add_intervals(out[s], evaluation[s].outputs, s)
        if self.report_constraints:
            out["constraints"] = {
                name: {s: constraint_report(c, evaluation[s].outputs) for s in splits}
                for name, c in self.report_constraints
            }
            for name, c in self.report_constraints:
                for s in splits:
                    out[s]["verdicts"][name] = constraint_verdicts(c, evaluation[s].outputs, self.settings)
        return out

    def _add_intervals(self, entry: dict[str, Any], outputs: BatchOutputs, split: str) -> None:
        """Per-group statistics with bootstrap intervals, the max-EAG interval and the EAG
        verdicts of one split, into its ``metrics.json`` entry."""
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
            eag_tolerance=self.tolerance,
            settings=self.settings,
        )
        for record in result.records():
            if record["n"] == 0:
                continue
            group = entry["groups"][record["group"]]
            for stat in result.statistics:  # accuracy, dense accuracy and EAG are in the entry already
                group.setdefault(stat, record[stat])
                group[f"{stat}_ci"] = [record[f"{stat}_ci_low"], record[f"{stat}_ci_high"]]
        if result.max_eag is not None:
            entry["max_eag_ci"] = [finite_or_none(result.max_eag.low), finite_or_none(result.max_eag.high)]
        entry["aggregates"] = result.aggregates()
        entry["verdicts"] = dict(result.verdicts)


def nft_es_name(select_on: str) -> str:
    """``nft_es`` when selected on validation; ``nft_es_test`` when on test (the reference's leak)."""
    return "nft_es" if select_on == "val" else f"nft_es_{select_on}"


def constraint_report(constraint: GroupStatisticConstraint, outputs: BatchOutputs) -> dict[str, Any]:
    """Strict violations of every row of a constraint on a whole split (``null``: group absent)."""
    values = [finite_or_none(v) for v in constraint.evaluate(outputs).flatten().tolist()]
    finite = [v for v in values if v is not None]
    return {
        "max_violation": max(finite) if finite else None,
        "violations": dict(zip(constraint.row_names(), values, strict=True)),
    }


def achieved_sparsity(pruner: MagnitudePruner | None) -> dict[str, Any]:
    """The pruned fraction overall and per layer, as the run ended."""
    if pruner is None:
        return {}
    return {"overall": pruner.overall_sparsity(), "layers": pruner.layer_sparsity()}
