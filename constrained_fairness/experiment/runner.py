"""The paper's protocol, end to end: dense → GMP → fine-tune per method → report.

Stages (``T`` pruning epochs, ``F`` fine-tuning epochs, sparse-stage epochs ``0..T+F-1``):

1. **Dense**: train the model (Adam), or load ``model.checkpoint``.
2. **GMP** (shared by all methods), with ``s(t) = s_f (1 − (1 − t/T)^3)``:
   ``pruning.schedule: one_ahead`` prunes sparse epoch ``e < T`` to ``s(e+1)``, so the last
   pruning epoch ``T − 1`` already runs at ``s_f``; ``reference`` (the paper code) prunes
   epoch ``e`` to ``s(e)`` for ``e = 0..T``: epoch 0 is dense and ``s_f`` is reached at epoch
   ``T``. Plain fine-tuning (NFT) while pruning. SGD with LR × ``lr_gamma`` at each milestone
   fraction of ``T + F`` epochs, weight decay on ``finetune.weight_decay_scope``.
3. **Methods** branch from the shared state at the start of the last pruning epoch (``T − 1``
   or ``T``: the mitigation is switched on from the last pruning epoch), or at epoch 0 when
   ``pruning.mitigate_while_pruning``: ``nft`` (no constraint), ``el`` (equalized loss),
   ``ceag``. ``nft_es`` is the NFT iterate with the best *validation* accuracy at the
   final sparsity. Without a validation split (``data.val_fraction: 0``, the paper code's
   choice) it is selected on *test*, as the reference code does, and reported as
   ``nft_es_test`` with ``selected_on: test``, never under the name ``nft_es``.
4. **Report**: every method on train, val and test against the dense model.

Every stage checkpoints after each epoch under ``checkpoints/``; with ``resume=True``
a stage continues from its checkpoint (a finished stage is not re-run).
"""

from __future__ import annotations

import copy
import functools
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import ExperimentConfig, dump_config
from ..constraints import GroupConstraint, GroupStatisticConstraint
from ..constraints.registry import BuildContext, build_constraint, check_constraint_spec
from ..data import TabularData
from ..data.cache import with_image_cache
from ..data.images import ImageData, dataset_labels
from ..data.registry import load_data
from ..data.splits import SPLITS
from ..errors import TrainingDiverged
from ..files import atomic_write_text
from ..groups import GroupIndex, Grouping
from ..models import ModelFactory, model_factory
from ..registry import METHODS
from ..reporting.results import DenseSplit, MethodResult, RunResults
from ..runtime.device import place_model, resolve_device
from ..runtime.distributed import broadcast_object, init_from_environment, rank, world_size
from ..runtime.precision import autocast_dtype
from ..sparsity import branch_epoch
from ..training.checkpoint import load_model_weights, save_atomic
from ..training.evaluation import Evaluator
from ..training.loggers import RunLogger
from .budget import with_scaled_batches
from .diagnosis import ceag_infeasibility
from .methods import MethodContext, failed_entries, in_order, method_name, thresholds_entry, trained_methods
from .outputs import write_partial_metrics, write_run_files
from .results import MethodResultBuilder, achieved_sparsity, nft_es_name
from .run_dir import StageCheckpoints, check_same_config, prepare_run_dir
from .stages import StageTrainers
from .validation import (
    buffer_warning,
    check_batch_sizes,
    check_constraint_attributes,
    check_methods_fit_data,
    groups_below_buffers,
    unique_names,
)


@dataclass
class RunResult:
    """A finished run: its folder, its typed ``results``, and ``metrics`` (the content of its
    ``metrics.json`` plus this invocation's ``wall_seconds``)."""

    run_dir: Path
    results: RunResults

    @functools.cached_property
    def metrics(self) -> dict[str, Any]:
        wall = self.results.wall_seconds
        return self.results.to_json() | ({} if wall is None else {"wall_seconds": wall})


class Experiment:
    """Builds the stages of one config and runs them; see the module docstring."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        data: TabularData | ImageData | torch.utils.data.Dataset | None = None,
        progress: bool = False,
        model: torch.nn.Module | ModelFactory | None = None,
    ) -> None:
        self.cfg, self.progress = cfg, progress
        self.run_dir = Path(cfg.output_dir) / cfg.name
        self.resume = False
        torch.manual_seed(cfg.seed)
        self.device = init_from_environment(cfg.device) or resolve_device(cfg.device)
        self.rank, self.world = rank(), world_size()
        self.data = with_image_cache(load_data(cfg, data), cfg.data, self.device, progress or None)
        # small data, smaller batches: at least min_steps_per_epoch steps (experiment/budget.py)
        cfg = self.cfg = with_scaled_batches(cfg, len(self.data.train), self.world)
        check_batch_sizes(cfg, self.world)
        self.model_factory = model_factory(model, cfg.model.name)
        self._input_shape: tuple[int, ...] | None = None
        self.attributes = GroupIndex.from_lists(self.data.attribute_names, self.data.attribute_values)
        self.grouping = Grouping.create(self.attributes, cfg.data.protected, "intersectional")
        self.group_names = self.grouping.names
        check_constraint_attributes(cfg)
        self.constraint_groupings = [
            Grouping.create(self.attributes, spec.attributes or cfg.data.protected, spec.mode)
            for spec in cfg.constraints
        ]
        self.constraint_names = unique_names([spec.name or spec.type for spec in cfg.constraints])
        for spec in cfg.constraints:
            check_constraint_spec(spec, self.data.num_classes)
        self.history: list[dict[str, Any]] = []
        # without a validation split (data.val_fraction: 0) a run evaluates train and test only
        has_val = len(self.data.val) > 0 if not isinstance(self.data, TabularData) else True
        check_methods_fit_data(cfg, self.data.num_classes, has_val)  # before any training
        self.split_names = SPLITS if has_val else ("train", "test")
        train_attributes = (
            self.data.train.attributes
            if isinstance(self.data, TabularData)
            else dataset_labels(self.data.train)[1]
        )
        self.left_out = groups_below_buffers(
            cfg, self.grouping, self.constraint_groupings, self.constraint_names, train_attributes
        )
        if self.left_out and self.rank == 0:
            warnings.warn(buffer_warning(self.left_out, cfg.evaluation.min_group_size), stacklevel=2)
        self.select_on = "val" if has_val else "test"  # NFT+ES picks its epoch on this split
        if isinstance(self.data, TabularData):
            self.splits = {s: _split_tensors(getattr(self.data, s)) for s in self.split_names}
        else:  # evaluate the training images without augmentation; train on them with it
            self.splits = {s: getattr(self.data, s) for s in self.split_names}
            self.splits["train"] = self.data.train_eval or self.data.train
        self.autocast_dtype = autocast_dtype(cfg.precision)
        self.evaluator = Evaluator(
            self.splits,
            self.grouping,
            cfg.eval_batch_size,
            cfg.data.num_workers,
            self.autocast_dtype,
            tolerance=cfg.ceag.tolerance,  # of the sweeps' selection score
        )
        self.dense_layout: str | None = None  # the recognised format of model.checkpoint
        # NHWC is a GPU speed-up; on the CPU some convolutions are far slower in it (the 1x1
        # stride-2 shortcut convs of ResNet-56; experiments/README.md has the measurement)
        self.channels_last = cfg.channels_last and self.device.type == "cuda"
        self.trainers = StageTrainers(
            cfg,
            self.splits["train"],
            None if isinstance(self.data, TabularData) else self.data.train,
            self.evaluator,
            self.device,
            self.rank,
            self.world,
            self.autocast_dtype,
            self.channels_last,
            self.select_on,
            loss_limit=cfg.guards.divergence_factor * math.log(max(2, self.data.num_classes)),
            progress=progress,
        )

    # -- helpers -----------------------------------------------------------------------
    def input_shape(self) -> tuple[int, ...] | None:
        """The shape of one input: ``(features,)`` for tables; for datasets, read from the first
        training item, only for a model factory that needs it (built-in ones do not)."""
        if isinstance(self.data, TabularData):
            return (self.data.num_features,)
        if self._input_shape is None and not getattr(self.model_factory, "builtin", False):
            self._input_shape = tuple(self.splits["train"][0][0].shape)
        return self._input_shape

    def _new_model(self) -> torch.nn.Module:
        model = self.model_factory(
            self.cfg.model, num_classes=self.data.num_classes, input_shape=self.input_shape()
        )
        return place_model(model, self.device, self.channels_last, self.cfg.model.compile)

    # -- stages ------------------------------------------------------------------------
    def dense_model(self) -> torch.nn.Module:
        model = self._new_model()
        if self.cfg.model.checkpoint:
            layout = load_model_weights(
                model,
                self.cfg.model.checkpoint,
                model_name=self.cfg.model.name,
                class_names=list(self.data.class_names),
            )
            self.dense_layout = layout
            if not self.cfg.methods and self.rank == 0:  # a dense-only run publishes it in our format
                source = {"model": model.state_dict(), "source": str(self.cfg.model.checkpoint)}
                save_atomic(source, self.run_dir / "checkpoints" / "dense.pt")
            return model
        trainer = self.trainers.dense(model)
        self.checkpoints.resume_into(trainer, "dense")
        trainer.run(self.cfg.dense.epochs, self.checkpoints.save_to("dense"))
        self.history += trainer.history
        return model

    def declared_constraints(self, context: BuildContext) -> list[GroupConstraint]:
        """Fresh instances of the ``constraints:`` entries."""
        return [
            build_constraint(spec, grouping, context)
            for spec, grouping in zip(self.cfg.constraints, self.constraint_groupings, strict=True)
        ]

    # -- the whole run -----------------------------------------------------------------
    def run(self, run_dir: Path, resume: bool = False, force: bool = False) -> RunResults:
        self.run_dir, self.resume = run_dir, resume
        self.checkpoints = StageCheckpoints(run_dir / "checkpoints", self.cfg, self.rank, resume, force)
        cfg, start = self.cfg, time.perf_counter()
        if resume:
            check_same_config(self.run_dir / "config.yaml", cfg, force)
        self.history = []
        if self.rank == 0:  # under DDP, rank 0 alone writes files and logs
            atomic_write_text(self.run_dir / "config.yaml", dump_config(cfg))
            if not self.resume:
                (self.run_dir / "history.jsonl").unlink(missing_ok=True)
            self.trainers.logger = RunLogger(
                self.run_dir, cfg.to_dict(), cfg.logging.wandb, cfg.logging.tensorboard, resume=resume
            )
        try:
            results = self._run_stages()
        finally:
            if self.trainers.logger is not None:
                self.trainers.logger.close()
        results.world_size = self.world
        if self.rank != 0:
            return results
        return write_run_files(
            self.run_dir, results, self.history, self.group_names, cfg.to_dict(), resume, start
        )

    def _run_stages(self) -> RunResults:
        cfg = self.cfg
        dense = self.dense_model()
        dense_outputs = self.evaluator.set_dense_reference(dense)
        dense_stats = self.evaluator.dense or {}
        build = BuildContext(self.data.num_classes, dense_outputs["train"], self.device)
        reference = build.reference(self.grouping)
        # the declared constraints once more, on the CPU, to evaluate every method against them
        cpu = BuildContext(build.num_classes, build.dense_train, torch.device("cpu"))
        report_constraints = [
            (name, c)
            for name, c in zip(self.constraint_names, self.declared_constraints(cpu), strict=True)
            if isinstance(c, GroupStatisticConstraint)
        ]
        dense_summary = {s: DenseSplit(st.overall_accuracy, st.overall_loss) for s, st in dense_stats.items()}
        if not cfg.methods:  # a dense-only run: the dense checkpoint is the product
            return self._run_entry(0.0, {}, dense_summary, {})

        branch = branch_epoch(cfg.pruning.schedule, cfg.pruning.epochs, cfg.pruning.mitigate_while_pruning)
        shared = self.trainers.sparse("gmp", dense, [], [], [])
        self.checkpoints.resume_into(shared, "gmp")
        shared.run(branch, self.checkpoints.save_to("gmp"))
        self.history += shared.history
        shared_state = shared.state_dict()
        total = cfg.pruning.epochs + cfg.finetune.epochs

        trained = trained_methods(cfg.methods)
        builder = MethodResultBuilder(
            self.grouping,
            self.split_names,
            self.evaluator,
            cfg.evaluation,
            cfg.ceag.tolerance,
            report_constraints,
        )
        methods: dict[str, MethodResult] = {}
        achieved: dict[str, Any] = {}
        context = MethodContext(
            cfg,
            reference,
            self.grouping,
            build.dense_train,
            build.num_classes,
            self.device,
            declared=lambda: (
                self.declared_constraints(build),
                list(self.constraint_names),
                [s.dual for s in cfg.constraints],
            ),
        )
        listed = [nft_es_name(self.select_on) if m == "nft_es" else method_name(m) for m in cfg.methods]
        for entry in trained:
            if self.rank == 0 and any(m.error is None for m in methods.values()):  # the rest: pending
                done = self._run_entry(
                    cfg.pruning.sparsity, achieved, dense_summary, in_order(methods, listed)
                )
                write_partial_metrics(self.run_dir, done, [m for m in listed if m not in methods], self.world)
            method = method_name(entry)
            model = self._new_model()
            setup = METHODS.resolve(entry)(context)
            trainer = self.trainers.sparse(method, model, setup.constraints, setup.names, setup.duals)
            if setup.sample_weights is not None:
                trainer.problem.sample_weights = setup.sample_weights
            if not self.checkpoints.resume_into(trainer, method):
                trainer.load_state_dict(shared_state, primal_only=True)
            try:
                trainer.run(total, self.checkpoints.save_to(method))
            except TrainingDiverged as exc:  # the other methods go on; the run exits 2 at the end
                self.history += trainer.history
                methods.update(failed_entries(entry, str(exc).splitlines()[0], cfg.methods, self.select_on))
                continue
            self.history += trainer.history
            final = trainer.epoch - 1
            if entry in cfg.methods or (method == "nft" and "thresholds" in cfg.methods):
                evaluation = self.evaluator(model)  # once, also for the thresholds of NFT
            if entry in cfg.methods:
                methods[method] = builder.entry(evaluation, final)
                methods[method].skipped_batches = trainer.skipped
                if trainer.problem.is_constrained:
                    methods[method].multipliers = trainer.problem.multiplier_values()
                if method == "ceag":  # over ε on train: which groups, and the change most likely to help
                    steps = trainer.step - int(shared_state["step"])
                    methods[method].infeasible = ceag_infeasibility(methods[method], cfg, steps)
            if method == "nft" and "nft_es" in cfg.methods and trainer.best is not None:
                best = copy.deepcopy(model)
                best.load_state_dict(trainer.best["model"])
                selected = builder.entry(self.evaluator(best), int(trainer.best["epoch"]))
                selected.selected_on = self.select_on
                methods[nft_es_name(self.select_on)] = selected
            if method == "nft" and "thresholds" in cfg.methods:
                methods["thresholds"] = thresholds_entry(
                    evaluation, final, cfg.thresholds.rule, self.grouping, self.evaluator, builder
                )
            achieved = achieved_sparsity(trainer.pruner)

        errors = [m.error for m in methods.values()]
        if errors and None not in errors:  # nothing finished: no results file, as for any error
            raise TrainingDiverged(errors[0])
        return self._run_entry(cfg.pruning.sparsity, achieved, dense_summary, in_order(methods, listed))

    def _run_entry(
        self,
        sparsity: float,
        achieved: dict[str, Any],
        dense: dict[str, DenseSplit],
        methods: dict[str, MethodResult],
    ) -> RunResults:
        """The whole run's results (``world_size`` is set by :meth:`run`)."""
        return RunResults(
            splits=tuple(self.split_names),
            dense_checkpoint={"path": self.cfg.model.checkpoint, "format": self.dense_layout},
            tolerance=self.cfg.ceag.tolerance,
            sparsity=sparsity,
            achieved_sparsity=achieved,
            groups=list(self.group_names),
            groups_below_buffer=self.left_out or None,
            dense=dense,
            methods=methods,
        )


def _split_tensors(split: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return split.features, split.targets, split.attributes


def run_experiment(
    cfg: ExperimentConfig,
    output: str | Path | None = None,
    resume: bool | str = False,
    progress: bool = False,
    data: TabularData | ImageData | torch.utils.data.Dataset | None = None,
    force: bool = False,
    model: torch.nn.Module | ModelFactory | None = None,
) -> RunResult:
    """Run the protocol of ``cfg``; returns the run folder and its results (the typed tree
    ``metrics.json`` was written from, and ``.metrics``, that file's content).

    ``data`` replaces ``cfg.data`` with already loaded data: tables, for example
    ``constrained_fairness.data.from_records(dataframe, target=..., protected=[...])``; an
    :class:`ImageData` of split datasets; or one ``torch.utils.data.Dataset`` of
    ``(input, target, attributes)``, split with ``data.val_fraction`` and ``data.test_fraction``
    (:func:`~constrained_fairness.data.custom.from_dataset`). ``model`` replaces
    ``cfg.model.name``: an ``nn.Module`` (each stage starts from a copy of it as given) or a
    factory ``(model_cfg, *, num_classes, input_shape) -> nn.Module``.

    A method whose stage fails (:class:`~constrained_fairness.errors.TrainingDiverged`) does not
    stop the run: its entry holds the one-line error (``.results.failed``), the other methods
    finish, and ``cfair run`` exits with 2.
    """
    experiment = Experiment(cfg, data=data, progress=progress, model=model)  # loads and checks the data
    prepared = prepare_run_dir(cfg, output, resume) if experiment.rank == 0 else None
    run_dir_name, resuming = broadcast_object((str(prepared[0]), prepared[1]) if prepared else None)
    run_dir = Path(run_dir_name)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*TensorBoard.*")
        results = experiment.run(run_dir, resume=resuming, force=force)
    return RunResult(run_dir, results)
