"""The trainer of each stage of the protocol: its batches, its problem, its Cooper optimizer
and, under DDP, the wrapped network. The dense stage trains with Adam; the sparse stages
(GMP, then one per method) with SGD under the pruning schedule (:mod:`.runner`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ..config import ExperimentConfig
from ..constraints import GroupConstraint
from ..problem import FairnessProblem
from ..runtime.precision import grad_scaler
from ..sparsity import MagnitudePruner, sparsity_schedule
from ..training.batches import CachedBatches, LoaderBatches, TensorBatches
from ..training.evaluation import Evaluator, SplitSource
from ..training.loggers import RunLogger
from ..training.optimizers import build_cooper_optimizer, dense_optimizer, fixed_shapes, sparse_optimizer
from ..training.trainer import Trainer


@dataclass
class StageTrainers:
    """Builds the stages' trainers of one run.

    ``train`` is the training split as tensors, or ``train_set`` the dataset it is drawn from
    (with augmentation); ``select_on`` the split NFT+ES picks its epoch on; ``loss_limit`` the
    training loss above which a stage stops as diverged.
    """

    cfg: ExperimentConfig
    train: SplitSource
    train_set: torch.utils.data.Dataset | None
    evaluator: Evaluator
    device: torch.device
    rank: int
    world: int
    autocast_dtype: torch.dtype | None
    channels_last: bool
    select_on: str
    loss_limit: float = math.inf
    logger: RunLogger | None = None
    progress: bool = False

    def batches(self, batch_size: int) -> TensorBatches | LoaderBatches | CachedBatches:
        """The training batches, shuffled by the run's seed, this rank's share under DDP; from the
        image cache when ``train_set`` is one or ``data.cache`` is not ``none`` (see data/cache.py)."""
        from ..data.cache import CachedImages, cached_source

        if isinstance(self.train, tuple):
            return TensorBatches(*self.train, batch_size, True, self.cfg.seed, self.rank, self.world)
        d = self.cfg.data
        if isinstance(self.train_set, CachedImages) or d.cache != "none":
            source = self.train_set
            if not isinstance(source, CachedImages):
                source = cached_source(
                    source,  # type: ignore[arg-type]
                    d.cache,
                    self.device,
                    cache_dir=d.cache_dir,
                    progress=self.progress,
                    pin_memory=d.pin_memory,
                )
            return CachedBatches(source, batch_size, True, self.cfg.seed, self.rank, self.world)
        return LoaderBatches(
            self.train_set,
            batch_size,
            True,
            self.cfg.seed,
            d.num_workers,
            d.pin_memory,
            self.rank,
            self.world,
        )

    def problem(self, constraints: list[GroupConstraint], names: list[str]) -> FairnessProblem:
        problem = FairnessProblem(constraints, names)
        problem.autocast_dtype = self.autocast_dtype
        problem.channels_last = self.channels_last
        return problem

    def trainer(
        self,
        name: str,
        model: torch.nn.Module,
        problem: FairnessProblem,
        primal: torch.optim.Optimizer,
        duals: list,
        batch_size: int,
        **kwargs: Any,
    ) -> Trainer:
        net = model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            net = DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        problem.use_fixed_shapes(fixed_shapes(self.cfg.guards.fixed_shapes, duals))
        return Trainer(
            name,
            model,
            problem,
            build_cooper_optimizer(problem, primal, duals, grad_scaler(self.cfg.precision, self.device)),
            self.batches(batch_size),
            self.evaluator,
            logger=self.logger,
            log_every=self.cfg.logging.log_every,
            progress=self.progress and self.rank == 0,
            net=net,
            every_steps=self.cfg.checkpoint.every_steps,
            nonfinite=self.cfg.guards.nonfinite,
            check_every=self.cfg.guards.check_every,
            eval_every=self.cfg.evaluation.every_epochs,
            multiplier_warning=self.cfg.guards.multiplier_warning,
            loss_limit=self.loss_limit,
            **kwargs,
        )

    def dense(self, model: torch.nn.Module) -> Trainer:
        """The dense stage: Adam on the plain loss (``dense:``)."""
        d = self.cfg.dense
        primal, scheduler = dense_optimizer(model, d)
        return self.trainer(
            "dense", model, self.problem([], []), primal, [], d.batch_size, scheduler=scheduler
        )

    def sparse(
        self,
        name: str,
        model: torch.nn.Module,
        constraints: list[GroupConstraint],
        names: list[str],
        duals: list,
    ) -> Trainer:
        """A sparse stage (GMP then fine-tuning) of one method."""
        p, f = self.cfg.pruning, self.cfg.finetune
        primal, scheduler = sparse_optimizer(model, f, p.epochs + f.epochs)
        return self.trainer(
            name,
            model,
            self.problem(constraints, names),
            primal,
            duals,
            f.batch_size,
            scheduler=scheduler,
            pruner=MagnitudePruner(model, p.scope, p.dense_layers, p.rounding),
            sparsity_at=sparsity_schedule(p.schedule, p.epochs, p.sparsity),
            select_on=self.select_on,
        )
