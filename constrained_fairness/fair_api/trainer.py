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

Under DDP (``torch.distributed`` initialised with several ranks, e.g. by ``torchrun``) every
rank makes the same calls with its own shard of each split, e.g. a ``DataLoader`` with a
``DistributedSampler`` (the global batch is the sum of the ranks' batches). Gradients are
averaged over ranks, the constraint statistics, losses and gaps are pooled over ranks, and
rank 0 alone writes checkpoints and logs: see :mod:`.parallel`.
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

from ..config import DualConfig
from ..config.choices import NONFINITE_POLICIES
from ..constraints.base import BatchOutputs
from ..constraints.statistic import GroupStatisticConstraint
from ..errors import ConfigError, DataError
from ..runtime.device import resolve_device
from ..runtime.precision import autocast_dtype
from ..training.optimizers import build_dual_optimizer, quiet_sparse_checks
from ..training.step import TrainingStep
from .checkpointing import CHECKPOINT_FORMAT, load_trainer, save_trainer
from .constraint import fairness_constraint, record_groups, training_step
from .criterion import CriterionView
from .early_stopping import FEASIBILITY_SLACK, EarlyStopping
from .evaluation import SplitTotals
from .history import HISTORY_KEYS, empty_history, progress_line, run_logger
from .model import FairModel
from .parallel import is_writer, routed, sync_offsets, wrap

__all__ = ["CHECKPOINT_FORMAT", "HISTORY_KEYS", "FairTrainer"]


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
        log_dir: if given, ``history.jsonl`` plus TensorBoard and/or wandb logs go there
            (rank 0 only under DDP).
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
    :func:`~constrained_fairness.training.optimizers.build_cooper_optimizer` (:mod:`.constraint`).

    Under DDP pass each rank its shard (a ``DataLoader`` with a ``DistributedSampler``, whose
    ``set_epoch`` you call when it shuffles) and its device (e.g. ``cuda:LOCAL_RANK``), and make
    the same calls on every rank; see :mod:`.parallel`.
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
        self.history: dict[str, list] = empty_history()
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
        self._ddp: nn.Module | None = None  # DistributedDataParallel(model.network) under DDP

    # -- constraint and optimizers -------------------------------------------------------
    @property
    def lagrangian(self) -> bool:
        return self.model.enforcement == "lagrangian"

    def _prepare(self, loader: Any) -> GroupStatisticConstraint:
        """Record the attribute values (from the whole training set) and build the constraint."""
        if not self.model.has_groups:
            record_groups(self.model, loader, self.device)
        if self._constraint is None:
            self._constraint = fairness_constraint(self.model, self.lagrangian, self.device)
            self._cooper, self._step = training_step(
                self.model,
                self._constraint,
                self.criterion_view,
                self.optimizer,
                self.dual_config,
                precision=self.precision,
                autocast_dtype=self.autocast_dtype,
                device=self.device,
                nonfinite=self.nonfinite,
                where=lambda: f"epoch {self.epoch + 1}",
            )
            self._step.skipped = self._skipped
            if self.lagrangian:
                self._load_multipliers()
        return self._constraint

    def rebuild(self, skipped: int = 0) -> None:
        """Build the constraint and training step anew (after loading a checkpoint: from the
        model's groups and multipliers), with ``skipped`` batches already counted."""
        self._constraint, self._cooper, self._step, self._skipped = None, None, None, skipped
        if self.model.has_groups:
            self._prepare(None)

    @property
    def skipped(self) -> int:
        """Batches dropped by ``nonfinite='skip'``."""
        return self._step.skipped if self._step is not None else self._skipped

    def dual_optimizer(self) -> torch.optim.Optimizer | None:
        """The multipliers' optimizer (Lagrangian enforcement, once the constraint is built)."""
        return self._cooper.dual_optimizers[0] if self.lagrangian and self._cooper is not None else None

    def _load_multipliers(self) -> None:
        weight = self._constraint.multiplier.weight
        if self.model.multipliers.numel() == weight.numel():
            with torch.no_grad():
                weight.copy_(self.model.multipliers.view_as(weight))

    def store_multipliers(self) -> None:
        """Copy the constraint's multipliers into ``model.multipliers`` (saved with the model)."""
        if self._constraint is not None and self.lagrangian:
            self.model.multipliers = self._constraint.multiplier_values().to(self.model.multipliers.device)

    def multipliers(self) -> list[float]:
        """The current Lagrange multipliers, one per constraint row (empty for projection)."""
        self.store_multipliers()
        return [float(v) for v in self.model.multipliers.tolist()]

    def constraint_rows(self) -> list[str]:
        """Names of the constraint rows, in multiplier order."""
        return [] if self._constraint is None else self._constraint.row_names()

    # -- batches -----------------------------------------------------------------------------
    def _attributes(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.group_indices(self.model.protected_codes(x))

    def _calibrate(self, loader: Iterable, warn: bool = True) -> None:
        self.model.calibrate(loader, warn=warn)
        sync_offsets(self.model)  # DDP: rank 0's offsets everywhere

    # -- epochs --------------------------------------------------------------------------------
    @quiet_sparse_checks
    def train_epoch(self, train_loader: Iterable, calibrate: bool = True) -> tuple[float, float]:
        """One pass over ``train_loader``; returns (mean loss, pooled fairness gap of the
        training outputs). With ``calibrate`` the inference offsets are then recomputed from
        the training predictions (:meth:`FairModel.calibrate`)."""
        self._prepare(train_loader)
        if self._ddp is None:
            self._ddp = wrap(self.model, self.device)  # None without DDP
        self.model.train()
        totals = SplitTotals(self.device)
        with routed(self.model, self._ddp):  # DDP: the network's gradients are all-reduced
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
                totals.add(float(loss.detach()), len(x), batch)
        if not totals.seen_rows():
            raise DataError("the training loader yields no batch; pass a loader with at least one batch")
        self.store_multipliers()
        if calibrate:
            self._calibrate(train_loader)
        return totals.mean_loss(), totals.gaps(self._constraint)[0]

    @torch.no_grad()
    def evaluate(self, loader: Iterable) -> dict[str, Any]:
        """Inference-mode metrics on every row of ``loader`` (labels are read only here,
        for the loss and the label-dependent metrics, never by the model); under DDP on
        every row of every rank's ``loader``, the same on every rank."""
        if self._constraint is None:
            raise ConfigError("the trainer has not seen training data yet; call fit or train_epoch first")
        self.model.eval()
        totals, view = SplitTotals(self.device), self.criterion_view
        for x, y in loader:
            x, y = x.to(self.device, torch.float32), y.to(self.device)
            outputs = self.model(x)
            loss = float(view.loss(outputs, y))
            batch = view.batch_outputs(outputs, y, self._attributes(x))
            totals.add(loss, len(x), batch, float(view.correct(outputs, y)))
        if not totals.seen_rows():
            raise DataError("the evaluation loader yields no batch; pass a loader with at least one row")
        total, rows, correct = totals.pooled()  # DDP: summed over ranks
        gap, gaps = totals.gaps(self._constraint)
        names = [f"x[{i}]" for i in self.model.protected_attr_idx]
        result = {
            "n": rows,
            "loss": total / rows,
            "fairness_gap": gap,
            "attribute_gaps": dict(zip(names, gaps, strict=True)),
            "feasible": self.early_stopping.feasible(gap),
        }
        if self.model.fairness_metric == "mean_pred":  # the inference guarantee, on this split
            allowances = totals.allowances(self.model.attribute_sizes)
            result["attribute_allowances"] = dict(zip(names, allowances, strict=True))
            result["within_guarantee"] = all(
                g <= self.model.fairness_tolerance + a + FEASIBILITY_SLACK
                for g, a in zip(gaps, allowances, strict=True)
                if not math.isnan(g)
            )
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
        logger = None
        if self.log_dir is not None and is_writer():  # DDP: rank 0 alone logs
            logger = run_logger(
                self.log_dir, self.model, self.dual_config.lr, self.wandb_mode, self.tensorboard
            )
        if logger is not None:  # events after this epoch from an earlier fit are hidden (resume)
            logger.begin_stage("fair_trainer", self.epoch)
        try:
            for _ in range(epochs):
                lr = float(self.optimizer.param_groups[0]["lr"])
                # inference offsets: project the validation (else training) predictions; no labels
                train_loss, train_gap = self.train_epoch(train_loader, calibrate=False)
                self._calibrate(val_loader if val_loader is not None else train_loader, warn=False)
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
                if verbose and is_writer() and (self.epoch % log_interval == 0 or self.epoch == 1):
                    print(progress_line(self.epoch, record))
                if self.early_stopping.should_stop:
                    if verbose and is_writer():
                        best = self.early_stopping.best_epoch
                        print(f"Early stopping after epoch {self.epoch}: best epoch {best}")
                    break
        finally:
            if logger is not None:
                logger.close()
        self.restore_best()
        if is_writer():
            self.model.warn_guarantee()  # of the offsets kept (not every epoch's)
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

    # -- checkpoints ----------------------------------------------------------------------------
    def save_checkpoint(self, path: str | Path, include_history: bool = True) -> None:
        """Write model (with offsets and multipliers), optimizers, scheduler, early-stopping
        state, best weights and (optionally) history, atomically; loadable with weights_only
        (:mod:`.checkpointing`). Under DDP rank 0 alone writes; the other ranks write nothing
        (call ``torch.distributed.barrier()`` before reading the file on them)."""
        save_trainer(self, path, include_history)

    def load_checkpoint(self, path: str | Path) -> dict:
        """Restore everything :meth:`save_checkpoint` wrote; returns the raw checkpoint (under
        DDP every rank reads ``path``: a file system all ranks share)."""
        return load_trainer(self, path)
