"""Build Cooper optimizers: unconstrained (NFT) or alternating dual-primal (CEAG, EL)."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from typing import ParamSpec, TypeVar

import cooper
import torch
from cooper.optim import AlternatingDualPrimalOptimizer, UnconstrainedOptimizer, nuPI
from cooper.optim.optimizer import RollOut

from ..config import DenseConfig, DualConfig, FinetuneConfig
from ..config.choices import FIXED_SHAPES, WEIGHT_DECAY_SCOPES
from ..errors import ConfigError
from ..problem import FairnessProblem
from ..sparsity import prunable_layers

_P = ParamSpec("_P")
_R = TypeVar("_R")


def quiet_sparse_checks(train_epoch: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run ``train_epoch`` without torch's warning that sparse invariant checks are off.

    nuPI builds sparse updates for the ``IndexedMultiplier``, and torch then warns once that
    those checks are disabled by default, which says nothing actionable to our users. The
    filter holds only while the decorated function runs: importing the library sets none."""

    @functools.wraps(train_epoch)
    def quiet(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")
            return train_epoch(*args, **kwargs)

    return quiet


def build_dual_optimizer(params: Sequence[torch.nn.Parameter], cfg: DualConfig) -> torch.optim.Optimizer:
    r"""Gradient *ascent* on the multipliers, followed by Cooper's projection ``λ ← max(0, λ)``.

    ``sgd``:  ``λ ← λ + η c``  (plain SGD with ``maximize=True``, the paper's choice);
    ``nupi``: Cooper's nuPI controller, ``λ ← λ + η (K_I e_t + K_P (ξ_t − ξ_{t−1}))`` with
    ``ξ_t = ν ξ_{t−1} + (1 − ν) e_t``, which damps oscillations. Adam is not offered:
    it cannot step the sparse gradients of an ``IndexedMultiplier``.
    """
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, maximize=True)
    if cfg.optimizer != "nupi":
        raise ConfigError(
            f"dual optimizer must be sgd or nupi, got {cfg.optimizer!r} (Adam cannot step sparse duals)"
        )
    return nuPI(params, lr=cfg.lr, Kp=cfg.nupi_kp, Ki=cfg.nupi_ki, ema_nu=cfg.nupi_ema, maximize=True)


def fixed_shapes(mode: str, duals: Sequence[DualConfig]) -> bool:
    """Whether the constraints compute their statistics over all groups (``guards.fixed_shapes``).

    ``on`` / ``off`` as given; ``auto``: on when every dual optimizer is plain SGD, the one for
    which a zero row is exactly no update (see :mod:`..constraints.fixed_shapes`), on any
    device: on an accelerator no step then waits for a host read, and on the CPU CEAG's rows
    come from compiled kernels (:mod:`..constraints.ceag_fused`), a step about 1.45x faster
    than the present groups' rows on the Adult MLP (benchmark P1a). The results are the same
    bits either way on the CPU (tested). ``on`` with a nuPI dual is refused: its
    proportional term moves a multiplier on a zero error, so the rows of absent groups would
    change it.
    """
    if mode not in FIXED_SHAPES:
        raise ConfigError(f"guards.fixed_shapes must be {', '.join(FIXED_SHAPES)}, got {mode!r}")
    sgd_only = all(d.optimizer == "sgd" for d in duals)
    if mode == "on" and not sgd_only:
        raise ConfigError(
            "guards.fixed_shapes: on needs plain SGD dual optimizers (a nuPI dual moves multipliers on "
            "the zero rows of absent groups); set the dual optimizer to sgd, or fixed_shapes to auto"
        )
    return mode == "on" or (mode == "auto" and sgd_only)


_NORM_LAYERS = (torch.nn.modules.batchnorm._NormBase, torch.nn.GroupNorm, torch.nn.LayerNorm)


def decayed_parameter_names(model: torch.nn.Module, scope: str) -> set[str]:
    """Names of the parameters that weight decay reaches under ``scope``.

    - ``all``: every parameter;
    - ``no_norm_bias``: all but the parameters of normalisation layers and every bias;
    - ``classifier``: the weight and bias of the last linear/conv layer in definition order,
      the only ones the paper code's L2 term reaches (``src/models/model_stats.py`` skips
      BatchNorm and overwrites its running sum with ``=`` for each layer, so the last layer's
      ``‖W‖² + ‖b‖²`` is what is left).
    """
    if scope not in WEIGHT_DECAY_SCOPES:
        raise ConfigError(f"weight_decay_scope must be {', '.join(WEIGHT_DECAY_SCOPES)}, got {scope!r}")
    names = [name for name, _ in model.named_parameters()]
    if scope == "all":
        return set(names)
    if scope == "classifier":
        layers = list(prunable_layers(model, dense_layers=()))  # every conv/linear, in definition order
        if not layers:
            raise ConfigError("weight_decay_scope 'classifier' needs a model with a linear or conv layer")
        return {n for n in names if n.rpartition(".")[0] == layers[-1]}
    norm = {
        f"{name}.{p}" if name else p
        for name, m in model.named_modules()
        if isinstance(m, _NORM_LAYERS)
        for p, _ in m.named_parameters(recurse=False)
    }
    return {n for n in names if n not in norm and not n.endswith("bias")}


def build_primal_optimizer(model: torch.nn.Module, cfg: FinetuneConfig) -> torch.optim.SGD:
    r"""SGD of the sparse stage, with weight decay ``wd`` on the parameters of
    :func:`decayed_parameter_names` only.

    The update of a decayed parameter is PyTorch's coupled decay, ``g ← ∇L + wd·θ`` before
    momentum, which is the gradient of the reference's loss term ``wd/2 · ‖θ‖²``.
    """
    decayed = decayed_parameter_names(model, cfg.weight_decay_scope)
    named = list(model.named_parameters())
    groups = [
        {"params": [p for n, p in named if n in decayed], "weight_decay": cfg.weight_decay},
        {"params": [p for n, p in named if n not in decayed], "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)


class ScaledAlternatingDualPrimalOptimizer(AlternatingDualPrimalOptimizer):
    """Cooper's dual-then-primal roll with the primal backward scaled by a ``GradScaler``
    (fp16 mixed precision). The dual step uses the strict violations, which carry no
    gradient through the model, so it needs no scaling."""

    def __init__(self, cmp, primal_optimizers, dual_optimizers, scaler: torch.amp.GradScaler) -> None:
        super().__init__(cmp=cmp, primal_optimizers=primal_optimizers, dual_optimizers=dual_optimizers)
        self.scaler = scaler

    def roll(self, compute_cmp_state_kwargs: dict | None = None) -> RollOut:
        self.zero_grad()
        cmp_state = self.cmp.compute_cmp_state(**(compute_cmp_state_kwargs or {}))
        dual_store = cmp_state.compute_dual_lagrangian()
        dual_store.backward()
        self.dual_step()
        primal_store = cmp_state.compute_primal_lagrangian()
        _scaled_primal_step(self, primal_store)
        return RollOut(cmp_state.loss, cmp_state, primal_store, dual_store)


class ScaledUnconstrainedOptimizer(UnconstrainedOptimizer):
    """Cooper's unconstrained roll with a ``GradScaler`` (fp16 mixed precision)."""

    def __init__(self, cmp, primal_optimizers, scaler: torch.amp.GradScaler) -> None:
        super().__init__(cmp=cmp, primal_optimizers=primal_optimizers)
        self.scaler = scaler

    def roll(self, compute_cmp_state_kwargs: dict | None = None) -> RollOut:
        self.zero_grad()
        cmp_state = self.cmp.compute_cmp_state(**(compute_cmp_state_kwargs or {}))
        primal_store = cmp_state.compute_primal_lagrangian()
        _scaled_primal_step(self, primal_store)
        return RollOut(cmp_state.loss, cmp_state, primal_store, cooper.LagrangianStore())


def _scaled_primal_step(optimizer, primal_store: cooper.LagrangianStore) -> None:
    """``scale(L).backward()``, then each primal optimizer steps unless gradients overflowed."""
    scaler = optimizer.scaler
    if primal_store.lagrangian is not None:
        scaler.scale(primal_store.lagrangian).backward()
    for primal in optimizer.primal_optimizers:
        scaler.step(primal)
    scaler.update()


def build_cooper_optimizer(
    problem: FairnessProblem,
    primal: torch.optim.Optimizer,
    duals: Sequence[DualConfig],
    scaler: torch.amp.GradScaler | None = None,
) -> cooper.optim.CooperOptimizer:
    """One dual optimizer per constraint (in registration order), each with its own config.

    The update order is Cooper's ``AlternatingDualPrimalOptimizer``: one forward pass,
    the dual step with the violations at ``θ_t``, then the primal step at ``θ_t`` with the
    new multipliers.
    """
    if not problem.is_constrained:
        if scaler is not None:
            return ScaledUnconstrainedOptimizer(problem, primal, scaler)
        return UnconstrainedOptimizer(cmp=problem, primal_optimizers=primal)
    dual_optimizers = [
        build_dual_optimizer(list(constraint.multiplier.parameters()), cfg)
        for constraint, cfg in zip(problem.constraints(), duals, strict=True)
    ]
    if scaler is not None:
        return ScaledAlternatingDualPrimalOptimizer(problem, primal, dual_optimizers, scaler)
    return AlternatingDualPrimalOptimizer(
        cmp=problem, primal_optimizers=primal, dual_optimizers=dual_optimizers
    )


Schedule = torch.optim.lr_scheduler.MultiStepLR


def dense_optimizer(model: torch.nn.Module, d: DenseConfig) -> tuple[torch.optim.Optimizer, Schedule | None]:
    """The dense stage's optimizer (Adam, or SGD with momentum) and its step schedule: LR ×
    ``lr_gamma`` at each milestone fraction of the dense epochs (none: a constant LR)."""
    if d.optimizer == "sgd":
        primal: torch.optim.Optimizer = torch.optim.SGD(
            model.parameters(), lr=d.lr, momentum=d.momentum, weight_decay=d.weight_decay
        )
    else:
        primal = torch.optim.Adam(model.parameters(), lr=d.lr, weight_decay=d.weight_decay)
    scheduler = step_schedule(primal, d.lr_milestones, d.epochs, d.lr_gamma) if d.lr_milestones else None
    return primal, scheduler


def sparse_optimizer(
    model: torch.nn.Module, f: FinetuneConfig, total_epochs: int
) -> tuple[torch.optim.SGD, Schedule]:
    """The sparse stage's SGD (:func:`build_primal_optimizer`) and its schedule: LR ×
    ``lr_gamma`` at each milestone fraction of the ``total_epochs`` of GMP and fine-tuning
    (a milestone listed twice multiplies twice)."""
    primal = build_primal_optimizer(model, f)
    return primal, step_schedule(primal, f.lr_milestones, total_epochs, f.lr_gamma)


def step_schedule(
    optimizer: torch.optim.Optimizer, fractions: Sequence[float], epochs: int, gamma: float
) -> Schedule:
    """LR × ``gamma`` at epoch ``max(1, round(f · epochs))`` for each milestone fraction ``f``."""
    milestones = sorted(max(1, round(frac * epochs)) for frac in fractions)
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=gamma)
