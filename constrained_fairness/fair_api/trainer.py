r"""``FairTrainer``: fit a :class:`FairModel` with the ``fairness_training`` API, on Cooper.

Lagrangian enforcement solves

    min_θ max_{λ ≥ 0}  L(θ) + Σ_j λ_j c_j(θ),

with ``L`` the user's criterion on the batch and ``c_j`` the rows of the model's fairness
constraint estimated on the batch (:mod:`..constraints.mean_score`; one multiplier per row).
Cooper's ``AlternatingDualPrimalOptimizer`` takes the dual ascent step
``λ ← max(0, λ + η_λ c(θ))`` (``dual_lr`` = η_λ) and then the user's optimizer steps
``θ`` on the Lagrangian. Projection enforcement needs no multipliers: the model's
training forward pass projects the batch, and the user's optimizer steps the loss.

Every gap reported is *pooled*: computed once over all rows of the split (per-group
sums over every batch), not averaged over batches. Validation runs the model in
inference mode (per-batch projection from ``b_tau`` rows, offsets below), so the
validation gap is the gap of the predictions users will get.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import cooper
import torch
from torch import nn

from ..config import ConstraintConfig, DualConfig
from ..constraints.base import BatchOutputs
from ..constraints.mean_score import MeanPredictionGap, MeanResidual, attribute_gaps
from ..constraints.registry import BuildContext, build_constraint
from ..constraints.statistic import GroupStatisticConstraint
from ..errors import CheckpointError, ConfigError, DataError
from ..problem import FairnessProblem
from ..runtime.device import resolve_device
from ..runtime.precision import autocast_dtype, grad_scaler
from ..training.checkpoint import load_checkpoint, save_atomic
from ..training.optimizers import build_cooper_optimizer, build_dual_optimizer, quiet_sparse_checks
from ..training.step import NONFINITE_POLICIES, TrainingStep
from .criterion import CriterionView
from .early_stopping import EarlyStopping
from .model import FairModel, _feature_batches

CHECKPOINT_FORMAT = "constrained_fairness.FairTrainer/1"
HISTORY_KEYS = ("train_loss", "val_loss", "train_fairness_gap", "val_fairness_gap", "learning_rate")


class FairTrainer:
    """Train, validate, early-stop and checkpoint a :class:`FairModel`.

    Args:
        model: the ``FairModel``.
        criterion: the loss, e.g. ``nn.BCEWithLogitsLoss()``; a 1-D target is reshaped to a
            score model's ``(B, 1)`` output, and cast to class indices for several outputs.
        optimizer: the primal optimizer of ``model.parameters()``.
        scheduler: optional LR scheduler; ``ReduceLROnPlateau`` is stepped on the validation
            loss (the training loss without validation data), any other once per epoch.
        early_stopping_patience: epochs without improvement before stopping (None: never).
        early_stopping_delta: the smallest improvement that counts.
        device: ``auto`` (CUDA if available), ``cpu``, ``cuda``, ...
        dual_lr: step size of the multipliers' gradient ascent (Lagrangian enforcement).
        dual_optimizer: ``nupi`` (default; Cooper's damped PI controller) or ``sgd``.
        early_stopping_metric: ``best_feasible`` (default) or ``loss``; see :mod:`.early_stopping`.
        log_dir: if given, ``history.jsonl`` plus TensorBoard and/or wandb logs go there.
        wandb_mode: ``disabled`` (default), ``offline`` or ``online``.
        tensorboard: write TensorBoard event files to ``log_dir/tensorboard/fair_trainer``.
        nonfinite: ``stop`` (default: a one-line :class:`TrainingDiverged` before the bad
            step) or ``skip`` (drop a batch whose loss or constraint is not finite, count it
            in :attr:`skipped`), as the protocol's ``guards.nonfinite``.
        precision: ``fp32`` (default), ``bf16`` (autocast forward) or ``fp16`` (autocast
            with a gradient scaler), as the protocol's ``precision``.

    Every step is the protocol's :class:`~constrained_fairness.training.step.TrainingStep`
    on a :class:`~constrained_fairness.problem.FairnessProblem` whose objective is
    ``criterion``, with the optimizers of
    :func:`~constrained_fairness.training.optimizers.build_cooper_optimizer`.
    """

    def __init__(
        self,
        model: FairModel,
        criterion: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any = None,
        early_stopping_patience: int | None = 25,
        early_stopping_delta: float = 1e-5,
        device: str | torch.device = "auto",
        dual_lr: float = 1.0,
        *,
        dual_optimizer: str = "nupi",
        early_stopping_metric: str = "best_feasible",
        log_dir: str | Path | None = None,
        wandb_mode: str = "disabled",
        tensorboard: bool = False,
        nonfinite: str = "stop",
        precision: str = "fp32",
    ) -> None:
        if not isinstance(model, FairModel):
            raise ConfigError(
                f"FairTrainer needs a FairModel, got {type(model).__name__}; wrap it with "
                "FairModel.wrap(network, protected_attr_idx, input_dim)"
            )
        if not isinstance(dual_lr, (int, float)) or isinstance(dual_lr, bool) or not dual_lr > 0:
            raise ConfigError(f"dual_lr must be a number > 0, got {dual_lr!r}; e.g. dual_lr=1.0")
        self.device = resolve_device(device)
        self.model = model.to(self.device)
        self.criterion = criterion
        self.criterion_view = CriterionView(model, criterion, lambda: self.lagrangian)
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.dual_config = DualConfig(lr=float(dual_lr), optimizer=dual_optimizer)
        build_dual_optimizer([torch.zeros(1, requires_grad=True)], self.dual_config)  # checks the name
        self.early_stopping = EarlyStopping(
            early_stopping_patience, early_stopping_delta, early_stopping_metric, model.fairness_tolerance
        )
        self.history: dict[str, list] = self._empty_history()
        self.epoch = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.last_evaluation: dict[str, Any] = {}
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.wandb_mode, self.tensorboard = wandb_mode, tensorboard
        if nonfinite not in NONFINITE_POLICIES:
            raise ConfigError(f"nonfinite must be stop or skip, got {nonfinite!r}")
        self.nonfinite, self.precision = nonfinite, precision
        self.autocast_dtype = autocast_dtype(precision)  # checks the name
        self._constraint: GroupStatisticConstraint | None = None
        self._cooper: cooper.optim.CooperOptimizer | None = None
        self._step: TrainingStep | None = None
        self._skipped = 0

    # -- constraint and optimizers -------------------------------------------------------
    @staticmethod
    def _empty_history() -> dict[str, list]:
        return {key: [] for key in (*HISTORY_KEYS, "val_attribute_gaps", "multipliers")}

    @property
    def lagrangian(self) -> bool:
        return self.model.enforcement == "lagrangian"

    def _prepare(self, loader: Any) -> GroupStatisticConstraint:
        """Record the attribute values (from the whole training set) and build the constraint."""
        if not self.model.has_groups:
            columns = [x[:, self.model.protected_attr_idx].float() for x in _feature_batches(loader, 4096)]
            if not columns:
                raise DataError("the training loader yields no batch; pass a loader with at least one batch")
            values = torch.cat(columns)
            fractional = (values != values.round()).any(dim=0)
            if bool(fractional.any()):
                column = self.model.protected_attr_idx[int(fractional.nonzero()[0, 0])]
                raise DataError(
                    f"protected column {column} of X is not discrete (non-integer values); "
                    "encode the attribute as integer codes, or fix protected_attr_idx"
                )
            self.model.set_groups(values.long().to(self.device))
        if self._constraint is None:
            self._constraint = self._build_constraint()
            constrained = [self._constraint] if self.lagrangian else []  # projection: measured only
            problem = FairnessProblem(
                constrained, ["fairness"] * len(constrained), objective=self.criterion_view
            )
            problem.autocast_dtype = self.autocast_dtype
            duals = [self.dual_config] * len(constrained)
            scaler = grad_scaler(self.precision, self.device)
            self._cooper = build_cooper_optimizer(problem, self.optimizer, duals, scaler)
            self._step = TrainingStep(
                self.model,
                problem,
                self._cooper,
                nonfinite=self.nonfinite,
                where=lambda: f"epoch {self.epoch + 1}",
                hint="pass nonfinite='skip' to drop such batches",
                advice="lower the learning rate (or dual_lr), or check the inputs for NaN",
                kept="",
            )
            self._step.skipped = self._skipped
            if self.lagrangian:
                self._load_multipliers()
        return self._constraint

    @property
    def skipped(self) -> int:
        """Batches dropped by ``nonfinite='skip'``."""
        return self._step.skipped if self._step is not None else self._skipped

    def _dual_optimizer(self) -> torch.optim.Optimizer | None:
        return self._cooper.dual_optimizers[0] if self.lagrangian and self._cooper is not None else None

    def _build_constraint(self) -> GroupStatisticConstraint:
        model, grouping = self.model, self.model.grouping()
        if model.fairness_metric == "mean_pred" or not self.lagrangian:
            return MeanPredictionGap(grouping, model.fairness_tolerance, device=self.device)
        if model.fairness_metric == "mean_residual":
            return MeanResidual(grouping, model.fairness_tolerance, device=self.device)
        spec = ConstraintConfig(
            type=model.fairness_metric,
            mode="marginal",
            tolerance=model.fairness_tolerance,
            bound=model.fairness_tolerance,
            buffer_size=0,
        )
        context = BuildContext(num_classes=max(2, model.output_dim), device=self.device)
        return build_constraint(spec, grouping, context)

    def _load_multipliers(self) -> None:
        weight = self._constraint.multiplier.weight
        if self.model.multipliers.numel() == weight.numel():
            with torch.no_grad():
                weight.copy_(self.model.multipliers.view_as(weight))

    def _store_multipliers(self) -> None:
        if self._constraint is not None and self.lagrangian:
            self.model.multipliers = self._constraint.multiplier_values().to(self.model.multipliers.device)

    def multipliers(self) -> list[float]:
        """The current Lagrange multipliers, one per constraint row (empty for projection)."""
        self._store_multipliers()
        return [float(v) for v in self.model.multipliers.tolist()]

    def constraint_rows(self) -> list[str]:
        """Names of the constraint rows, in multiplier order."""
        return [] if self._constraint is None else self._constraint.row_names()

    # -- batches -----------------------------------------------------------------------------
    def _attributes(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.group_indices(self.model.protected_codes(x))

    def _gaps(self, outputs: BatchOutputs) -> tuple[float, list[float]]:
        gaps = attribute_gaps(self._constraint, outputs).tolist()
        finite = [g for g in gaps if not math.isnan(g)]
        return (max(finite) if finite else math.nan), gaps

    # -- epochs --------------------------------------------------------------------------------
    @quiet_sparse_checks
    def train_epoch(self, train_loader: Iterable, calibrate: bool = True) -> tuple[float, float]:
        """One pass over ``train_loader``; returns (mean loss, pooled fairness gap of the
        training outputs). With ``calibrate`` the inference offsets are then recomputed from
        the training predictions (:meth:`FairModel.calibrate`)."""
        self._prepare(train_loader)
        self.model.train()
        total, rows, seen = 0.0, 0, []
        for x, y in train_loader:
            x, y = x.to(self.device, torch.float32), y.to(self.device)
            attributes = self._attributes(x)
            rollout = self._step(model=self.model, inputs=x, targets=y, attributes=attributes)
            if rollout is None:  # a non-finite batch, skipped
                continue
            loss, batch = rollout.loss, rollout.cmp_state.misc["batch"]  # reuse the step's outputs
            batch = BatchOutputs(
                batch.logits.detach(), batch.targets, batch.attributes, batch.losses.detach()
            )
            total += float(loss.detach()) * len(x)
            rows += len(x)
            seen.append(batch)
        if rows == 0:
            raise DataError("the training loader yields no batch; pass a loader with at least one batch")
        self._store_multipliers()
        if calibrate:
            self.model.calibrate(train_loader)
        return total / rows, self._gaps(_concat(seen))[0]

    @torch.no_grad()
    def evaluate(self, loader: Iterable) -> dict[str, Any]:
        """Inference-mode metrics on every row of ``loader`` (labels are read only here,
        for the loss and the label-dependent metrics, never by the model)."""
        if self._constraint is None:
            raise ConfigError("the trainer has not seen training data yet; call fit or train_epoch first")
        self.model.eval()
        total, rows, seen, correct = 0.0, 0, [], 0.0
        for x, y in loader:
            x, y = x.to(self.device, torch.float32), y.to(self.device)
            outputs = self.model(x)
            total += float(self.criterion_view.loss(outputs, y)) * len(x)
            rows += len(x)
            seen.append(self.criterion_view.batch_outputs(outputs, y, self._attributes(x)))
            correct += float(self.criterion_view.correct(outputs, y))
        if rows == 0:
            raise DataError("the evaluation loader yields no batch; pass a loader with at least one row")
        gap, gaps = self._gaps(_concat(seen))
        names = [f"x[{i}]" for i in self.model.protected_attr_idx]
        result = {
            "n": rows,
            "loss": total / rows,
            "fairness_gap": gap,
            "attribute_gaps": dict(zip(names, gaps, strict=True)),
            "feasible": self.early_stopping.feasible(gap),
        }
        if not math.isnan(correct):
            result["accuracy"] = correct / rows
        self.last_evaluation = result
        return result

    def validate(self, val_loader: Iterable) -> tuple[float, float]:
        """Inference-mode (mean loss, pooled fairness gap) on every row of ``val_loader``."""
        result = self.evaluate(val_loader)
        return result["loss"], result["fairness_gap"]

    _train_epoch = train_epoch  # the names of the fairness_training guide
    _validate = validate

    # -- fit ----------------------------------------------------------------------------------
    def fit(
        self,
        train_loader: Iterable,
        val_loader: Iterable | None = None,
        epochs: int = 100,
        verbose: int = 1,
        log_interval: int = 10,
    ) -> dict[str, list]:
        """Train for up to ``epochs`` more epochs; returns the history (``HISTORY_KEYS`` plus
        ``val_attribute_gaps`` and ``multipliers``, one entry per epoch). The model ends with
        the best epoch's weights, offsets and multipliers (see ``early_stopping_metric``)."""
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ConfigError(f"epochs must be an int >= 1, got {epochs!r}")
        if isinstance(log_interval, bool) or not isinstance(log_interval, int) or log_interval < 1:
            raise ConfigError(f"log_interval must be an int >= 1, got {log_interval!r}")
        logger = self._logger()
        if logger is not None:  # events after this epoch from an earlier fit are hidden (resume)
            logger.begin_stage("fair_trainer", self.epoch)
        try:
            for _ in range(epochs):
                lr = float(self.optimizer.param_groups[0]["lr"])
                # inference offsets: project the validation (else training) predictions; no labels
                train_loss, train_gap = self.train_epoch(train_loader, calibrate=val_loader is None)
                if val_loader is not None:
                    self.model.calibrate(val_loader)
                val_loss, val_gap, val_gaps = math.nan, math.nan, []
                if val_loader is not None:
                    val_loss, val_gap = self.validate(val_loader)
                    val_gaps = list(self.last_evaluation["attribute_gaps"].values())
                self.epoch += 1
                self._step_scheduler(val_loss if val_loader is not None else train_loss)
                record = {
                    "train_loss": train_loss,
                    "val_loss": val_loss,
                    "train_fairness_gap": train_gap,
                    "val_fairness_gap": val_gap,
                    "learning_rate": lr,
                    "val_attribute_gaps": val_gaps,
                    "multipliers": self.multipliers(),
                }
                for key, value in record.items():
                    self.history[key].append(value)
                watched = (val_loss, val_gap) if val_loader is not None else (train_loss, train_gap)
                if self.early_stopping.update(self.epoch, *watched):
                    self.best_state = copy.deepcopy(self.model.state_dict())
                if logger is not None:
                    logger.log_record({"step": self.epoch, "stage": "fair_trainer", **record})
                if verbose and (self.epoch % log_interval == 0 or self.epoch == 1):
                    print(self._progress_line(record))
                if self.early_stopping.should_stop:
                    if verbose:
                        best = self.early_stopping.best_epoch
                        print(f"Early stopping after epoch {self.epoch}: best epoch {best}")
                    break
        finally:
            if logger is not None:
                logger.close()
        self.restore_best()
        return self.history

    def restore_best(self) -> None:
        """Load the best epoch's weights, offsets and multipliers into the model."""
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
            if self._constraint is not None and self.lagrangian:
                self._load_multipliers()

    def _step_scheduler(self, metric: float) -> None:
        if self.scheduler is None:
            return
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(metric)
        else:
            self.scheduler.step()

    def _progress_line(self, record: dict) -> str:
        parts = [f"Epoch {self.epoch}"]
        for key in HISTORY_KEYS:
            value = record[key]
            if not (isinstance(value, float) and math.isnan(value)):
                parts.append(f"{key} {value:.4g}")
        return " | ".join(parts)

    def _logger(self) -> Any:
        if self.log_dir is None:
            return None
        from ..training.loggers import RunLogger

        config = {
            "name": "fair_trainer",
            "fairness_metric": self.model.fairness_metric,
            "fairness_tolerance": self.model.fairness_tolerance,
            "enforcement": self.model.enforcement,
            "dual_lr": self.dual_config.lr,
        }
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return RunLogger(self.log_dir, config, wandb_mode=self.wandb_mode, tensorboard=self.tensorboard)

    # -- checkpoints ----------------------------------------------------------------------------
    def save_checkpoint(self, path: str | Path, include_history: bool = True) -> None:
        """Write model (with offsets and multipliers), optimizers, scheduler, early-stopping
        state, best weights and (optionally) history, atomically; loadable with weights_only."""
        self._store_multipliers()
        state = {
            "format": CHECKPOINT_FORMAT,
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "dual_optimizer": dual.state_dict() if (dual := self._dual_optimizer()) is not None else None,
            "skipped": self.skipped,
            "early_stopping": self.early_stopping.state_dict(),
            "best_state": self.best_state,
            "history": _plain(self.history) if include_history else None,
        }
        save_atomic(state, path)

    def load_checkpoint(self, path: str | Path) -> dict:
        """Restore everything :meth:`save_checkpoint` wrote; returns the raw checkpoint."""
        state = load_checkpoint(path)
        found = state.get("format") if isinstance(state, dict) else None
        if found != CHECKPOINT_FORMAT:
            raise CheckpointError(
                f"{path} is not a FairTrainer checkpoint (format {found!r}); "
                "use a file written by FairTrainer.save_checkpoint"
            )
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as exc:
            detail = str(exc).strip().splitlines()
            raise CheckpointError(
                f"checkpoint {path} does not match this model ({detail[-1].strip()}); "
                "build the same FairModel"
            ) from None
        self.model.to(self.device)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self._constraint, self._cooper, self._step = None, None, None
        self._skipped = int(state.get("skipped", 0))
        if self.model.has_groups:
            self._prepare(None)
            dual = self._dual_optimizer()
            if dual is not None and state["dual_optimizer"] is not None:
                dual.load_state_dict(state["dual_optimizer"])
        self.early_stopping.load_state_dict(state["early_stopping"])
        self.best_state = state["best_state"]
        self.epoch = int(state["epoch"])
        if state["history"] is not None:
            self.history = {key: list(values) for key, values in state["history"].items()}
        return state


def _concat(parts: list[BatchOutputs]) -> BatchOutputs:
    return BatchOutputs(
        *(torch.cat([getattr(p, f) for p in parts]) for f in ("logits", "targets", "attributes", "losses"))
    )


def _plain(value: Any) -> Any:
    """Python floats/ints/lists only (numpy or tensor scalars would break weights_only loading)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return value
