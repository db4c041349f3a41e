"""The projection as a torch.autograd.Function: the compiled fast path or the numpy solver
forward, and the vector-Jacobian product of the package docstring backward."""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from .checks import check_inputs, inward_bounds, raise_non_finite
from .solver import ACTIVE_REL, TOL_REL, cell_rows, cells, small_solve, solve, z_scale

FAST_ITER = 8  # semismooth Newton steps of the compiled fast path before the numpy solver


_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}


def _to_numpy(tensor: torch.Tensor, dtype: type | None = np.float64) -> np.ndarray:
    """A flat numpy array: a copy in ``dtype``, or with ``dtype=None`` a view where torch allows one
    (few torch calls: each costs microseconds, as much as the arithmetic here)."""
    tensor = tensor.detach()
    if tensor.device.type != "cpu":
        tensor = tensor.cpu()
    if tensor.dtype not in _NUMPY_DTYPES and tensor.is_floating_point():
        tensor = tensor.double()
    out = tensor.numpy()
    return out.reshape(-1) if dtype is None else out.reshape(-1).astype(dtype)


def _to_torch(
    values: np.ndarray, like: torch.Tensor, bounds: tuple[float, float] | None = None
) -> torch.Tensor:
    """``values`` in ``like``'s dtype, shape and device, clamped to the (inward-rounded) bounds."""
    np_dtype = _NUMPY_DTYPES.get(like.dtype)
    if np_dtype is None:  # float16, bfloat16: cast and clamp in torch
        out = torch.from_numpy(values).to(device=like.device, dtype=like.dtype)
        if bounds is not None:
            out = out.clamp(*inward_bounds(bounds, like.dtype))
        return out.reshape(like.shape)
    values = values.astype(np_dtype, copy=False)
    if bounds is not None:
        values = np.clip(values, *inward_bounds(bounds, like.dtype))
    out = torch.from_numpy(values.reshape(like.shape))
    return out if like.device.type == "cpu" else out.to(like.device)


@functools.cache
def _kernels():  # -> the kernels module, or None without numba
    """The compiled fast path (:mod:`.kernels`), imported on first use; None if
    numba is not installed, and the numpy solver handles every instance."""
    try:
        from . import kernels
    except ImportError:
        return None
    except RuntimeError as error:  # e.g. numba finds no writable cache directory
        warnings.warn(f"the compiled projection is unavailable ({error}); using numpy", stacklevel=2)
        return None
    return kernels


def _project_compiled(
    predictions: torch.Tensor, codes: np.ndarray, tolerance: float, bounds: tuple[float, float] | None
) -> tuple[torch.Tensor, np.ndarray, np.ndarray, np.ndarray] | None:
    """(z, cell, tight rows, inside) from one call of the compiled kernel, z in the
    predictions' dtype, shape and device; None where it does not apply (no numba, float16 or
    bfloat16, large codes, not certified within ``FAST_ITER`` steps)."""
    kernels = _kernels()
    if kernels is None or predictions.dtype not in _NUMPY_DTYPES:
        return None
    y = _to_numpy(predictions, dtype=None)
    lb, ub = bounds if bounds is not None else (-math.inf, math.inf)
    lo, hi = inward_bounds(bounds, predictions.dtype) if bounds is not None else (lb, ub)
    status, z, cell, rows, inside = kernels.project(
        y, codes, tolerance, lb, ub, lo, hi, TOL_REL, ACTIVE_REL, FAST_ITER
    )
    if status == kernels.NOT_FINITE:
        raise_non_finite()
    if status != kernels.OK:
        return None
    out = torch.from_numpy(z)  # a view (e.g. by reshape) would cost the autograd engine more than the solve
    out = out if predictions.dim() == 1 else out.reshape(predictions.shape)
    return (out if predictions.device.type == "cpu" else out.to(predictions.device)), cell, rows, inside


def _project_numpy(
    y: np.ndarray, codes: np.ndarray, tolerance: float, bounds: tuple[float, float] | None
) -> tuple[np.ndarray, ...]:
    """(z, cell, tight rows, inside) from the regularized numpy solver (every instance)."""
    if not np.isfinite(y).all():
        raise_non_finite()
    cell, values, counts = cells(codes)
    rows = cell_rows(values, counts, y.size)
    z, multipliers = solve(y, rows[:, cell], tolerance, bounds)
    lb, ub = bounds if bounds is not None else (-math.inf, math.inf)
    u = y - (multipliers @ rows)[cell]
    tight = np.abs(rows @ np.bincount(cell, z, rows.shape[1])) >= tolerance - ACTIVE_REL * z_scale(y, bounds)
    return z, cell, rows[tight], ((u > lb) & (u < ub)).astype(np.float64)


class FairProjectionFunction(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        predictions: torch.Tensor,
        attributes: torch.Tensor,
        tolerance: float,
        bounds: tuple[float, float] | None,
    ) -> torch.Tensor:
        codes = _to_numpy(attributes, dtype=None).reshape(predictions.shape[0], -1)
        codes = codes if codes.dtype == np.int64 else codes.astype(np.int64)
        ctx.like = predictions.detach()
        solved = _project_compiled(predictions, codes, tolerance, bounds)
        if solved is not None:
            out, ctx.cell, ctx.active_rows, ctx.inside = solved
            return out
        z, ctx.cell, ctx.active_rows, ctx.inside = _project_numpy(
            _to_numpy(predictions), codes, tolerance, bounds
        )
        return _to_torch(z, predictions, bounds)

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_out: torch.Tensor
    ) -> tuple[torch.Tensor | None, None, None, None]:
        if (
            torch.is_grad_enabled()
        ):  # backward(create_graph=True): no second derivative, said as torch says it
            return _backward_once(ctx, grad_out)
        return _backward(ctx, grad_out)  # (once_differentiable's wrapper costs as much as the kernel)


def _backward(
    ctx: torch.autograd.function.FunctionCtx, grad_out: torch.Tensor
) -> tuple[torch.Tensor | None, None, None, None]:
    """``D g − D C_Aᵀ (C_A D C_Aᵀ)⁺ C_A D g`` on the cells: ``C_A D g = C_{A,K} Σ_{i∈k} (D g)_i``."""
    rows, inside, cell = ctx.active_rows, ctx.inside, ctx.cell
    kernels = _kernels()
    if kernels is not None and grad_out.dtype in _NUMPY_DTYPES:
        ok, dg = kernels.backward(_to_numpy(grad_out, dtype=None), cell, rows, inside)
        if ok:
            return _to_torch(dg, ctx.like), None, None, None
    dg = inside * _to_numpy(grad_out)
    if rows.shape[0] > 0:
        k = rows.shape[1]
        M, r = (rows * np.bincount(cell, inside, k)) @ rows.T, rows @ np.bincount(cell, dg, k)
        # any solution of the (consistent) system gives the same D C_aᵀ v; dependent rows make M singular,
        # where elimination may fail or lose accuracy: then the pseudo-inverse
        try:
            v = small_solve(M, r)
            if not np.abs(M @ v - r).max() <= 1e-9 * max(1.0, float(np.abs(r).max())):
                raise np.linalg.LinAlgError("inaccurate")
        except np.linalg.LinAlgError:
            v = np.linalg.pinv(M, rcond=1e-10, hermitian=True) @ r
        dg = dg - inside * (v @ rows)[cell]
    return _to_torch(dg, ctx.like), None, None, None


_backward_once = once_differentiable(_backward)


def fair_projection(
    predictions: torch.Tensor,
    attributes: torch.Tensor,
    tolerance: float,
    bounds: tuple[float, float] | None = None,
) -> torch.Tensor:
    """Exact Euclidean projection of ``predictions`` ((b,) or (b, 1)) onto the fairness set; differentiable.

    ``attributes`` is a (b, A) integer tensor of protected-attribute codes, ``tolerance`` is ε ≥ 0 and
    ``bounds`` an optional (lb, ub) box that the output satisfies exactly. Returns the input's shape and
    dtype.
    """
    attributes, tolerance, checked = check_inputs(
        predictions, attributes, tolerance, bounds, check_finite=False
    )
    # the function checks finiteness on its own copy
    return FairProjectionFunction.apply(predictions, attributes, tolerance, checked)


class FairProjection(torch.nn.Module):
    """Module wrapper of :func:`fair_projection` holding ``tolerance`` and ``bounds``."""

    def __init__(self, tolerance: float, bounds: tuple[float, float] | None = None) -> None:
        super().__init__()
        check_inputs(torch.zeros(1), torch.zeros(1, 0, dtype=torch.long), tolerance, bounds)
        self.tolerance = float(tolerance)
        self.bounds = bounds

    def forward(self, predictions: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
        return fair_projection(predictions, attributes, self.tolerance, self.bounds)

    def extra_repr(self) -> str:
        return f"tolerance={self.tolerance}, bounds={self.bounds}"
