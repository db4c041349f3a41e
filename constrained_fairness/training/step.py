"""One optimisation step, the same for the protocol's :class:`~.trainer.Trainer` and the
``fairness_training``-style :class:`~constrained_fairness.fair_api.FairTrainer`:

1. Cooper's ``roll``: one forward pass of the :class:`FairnessProblem`, then (with
   constraints) the dual step at ``θ_t`` and the primal step at ``θ_t`` with the new
   multipliers, or (without) the primal step alone;
2. the finiteness guard: the problem raises :class:`NonFiniteBatch` before any parameter
   or multiplier moves; policy ``stop`` raises a one-line :class:`TrainingDiverged`, policy
   ``skip`` restores the constraints' own state (replay buffers, counts) as it was before
   the batch, counts the batch and goes on;
3. the pruning masks re-applied to the weights the step moved.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cooper
import torch

from ..config.choices import NONFINITE_POLICIES
from ..errors import ConfigError, TrainingDiverged
from ..problem import FairnessProblem, NonFiniteBatch
from ..sparsity import MagnitudePruner


class TrainingStep:
    """``step(**batch)`` → Cooper's roll-out, or None for a skipped batch.

    Args:
        model: the network whose parameters are checked when a batch is not finite.
        problem: the loss and constraints; ``batch`` holds its ``compute_cmp_state`` arguments.
        optimizer: a Cooper optimizer over ``problem``.
        nonfinite: ``stop`` or ``skip`` (see the module docstring).
        pruner: optional; its masks are re-applied after each step.
        where: names the current position for messages, e.g. ``stage 'ceag', epoch 3, batch 7``.
        hint: the config change that turns on skipping, appended to the ``stop`` message.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        problem: FairnessProblem,
        optimizer: cooper.optim.CooperOptimizer,
        *,
        nonfinite: str = "stop",
        pruner: MagnitudePruner | None = None,
        where: Callable[[], str] = lambda: "training",
        hint: str = "set guards.nonfinite: skip",
        advice: str = "lower the learning rate or the dual learning rate (e.g. ceag.dual.lr)",
        kept: str = "; the last good checkpoint is kept "
        "(resume it with --resume auto --force after changing the config)",
    ) -> None:
        if nonfinite not in NONFINITE_POLICIES:
            raise ConfigError(f"nonfinite must be stop or skip, got {nonfinite!r}")
        self.model, self.problem, self.optimizer = model, problem, optimizer
        self.nonfinite, self.pruner, self.where = nonfinite, pruner, where
        self.hint, self.advice, self.kept = hint, advice, kept
        self.skipped = 0  # batches dropped by the ``skip`` policy

    def __call__(self, **batch: Any) -> cooper.optim.RollOut | None:
        # a batch may be skipped: its constraint statistics (replay buffers, counts) must not stay
        saved = self._constraint_states() if self.nonfinite == "skip" else None
        try:
            rollout = self.optimizer.roll(compute_cmp_state_kwargs=batch)
        except NonFiniteBatch as exc:  # raised before any parameter or multiplier moved
            self._non_finite(exc, saved)
            return None
        if self.pruner is not None:
            self.pruner.apply()
        return rollout

    def _constraint_states(self) -> dict[str, dict]:
        """Each constraint's own state (buffers, counts), copied."""
        return {name: c.state_dict() for name, c in self.problem.named_constraints()}

    def _non_finite(self, exc: NonFiniteBatch, saved: dict[str, dict] | None) -> None:
        """Skip the batch (``skip`` policy: the constraint states go back to ``saved``, taken
        before it), or raise :class:`TrainingDiverged`. Cooper's ``roll`` has zeroed the
        gradients before the forward pass and taken no step, so nothing else moved."""
        what = exc.what
        weights_ok = all(bool(torch.isfinite(p).all()) for p in self.model.parameters())
        if not weights_ok:
            what = f"{what} (the model's parameters are no longer finite)"
        if self.nonfinite == "skip" and not exc.fatal and weights_ok:
            assert saved is not None
            for name, constraint in self.problem.named_constraints():
                constraint.load_state_dict(saved[name])
            self.skipped += 1
            return
        hint = "" if exc.fatal or not weights_ok else f", or {self.hint}"
        raise TrainingDiverged(
            f"non-finite {what} in {self.where()}; {self.advice}{hint}{self.kept}"
        ) from None
