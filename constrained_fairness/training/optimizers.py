"""Build Cooper optimizers: unconstrained (NFT) or alternating dual-primal (CEAG, EL)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import cooper
import torch
from cooper.optim import AlternatingDualPrimalOptimizer, UnconstrainedOptimizer, nuPI
from cooper.optim.optimizer import RollOut

from ..config import DualConfig
from ..errors import ConfigError
from ..problem import FairnessProblem

# nuPI builds sparse updates for the IndexedMultiplier; torch warns once that sparse
# invariant checks are off by default, which says nothing actionable to our users.
warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")


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
