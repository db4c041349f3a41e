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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cooper
import torch
from tqdm.auto import tqdm

from ..distributed import all_ranks
from ..errors import TrainingDiverged
from ..problem import FairnessProblem
from ..sparsity import MagnitudePruner
from .batches import TensorBatches
from .checkpoint import save_atomic
from .evaluation import SplitEvaluation
from .loggers import RunLogger


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
    ) -> None:
        self.name = name
        self.model = model
        self.net = net if net is not None else model  # what runs the forward pass (a DDP wrapper)
        self.problem = problem
        self.optimizer = optimizer
        self.batches = batches
        self.evaluate = evaluate
        self.scheduler = scheduler
        self.pruner = pruner
        self.sparsity_at = sparsity_at
        self.logger = logger
        self.log_every = log_every
        self.progress = progress
        self.device = next(model.parameters()).device
        self.epoch = 0
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None

    @property
    def primal_optimizer(self) -> torch.optim.Optimizer:
        return self.optimizer.primal_optimizers[0]

    def train_epoch(self) -> float:
        """One pass over the training batches; returns the mean training loss of this epoch."""
        self.model.train()
        total = torch.zeros((), dtype=torch.float64)
        count = 0
        for inputs, targets, attributes in self.batches.epoch(self.epoch):
            inputs, targets, attributes = (
                t.to(self.device, non_blocking=True) for t in (inputs, targets, attributes)
            )
            kwargs = {"model": self.net, "inputs": inputs, "targets": targets, "attributes": attributes}
            rollout = self.optimizer.roll(compute_cmp_state_kwargs=kwargs)
            if self.pruner is not None:
                self.pruner.apply()
            self.step += 1
            loss = rollout.loss.detach()
            total += loss.double().cpu() * len(targets)
            count += len(targets)
            if self.logger is not None and self.log_every and self.step % self.log_every == 0:
                self.logger.log_scalars({f"{self.name}/step": self._step_scalars(rollout)}, self.step)
        return float(total / max(count, 1))

    def _step_scalars(self, rollout: cooper.optim.RollOut) -> dict[str, float]:
        scalars = {"loss": float(rollout.loss.detach())}
        for name, constraint in self.problem.named_constraints():
            scalars[f"max_multiplier/{name}"] = float(constraint.multiplier_values().max())
        return scalars

    def run(self, until: int, checkpoint: str | Path | None = None) -> None:
        """Train until ``self.epoch == until``; evaluate, log and checkpoint after each epoch."""
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
            if self.scheduler is not None:
                self.scheduler.step()
            evaluation = self.evaluate(self.model)
            record = self._record(lr, train_loss, evaluation)
            self.history.append(record)
            if self.logger is not None:
                self.logger.log_record(record)
            self._track_best(evaluation)
            self.epoch += 1
            if checkpoint is not None:
                save_atomic(self.state_dict(), checkpoint)
            bar.update(1)
            bar.set_postfix(
                acc=f"{evaluation['val'].stats.overall_accuracy:.4f}" if "val" in evaluation else ""
            )
        bar.close()

    def _record(self, lr: float, train_loss: float, evaluation: dict[str, SplitEvaluation]) -> dict[str, Any]:
        record: dict[str, Any] = {
            "method": self.name,
            "epoch": self.epoch,
            "step": self.step,
            "lr": lr,
            "train_loss": train_loss,
            "sparsity": self.pruner.target if self.pruner is not None else 0.0,
            "splits": {name: e.summary() for name, e in evaluation.items()},
        }
        if self.problem.is_constrained:
            record["multipliers"] = self.problem.multiplier_values()
        return record

    def _track_best(self, evaluation: dict[str, SplitEvaluation]) -> None:
        """Keep the iterate with the best validation accuracy at the final sparsity (NFT+ES)."""
        if "val" not in evaluation:
            return
        if (
            self.pruner is not None
            and self.sparsity_at is not None
            and self.pruner.target != self.sparsity_at(10**9)
        ):
            return
        value = evaluation["val"].stats.overall_accuracy
        if self.best is None or value > self.best["val_accuracy"]:
            model_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            self.best = {"epoch": self.epoch, "val_accuracy": value, "model": model_state}

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
            "scaler": self.optimizer.scaler.state_dict() if hasattr(self.optimizer, "scaler") else None,
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
        if primal_only:
            self.primal_optimizer.load_state_dict(state["optimizer"]["primal_optimizer_states"][0])
            return
        self.optimizer.load_state_dict(state["optimizer"])
        if hasattr(self.optimizer, "scaler") and state.get("scaler"):
            self.optimizer.scaler.load_state_dict(state["scaler"])
        self.problem.load_constraint_state_dict(state["problem"])
        self.history = list(state["history"])
        self.best = state["best"]
