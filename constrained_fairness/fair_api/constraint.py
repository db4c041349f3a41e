"""The fairness constraint of a :class:`~.model.FairModel`, and the training step of
:class:`~.trainer.FairTrainer` that enforces it.

* :func:`record_groups`: the values of each protected attribute, from the training data;
* :func:`fairness_constraint`: the model's ``fairness_metric`` as a
  :class:`~constrained_fairness.constraints.statistic.GroupStatisticConstraint` on marginal
  groups (``mean_pred`` alone measures projection enforcement);
* :func:`training_step`: the protocol's :class:`~constrained_fairness.training.step.TrainingStep`
  on a :class:`~constrained_fairness.problem.FairnessProblem` whose objective is the criterion,
  with the optimizers of :func:`~constrained_fairness.training.optimizers.build_cooper_optimizer`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cooper
import torch

from ..config import ConstraintConfig, DualConfig
from ..constraints.mean_score import MeanPredictionGap, MeanResidual
from ..constraints.registry import BuildContext, build_constraint
from ..constraints.statistic import GroupStatisticConstraint
from ..errors import DataError
from ..problem import FairnessProblem
from ..runtime.distributed import all_ranks
from ..runtime.precision import grad_scaler
from ..training.optimizers import build_cooper_optimizer
from ..training.step import TrainingStep
from .criterion import CriterionView
from .model import FairModel, feature_batches
from .parallel import distinct_rows


def record_groups(model: FairModel, loader: Any, device: torch.device) -> None:
    """``model.set_groups`` from the protected columns of every training row (a ``DataLoader``
    over a dataset is read whole, in order; under DDP the values of every rank count)."""
    columns = [x[:, model.protected_attr_idx].float() for x in feature_batches(loader, 4096)]
    if not all_ranks(bool(columns)):
        raise DataError("the training loader yields no batch; pass a loader with at least one batch")
    values = distinct_rows(torch.cat(columns), device)
    fractional = (values != values.round()).any(dim=0)
    if bool(fractional.any()):
        column = model.protected_attr_idx[int(fractional.nonzero()[0, 0])]
        raise DataError(
            f"protected column {column} of X is not discrete (non-integer values); "
            "encode the attribute as integer codes, or fix protected_attr_idx"
        )
    model.set_groups(values.long().to(device))


def fairness_constraint(model: FairModel, lagrangian: bool, device: torch.device) -> GroupStatisticConstraint:
    """The constraint of ``model.fairness_metric`` (with ``lagrangian=False``, projection
    enforcement: ``mean_pred``, measured only), one multiplier per row, on the model's groups."""
    grouping = model.grouping()
    if model.fairness_metric == "mean_pred" or not lagrangian:
        return MeanPredictionGap(grouping, model.fairness_tolerance, device=device)
    if model.fairness_metric == "mean_residual":
        return MeanResidual(grouping, model.fairness_tolerance, device=device)
    spec = ConstraintConfig(
        type=model.fairness_metric,
        mode="marginal",
        tolerance=model.fairness_tolerance,
        bound=model.fairness_tolerance,
        buffer_size=0,
    )
    context = BuildContext(num_classes=max(2, model.output_dim), device=device)
    return build_constraint(spec, grouping, context)


def training_step(
    model: FairModel,
    constraint: GroupStatisticConstraint,
    view: CriterionView,
    optimizer: torch.optim.Optimizer,
    dual: DualConfig,
    *,
    precision: str,
    autocast_dtype: torch.dtype | None,
    device: torch.device,
    nonfinite: str,
    where: Callable[[], str],
) -> tuple[cooper.optim.CooperOptimizer, TrainingStep]:
    """The Cooper optimizer and the step enforcing ``constraint`` (with Lagrangian enforcement,
    ``view.lagrangian()``; else the problem is unconstrained) on the criterion's ``view``."""
    constrained = [constraint] if view.lagrangian() else []  # projection: measured only
    problem = FairnessProblem(constrained, ["fairness"] * len(constrained), objective=view)
    problem.autocast_dtype = autocast_dtype
    duals = [dual] * len(constrained)
    optimizers = build_cooper_optimizer(problem, optimizer, duals, grad_scaler(precision, device))
    step = TrainingStep(
        model,
        problem,
        optimizers,
        nonfinite=nonfinite,
        where=where,
        hint="pass nonfinite='skip' to drop such batches",
        advice="lower the learning rate (or dual_lr), or check the inputs for NaN",
        kept="",
    )
    return optimizers, step
