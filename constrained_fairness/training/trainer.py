"""The training loop: epochs of Cooper rolls, masks re-applied, evaluation, checkpoints.

One :class:`Trainer` runs one stage of the protocol (dense training, or the sparse stage
of one method). Its whole state — model, masks, primal and dual optimizers, multipliers,
replay buffers, LR scheduler, RNG, epoch and step counters, history and best iterate —
round-trips through :meth:`state_dict`, so a run resumed from a checkpoint continues
bit-identically on CPU.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable
from typing import Any

import cooper
import torch
from tqdm.auto import tqdm

from ..errors import TrainingDiverged
from ..problem import FairnessProblem
from ..runtime.distributed import all_ranks
from ..sparsity import MagnitudePruner
from .batches import TensorBatches
from .checkpoint import Checkpointer
from .evaluation import SplitEvaluation
from .loggers import RunLogger
from .optimizers import quiet_sparse_checks
from .step import TrainingStep


class _StepPart:
    """An attribute of the trainer that lives on its :class:`TrainingStep`."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, trainer: Trainer, owner: type | None = None) -> Any:
        return getattr(trainer.training_step, self.name)

    def __set__(self, trainer: Trainer, value: Any) -> None:
        setattr(trainer.training_step, self.name, value)


class Trainer:
    """Runs epochs ``[epoch, until)`` of one stage.

    Args:
        name: the stage or method name used in logs and history (``dense``, ``nft``, ...).
        model: the network.
        problem: loss plus constraints.
        optimizer: a Cooper optimizer over ``problem``.
        batches: training mini-batches, one shuffled order per epoch.
        evaluate: model → per-split evaluation, called after every epoch.
        scheduler: optional LR scheduler, stepped once per epoch.
        pruner: optional magnitude pruner; masks are re-applied after every step.
        sparsity_at: epoch → target sparsity at the start of that epoch (GMP schedule).
        logger: optional run logger; ``log_every`` steps between step-level scalars.
        net: the module that runs the forward pass, e.g. ``DistributedDataParallel(model)``;
            defaults to ``model``.
        every_steps: also checkpoint every this many steps inside an epoch (0: never).
        nonfinite: ``stop`` (raise :class:`TrainingDiverged` before the bad step) or ``skip``
            (drop the batch and count it) when a batch's loss or violation is not finite.
        check_every: ``stop`` reads the guard once per this many steps, and at each epoch's
            end and before each checkpoint (:class:`TrainingStep`).
        eval_every: evaluate after every this many epochs, and after the last one.
        multiplier_warning: warn once per constraint when a multiplier exceeds this.
        loss_limit: an epoch's mean training loss above this stops the stage as diverged
            (:class:`TrainingDiverged`, before the epoch is checkpointed).
        select_on: the split whose accuracy picks the best iterate (``val``; ``test`` only
            to reproduce the paper code, which has no validation split).
    """

    def __init__(
        self,
        name: str,
        model: torch.nn.Module,
        problem: FairnessProblem,
        optimizer: cooper.optim.CooperOptimizer,
        batches: TensorBatches,
        evaluate: Callable[[torch.nn.Module], dict[str, SplitEvaluation]],
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        pruner: MagnitudePruner | None = None,
        sparsity_at: Callable[[int], float] | None = None,
        logger: RunLogger | None = None,
        log_every: int = 20,
        progress: bool = False,
        net: torch.nn.Module | None = None,
        every_steps: int = 0,
        nonfinite: str = "stop",
        check_every: int = 1,
        eval_every: int = 1,
        multiplier_warning: float = math.inf,
        loss_limit: float = math.inf,
        select_on: str = "val",
    ) -> None:
        self.name = name
        self.model = model
        self.training_step = TrainingStep(
            model,
            problem,
            optimizer,
            nonfinite=nonfinite,
            check_every=check_every,
            pruner=pruner,
            where=lambda: f"stage {self.name!r}, epoch {self.epoch}, batch {self.batch}",
        )
        self.net = net if net is not None else model  # what runs the forward pass (a DDP wrapper)
        self.batches = batches
        self.evaluate = evaluate
        self.scheduler = scheduler
        self.sparsity_at = sparsity_at
        self.logger = logger
        self.log_every = log_every
        self.progress = progress
        self.every_steps = every_steps
        self.eval_every = eval_every
        self.multiplier_warning = multiplier_warning
        self.loss_limit = loss_limit
        self.select_on = select_on
        self.device = next(model.parameters()).device
        self.epoch = 0
        self.step = 0
        self.batch = 0  # batches of the current epoch already trained (a mid-epoch checkpoint)
        self.partial_loss = self._zero_loss()  # Σ loss·rows of those batches, on the device
        self.partial_rows = 0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.checkpointer: Checkpointer | None = None
        self._warned: set[str] = set()

    # the step's parts, readable and settable here (e.g. a test swaps the problem or the policy)
    problem = _StepPart()
    optimizer = _StepPart()
    nonfinite = _StepPart()
    pruner = _StepPart()
    skipped = _StepPart()  # batches dropped by the ``skip`` policy

    def _zero_loss(self) -> torch.Tensor:
        """The running loss sum's 0: float64 on the training device (float32 on Apple MPS,
        which has no float64), so that adding a batch's loss reads nothing to the host."""
        dtype = torch.float32 if self.device.type == "mps" else torch.float64
        return torch.zeros((), dtype=dtype, device=self.device)

    @property
    def primal_optimizer(self) -> torch.optim.Optimizer:
        return self.optimizer.primal_optimizers[0]

    @quiet_sparse_checks
    def train_epoch(self) -> float:
        """The rest of the current epoch (all of it unless resumed mid-epoch); returns the
        mean training loss of the whole epoch."""
        self.model.train()
        for inputs, targets, attributes in self.batches.epoch(self.epoch, skip=self.batch):
            inputs, targets, attributes = (
                t.to(self.device, non_blocking=True) for t in (inputs, targets, attributes)
            )
            try:
                rollout = self.training_step(
                    model=self.net, inputs=inputs, targets=targets, attributes=attributes
                )
            finally:
                self.batch += 1
            if rollout is None:  # a non-finite batch, skipped
                continue
            self.step += 1
            self.partial_loss += rollout.loss.detach().to(self.partial_loss.dtype) * len(targets)
            self.partial_rows += len(targets)
            if self.logger is not None and self.log_every and self.step % self.log_every == 0:
                self.logger.log_scalars({f"{self.name}/step": self._step_scalars(rollout)}, self.step)
            if self.checkpointer is not None and self.every_steps and self.step % self.every_steps == 0:
                self.training_step.verify()
                self._save_checkpoint(self.batch)
        self.training_step.verify()
        loss = (self.partial_loss / max(self.partial_rows, 1)).item()  # the epoch's one host read
        self.batch, self.partial_loss, self.partial_rows = 0, self._zero_loss(), 0
        return loss

    def _save_checkpoint(self, batch: int) -> None:
        """Checkpoint after ``batch`` batches of the current epoch, with the logs flushed first
        (a run resumed from this checkpoint re-logs nothing before it)."""
        assert self.checkpointer is not None
        if self.logger is not None:
            self.logger.flush()
        self.checkpointer.save(self.state_dict(), self.epoch, batch)

    def _warn_large_multipliers(self) -> None:
        for name, constraint in self.problem.named_constraints():
            largest = float(constraint.multiplier_values().max())
            if largest > self.multiplier_warning and name not in self._warned:
                self._warned.add(name)
                warnings.warn(
                    f"a multiplier of constraint {name!r} reached {largest:.3g} > guards.multiplier_warning="
                    f"{self.multiplier_warning:g} in stage {self.name!r}, epoch {self.epoch}: the dual "
                    "learning rate is too large, or the constraint cannot be satisfied",
                    stacklevel=2,
                )

    def _step_scalars(self, rollout: cooper.optim.RollOut) -> dict[str, float]:
        scalars = {"loss": float(rollout.loss.detach())}
        for name, constraint in self.problem.named_constraints():
            scalars[f"max_multiplier/{name}"] = float(constraint.multiplier_values().max())
        return scalars

    def run(self, until: int, checkpointer: Checkpointer | None = None) -> None:
        """Train until ``self.epoch == until``; log and checkpoint after each epoch (and every
        ``every_steps`` steps), evaluate after every ``eval_every``-th epoch and the last (an
        epoch without evaluation has ``"splits": {}`` in its history record)."""
        self.checkpointer = checkpointer
        if self.logger is not None:
            self.logger.begin_stage(self.name, self.step)
        bar = tqdm(total=until, initial=self.epoch, desc=self.name, disable=not self.progress, leave=False)
        while self.epoch < until:
            if self.pruner is not None and self.sparsity_at is not None:
                target = self.sparsity_at(self.epoch)
                if target != self.pruner.target:
                    self.pruner.prune_to(target)
            lr = self.primal_optimizer.param_groups[0]["lr"]
            train_loss = self.train_epoch()
            if not all_ranks(math.isfinite(train_loss)):  # every rank stops together under DDP
                raise TrainingDiverged(
                    f"training diverged in stage {self.name!r} at epoch {self.epoch} (non-finite loss); "
                    "lower the learning rate or the dual learning rate (e.g. ceag.dual.lr), or use the nupi "
                    "dual optimizer; the last good checkpoint is kept"
                )
            if not all_ranks(train_loss <= self.loss_limit):  # finite, but without bound
                raise TrainingDiverged(
                    f"training diverged in stage {self.name!r} at epoch {self.epoch} (training loss "
                    f"{train_loss:.3g} > {self.loss_limit:.3g}, guards.divergence_factor × log(classes)); "
                    "lower the learning rate or the dual learning rate (e.g. ceag.dual.lr), or use the nupi "
                    "dual optimizer; the last good checkpoint is kept"
                )
            if self.scheduler is not None:
                self.scheduler.step()
            self._warn_large_multipliers()
            evaluated = (self.epoch + 1) % self.eval_every == 0 or self.epoch + 1 == until
            evaluation = self.evaluate(self.model) if evaluated else {}
            record = self._record(lr, train_loss, evaluation)
            self.history.append(record)
            if self.logger is not None:
                self.logger.log_record(record)
            self._track_best(evaluation)
            self.epoch += 1
            if checkpointer is not None:
                self._save_checkpoint(0)
            bar.update(1)
            if "val" in evaluation:
                bar.set_postfix(acc=f"{evaluation['val'].stats.overall_accuracy:.4f}")
        bar.close()
        if checkpointer is not None:
            checkpointer.finalize()

    def _record(self, lr: float, train_loss: float, evaluation: dict[str, SplitEvaluation]) -> dict[str, Any]:
        record: dict[str, Any] = {
            "stage": self.name,
            "epoch": self.epoch,
            "step": self.step,
            "lr": lr,
            "train_loss": train_loss,
            "sparsity": self.pruner.target if self.pruner is not None else 0.0,
            "skipped_batches": self.skipped,
            "splits": {name: e.summary() for name, e in evaluation.items()},
        }
        if self.problem.is_constrained:
            record["multipliers"] = self.problem.multiplier_values()
        return record

    def _track_best(self, evaluation: dict[str, SplitEvaluation]) -> None:
        """Keep the iterate with the best accuracy on ``select_on`` at the final sparsity (NFT+ES)."""
        if self.select_on not in evaluation:
            return
        if (
            self.pruner is not None
            and self.sparsity_at is not None
            and self.pruner.target != self.sparsity_at(10**9)
        ):
            return
        value = evaluation[self.select_on].stats.overall_accuracy
        best = None if self.best is None else self.best.get("accuracy", self.best.get("val_accuracy"))
        if best is None or value > best:  # ("val_accuracy": checkpoints written before select_on)
            model_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            self.best = {"epoch": self.epoch, "accuracy": value, "model": model_state}

    def state_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "epoch": self.epoch,
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": dict(self.optimizer.state_dict()),
            "problem": self.problem.constraint_state_dict(),
            "pruner": self.pruner.state_dict() if self.pruner is not None else None,
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "history": copy.deepcopy(self.history),
            "best": self.best,
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "scaler": self.optimizer.scaler.state_dict() if hasattr(self.optimizer, "scaler") else None,
            "batch": self.batch,
            "partial_loss": self.partial_loss.detach().cpu().double(),
            "partial_rows": self.partial_rows,
            "skipped": self.skipped,
        }

    def load_state_dict(self, state: dict[str, Any], primal_only: bool = False) -> None:
        """Restore a checkpoint; ``primal_only`` starts a new method from a shared stage
        (model, masks, primal optimizer, scheduler and counters), with fresh multipliers,
        buffers, history and best iterate."""
        # torch optimizers and masks keep the loaded tensors themselves (no copy on the same
        # device): copy, so that trainers started from one state never share buffers.
        state = copy.deepcopy(state)
        self.model.load_state_dict(state["model"])
        if self.pruner is not None and state["pruner"] is not None:
            self.pruner.load_state_dict(state["pruner"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        torch.set_rng_state(state["rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.batch = int(state.get("batch", 0))
        self.partial_loss = self._zero_loss() + state.get("partial_loss", 0.0)
        self.partial_rows = int(state.get("partial_rows", 0))
        if primal_only:
            self.primal_optimizer.load_state_dict(state["optimizer"]["primal_optimizer_states"][0])
            return
        self.optimizer.load_state_dict(state["optimizer"])
        if hasattr(self.optimizer, "scaler") and state.get("scaler"):
            self.optimizer.scaler.load_state_dict(state["scaler"])
        self.problem.load_constraint_state_dict(state["problem"])
        self.history = list(state["history"])
        self.best = state["best"]
        self.skipped = int(state.get("skipped", 0))
