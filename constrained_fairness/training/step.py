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

With ``check_every = N > 1`` (policy ``stop`` only) the guard is deferred: each batch adds
its loss into one device tensor, and :meth:`TrainingStep.verify` reads, once per ``N`` steps,
whether that sum, the multipliers and the parameters are finite, and wherever the caller
needs a verified state: before a checkpoint, at the end of an epoch. (A non-finite
violation shows in the multipliers or, through its gradient, in the parameters; see
:meth:`FairnessProblem.defer_checks`.) So a steady-state step makes no host read for the guard. The
state at the start of each window of ``N`` steps (model, optimizers, multipliers and the
constraints' buffers) is kept on the device; a failed read restores it, then raises. The
``skip`` policy must drop the very batch, so it keeps the check of every step.
"""

from __future__ import annotations

import copy
import enum
from collections.abc import Callable
from typing import Any

import cooper
import torch
from torch.utils import _pytree as pytree

from ..config.choices import NONFINITE_POLICIES
from ..errors import ConfigError, TrainingDiverged
from ..problem import FairnessProblem, NonFiniteBatch
from ..runtime.distributed import all_ranks_flags
from ..sparsity import MagnitudePruner


class TrainingStep:
    """``step(**batch)`` → Cooper's roll-out, or None for a skipped batch.

    Args:
        model: the network whose parameters are checked when a batch is not finite.
        problem: the loss and constraints; ``batch`` holds its ``compute_cmp_state`` arguments.
        optimizer: a Cooper optimizer over ``problem``.
        nonfinite: ``stop`` or ``skip`` (see the module docstring).
        check_every: read the guard once per this many steps (``stop`` only; see the module
            docstring); 1 reads it every step.
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
        check_every: int = 1,
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
        if check_every < 1:
            raise ConfigError(f"check_every must be >= 1, got {check_every}; 1 checks every step")
        self.check_every = check_every if nonfinite == "stop" else 1
        self.unchecked = 0  # steps since the last verified state
        self._verified: dict[str, Any] | None = None  # that state (deferred checks)
        self._copies: list[torch.Tensor] | None = None  # its tensors, allocated once
        problem.defer_checks(self.check_every > 1)

    def __call__(self, **batch: Any) -> cooper.optim.RollOut | None:
        # a batch may be skipped: its constraint statistics (replay buffers, counts) must not stay
        saved = self._constraint_states() if self.nonfinite == "skip" else None
        if self.check_every > 1 and self.unchecked == 0:
            self._verified = self._snapshot()
        try:
            rollout = self.optimizer.roll(compute_cmp_state_kwargs=batch)
        except NonFiniteBatch as exc:  # raised before any parameter or multiplier moved
            self._non_finite(exc, saved)
            return None
        if self.pruner is not None:
            self.pruner.apply()
        if self.check_every > 1:
            self.unchecked += 1
            if self.unchecked >= self.check_every:
                self.verify()
        return rollout

    def verify(self) -> None:
        """Read the deferred guard of the steps since the last read (nothing to do when the
        guard is not deferred). If one of them was not finite, restore the state before
        them and raise :class:`TrainingDiverged`."""
        if self.check_every == 1 or self.unchecked == 0:
            return
        steps, self.unchecked = self.unchecked, 0
        pending = self.problem.pending_finite()
        finite = pending & _parameters_finite(self.model, pending.device)
        self.problem.reset_pending()
        if bool(all_ranks_flags(finite.reshape(1))[0]):
            return
        assert self._verified is not None
        self._restore(self._verified)
        raise TrainingDiverged(
            f"non-finite loss, multipliers or parameters in {self.where()} or one of the "
            f"{steps - 1} steps before it (the guard reads every guards.check_every={self.check_every} "
            f"steps; the model, optimizers and multipliers are back at the state before them); "
            f"{self.advice}, or {self.hint}{self.kept}"
        ) from None

    def _snapshot(self) -> dict[str, Any]:
        """A copy, on the device, of what a step moves: the tensors go into copies made once
        and refreshed with one ``_foreach_copy_`` (a few kernel launches, where a ``deepcopy``
        of the state costs the host milliseconds); other values are immutable or copied."""
        scaler = getattr(self.optimizer, "scaler", None)
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "problem": self.problem.constraint_state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
        }
        leaves, spec = pytree.tree_flatten(state)
        tensors = [leaf.detach() for leaf in leaves if isinstance(leaf, torch.Tensor)]
        copies = self._copies
        if copies is None or [(c.shape, c.dtype, c.device) for c in copies] != [
            (t.shape, t.dtype, t.device) for t in tensors
        ]:
            copies = self._copies = [t.clone() for t in tensors]
        elif tensors:
            torch._foreach_copy_(copies, tensors)
        it = iter(copies)
        leaves = [
            next(it) if isinstance(leaf, torch.Tensor) else leaf if _immutable(leaf) else copy.deepcopy(leaf)
            for leaf in leaves
        ]
        return pytree.tree_unflatten(leaves, spec)

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.problem.load_constraint_state_dict(state["problem"])
        if state["scaler"] is not None:
            self.optimizer.scaler.load_state_dict(state["scaler"])

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


def _parameters_finite(model: torch.nn.Module, device: torch.device) -> torch.Tensor:
    """Device bool, read nothing: are all of the model's parameters finite."""
    with torch.no_grad():
        flags = [torch.isfinite(p).all().to(device) for p in model.parameters()]
    return torch.stack(flags).all() if flags else torch.ones((), dtype=torch.bool, device=device)


def _immutable(value: object) -> bool:
    return value is None or isinstance(value, int | float | complex | str | bytes | bool | enum.Enum)
