"""CEAG's fixed-shape rows on the CPU as one autograd node over two compiled kernels.

:class:`~.accuracy_gap.ExcessAccuracyGap` with fixed shapes (``guards.fixed_shapes``) uses
this path where it applies, and the tensor path of
:meth:`~.fixed_shapes.FixedShapeStatistics.compute_fixed` everywhere else: on an
accelerator, under DDP, without numba, for other dtypes or groupings. The two give the same
rows, buffer and gradients, bit for bit (``tests/constraints/test_ceag_fused.py``); only the
cost differs, a few microseconds instead of about eighty tensor ops (benchmark P1a).
"""

from __future__ import annotations

import functools
import warnings
from types import ModuleType
from typing import TYPE_CHECKING

import cooper
import numpy as np
import torch

from ..errors import DataError
from ..runtime.distributed import is_distributed
from .base import BatchOutputs

if TYPE_CHECKING:
    from .accuracy_gap import ExcessAccuracyGap


@functools.cache
def kernels() -> ModuleType | None:
    """:mod:`.ceag_kernels`, imported on first use; None without numba (or without a
    writable cache for its compiled code)."""
    try:
        from . import ceag_kernels
    except ImportError:
        return None
    except RuntimeError as error:
        warnings.warn(
            f"the compiled CEAG statistics are unavailable ({error}); using tensor ops", stacklevel=2
        )
        return None
    return ceag_kernels


def applies(constraint: ExcessAccuracyGap, batch: BatchOutputs) -> bool:
    """Whether :func:`compute` can take this batch: CPU, float32, an intersectional grouping,
    int64 codes, one process, and numba there."""
    return (
        batch.losses.device.type == "cpu"
        and batch.logits.dtype == torch.float32
        and batch.losses.dtype == torch.float32
        and batch.attributes.dtype == torch.int64
        and kernels() is not None
        and _arrays(constraint) is not None
        and not is_distributed()
    )


def compute(constraint: ExcessAccuracyGap, batch: BatchOutputs) -> cooper.ConstraintState:
    """The constraint state of :meth:`~.fixed_shapes.FixedShapeStatistics.compute_fixed`."""
    proxy, strict = _Rows.apply(batch.losses, batch, constraint)
    return constraint._state(proxy, strict)


class _Rows(torch.autograd.Function):
    """``losses → (proxy (G,), strict (G,))``; the gradient flows to the losses only."""

    @staticmethod
    def forward(ctx, losses: torch.Tensor, batch: BatchOutputs, constraint: ExcessAccuracyGap):
        codes = constraint.grouping._selected(batch.attributes)
        groups, rows = np.empty(len(losses), np.int64), np.empty((3, constraint.num_groups), np.float32)
        status = kernels().rows_forward(
            batch.logits.detach().numpy(),
            batch.targets.numpy(),
            codes.numpy(),
            losses.detach().numpy(),
            *_arrays(constraint),
            *_reference(constraint),
            groups,
            rows,
        )
        if status != kernels().OK:
            raise DataError(
                f"attribute codes out of range in batch row {status}: {codes[status].tolist()}; codes must "
                f"lie in [0, number of values) = {list(constraint.grouping.index.cardinalities)}"
            )
        ctx.groups, ctx.counts = groups, rows[0]
        proxy, strict = torch.from_numpy(rows[1]), torch.from_numpy(rows[2])
        ctx.mark_non_differentiable(strict)
        return proxy, strict

    @staticmethod
    def backward(ctx, grad_proxy: torch.Tensor, grad_strict: torch.Tensor):
        grad_losses = np.empty(len(ctx.groups), np.float32)
        kernels().rows_backward(grad_proxy.contiguous().numpy(), ctx.groups, ctx.counts, grad_losses)
        return torch.from_numpy(grad_losses), None, None


def _arrays(constraint: ExcessAccuracyGap) -> tuple[np.ndarray, ...] | None:
    """The kernels' fixed arguments, made once per constraint: the grouping's cardinalities
    and strides, and numpy views of the replay buffer's storage, pointers and fills (the
    same memory: the buffer's tensors are updated in place, never replaced); None where the
    kernels do not apply to the constraint."""
    cached = constraint.__dict__.get("_fused_arrays", False)
    if cached is False:
        buffer, index = constraint.buffer, constraint.grouping.index
        usable = (
            constraint.grouping.mode == "intersectional"
            and buffer.storage.dtype == torch.float32
            and buffer.storage.device.type == "cpu"
        )
        cached = (
            (
                np.asarray(index.cardinalities, np.int64),
                np.asarray(index.strides, np.int64),
                buffer.storage.numpy(),
                buffer.pointer.numpy(),
                buffer.fill.numpy(),
            )
            if usable
            else None
        )
        constraint.__dict__["_fused_arrays"] = cached
    return cached


def _reference(constraint: ExcessAccuracyGap) -> tuple[np.ndarray, np.ndarray]:
    """``(3, G)`` (L_d[g], acc_d[g], p[g]) and ``(L_d, acc_d, ε)`` as float32, the values the
    tensor path reads; made again only when one of them changed (tensor version counters)."""
    ref, frequency = constraint.reference, constraint.frequency
    tensors = (ref.loss, ref.accuracy, frequency)
    key = (
        id(ref.loss),
        ref.loss._version,
        id(ref.accuracy),
        ref.accuracy._version,
        id(frequency),
        frequency._version,
        ref.overall_loss,
        ref.overall_accuracy,
        constraint.tolerance,
    )
    cache = constraint.__dict__.setdefault("_fused_constants", {})
    if cache.get("key") != key:
        rows = torch.stack(tensors).to(torch.float32).cpu()
        scalars = np.asarray([ref.overall_loss, ref.overall_accuracy, constraint.tolerance], np.float32)
        cache["key"], cache["reference"] = key, (np.ascontiguousarray(rows.numpy()), scalars)
    return cache["reference"]
