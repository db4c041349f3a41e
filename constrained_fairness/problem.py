"""The constrained minimization problem: cross-entropy plus any number of group constraints.

    min_θ  L(θ) = mean_n CE(f_θ(x_n), y_n)   s.t.   c_i(θ) ≤ 0 for every constraint row i

Cooper forms the Lagrangian ``L(θ) + Σ_i λ_i c̃_i(θ)`` for the primal step (proxies
``c̃``) and ``Σ_i λ_i c_i(θ)`` for the dual step (strict violations ``c``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cooper
import torch
import torch.nn.functional as F

from .constraints.base import BatchOutputs, GroupConstraint
from .runtime.distributed import all_ranks_flags
from .runtime.precision import autocast


class NonFiniteBatch(Exception):
    """A batch whose loss, violations or multipliers are not finite; raised by
    :meth:`FairnessProblem.compute_cmp_state`, so before Cooper takes any step.
    ``fatal``: the multipliers themselves are not finite, so skipping cannot help."""

    def __init__(self, what: str, fatal: bool = False) -> None:
        super().__init__(what)
        self.what, self.fatal = what, fatal


Objective = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, BatchOutputs]]
"""``(outputs, targets, attributes)`` → ``(loss, what the constraints see)``: a loss other than
the default cross-entropy, e.g. a ``FairTrainer``'s criterion on a score model's outputs."""


class FairnessProblem(cooper.ConstrainedMinimizationProblem):
    """Cross-entropy (or ``objective``) with the given constraints; with none, plain (naive)
    fine-tuning."""

    def __init__(
        self,
        constraints: Sequence[GroupConstraint] = (),
        names: Sequence[str] | None = None,
        objective: Objective | None = None,
    ) -> None:
        super().__init__()
        self.objective = objective
        self.autocast_dtype: torch.dtype | None = None  # bf16 autocast of the forward pass
        self.channels_last = False  # NHWC memory format for image inputs
        # per-sample loss weights from (targets, attributes), e.g. the reweighting baseline
        self.sample_weights: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
        # deferred finiteness checks (TrainingStep's check_every > 1): each batch adds its loss
        # into pending_loss on the device instead of reading anything (see defer_checks)
        self.deferred = False
        self.pending_loss: torch.Tensor | None = None
        names = list(names) if names is not None else [f"constraint_{i}" for i in range(len(constraints))]
        for name, constraint in zip(names, constraints, strict=True):
            self._register_constraint(name, constraint)

    @property
    def is_constrained(self) -> bool:
        return len(self._constraints) > 0

    def compute_cmp_state(
        self, model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor, attributes: torch.Tensor
    ) -> cooper.CMPState:
        """One forward pass; ``attributes`` are the ``(B, A)`` protected-attribute codes."""
        if self.channels_last and inputs.dim() == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with autocast(inputs.device, self.autocast_dtype):
            logits = model(inputs)
        logits = logits.float()
        if self.objective is not None:
            loss, batch = self.objective(logits, targets, attributes)
        else:
            losses = F.cross_entropy(logits, targets, reduction="none")
            batch = BatchOutputs(logits=logits, targets=targets, attributes=attributes, losses=losses)
        observed = {}
        for constraint in self.constraints():
            state = constraint.compute(batch)
            if state is not None:
                observed[constraint] = state
        if self.objective is None:
            weights = None if self.sample_weights is None else self.sample_weights(targets, attributes)
            loss = losses.mean() if weights is None else (losses * weights).mean()
        self._check_finite(loss, observed)
        return cooper.CMPState(loss=loss, observed_constraints=observed, misc={"batch": batch})

    def use_fixed_shapes(self, on: bool) -> None:
        """Turn the fixed-shape statistics of every statistic constraint on or off (see
        :mod:`.constraints.statistic`)."""
        for constraint in self.constraints():
            if hasattr(constraint, "fixed_shapes"):
                constraint.fixed_shapes = on

    def defer_checks(self, on: bool) -> None:
        """Start (or stop) deferring the finiteness checks.

        Deferred, a batch only adds its loss into :attr:`pending_loss` (two ops, no read),
        and :meth:`pending_finite` tells, on the device, whether that sum and the multipliers
        are finite; the caller reads it with the parameters' check (``TrainingStep.verify``).
        The violations need no check of their own there: a non-finite strict violation makes
        its multiplier non-finite at the dual step (``relu(NaN) = NaN``), and a non-finite
        proxy reaches the parameters through its gradient; both persist until the read."""
        self.deferred, self.pending_loss = on, None

    def pending_finite(self) -> torch.Tensor:
        """Device bool, read nothing: are the deferred losses' sum and the multipliers finite."""
        parts = [c.multiplier.weight.reshape(-1) for c in self.constraints()]
        if self.pending_loss is not None:
            parts.append(self.pending_loss.reshape(1))
        device = parts[0].device if parts else torch.device("cpu")
        return _all_finite(parts, device)

    def reset_pending(self) -> None:
        self.pending_loss = None

    def _check_finite(self, loss: torch.Tensor, observed: dict) -> None:
        """One device sync: are the loss, the violations and the multipliers finite? Under
        DDP the answer is agreed over ranks (one small all-reduce), so that every rank skips
        or stops at the same batch instead of one rank waiting in the gradient all-reduce.
        Deferred (:meth:`defer_checks`): no sync, the loss is added up on the device.

        Everything is concatenated and tested at once (``isfinite`` is four kernels, so one
        test per tensor cost a few dozen ops a step); only a failed test looks at each part,
        to say which one failed."""
        if self.deferred:
            loss = loss.detach()
            self.pending_loss = loss if self.pending_loss is None else self.pending_loss + loss
            return
        parts = [loss.reshape(1)]
        for state in observed.values():
            parts.append(state.violation.reshape(-1))
            if state.strict_violation is not None:
                parts.append(state.strict_violation.reshape(-1))
        multipliers = [c.multiplier.weight.reshape(-1) for c in self.constraints()]
        if bool(all_ranks_flags(_all_finite(parts + multipliers, loss.device).reshape(1))[0]):
            return
        # which part: agreed over ranks too, so that all skip or all stop
        ok = torch.stack([_all_finite(p, loss.device) for p in ([parts[0]], parts[1:], multipliers)])
        loss_ok, _, multipliers_ok = all_ranks_flags(ok).tolist()
        if not multipliers_ok:
            raise NonFiniteBatch("Lagrange multipliers", fatal=True)
        raise NonFiniteBatch("loss" if not loss_ok else "constraint violation")

    def constraint_state_dict(self) -> dict:
        """Multipliers (Cooper's CMP state) plus each constraint's own state (buffers)."""
        return {
            "cmp": self.state_dict(),
            "constraints": {name: c.state_dict() for name, c in self.named_constraints()},
        }

    def load_constraint_state_dict(self, state: dict) -> None:
        self.load_state_dict(state["cmp"])
        for name, c in self.named_constraints():
            c.load_state_dict(state["constraints"][name])

    def multiplier_values(self) -> dict[str, list[float]]:
        return {name: c.multiplier_values().tolist() for name, c in self.named_constraints()}


def _all_finite(tensors: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """One device bool: are all elements of ``tensors`` finite (true for none)."""
    if not tensors:
        return torch.ones((), dtype=torch.bool, device=device)
    with torch.no_grad():
        return torch.isfinite(torch.cat(tensors)).all()
