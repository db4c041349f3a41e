"""Validation of the projection's public inputs, and bounds rounded inwards to a dtype."""

from __future__ import annotations

import functools
import math

import torch

from ..errors import ConfigError, DataError


def raise_non_finite() -> None:
    raise DataError("predictions contain NaN or inf; fix the model outputs before projecting")


def check_inputs(
    predictions: torch.Tensor,
    attributes: torch.Tensor,
    tolerance: float,
    bounds: tuple[float, float] | None,
    check_finite: bool = True,
) -> tuple[torch.Tensor, float, tuple[float, float] | None]:
    """Validate the public inputs; return attributes on the predictions' device, ε and float bounds."""
    if not isinstance(predictions, torch.Tensor) or not predictions.is_floating_point():
        raise DataError(
            f"predictions must be a floating-point torch.Tensor, got {type(predictions).__name__}"
            f"{'' if not isinstance(predictions, torch.Tensor) else ' of dtype ' + str(predictions.dtype)}; "
            "pass model outputs as a float tensor"
        )
    if not (predictions.dim() == 1 or (predictions.dim() == 2 and predictions.shape[1] == 1)):
        raise DataError(
            f"predictions must have shape (b,) or (b, 1), got {tuple(predictions.shape)}; "
            "project one output column at a time"
        )
    b = predictions.shape[0]
    if b < 1:
        raise DataError("predictions is empty (b = 0); pass a batch with at least one prediction")
    if check_finite and not bool(torch.isfinite(predictions).all()):
        raise_non_finite()
    if not isinstance(attributes, torch.Tensor) or attributes.is_floating_point() or attributes.is_complex():
        raise DataError(
            f"attributes must be an integer torch.Tensor of shape (b, A), got "
            f"{getattr(attributes, 'dtype', type(attributes).__name__)}; encode attribute values as integers"
        )
    if attributes.dim() != 2 or attributes.shape[0] != b:
        raise DataError(
            f"attributes must have shape (b, A) = ({b}, A), got {tuple(attributes.shape)}; "
            "use attributes.reshape(b, -1) (one column per protected attribute)"
        )
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not math.isfinite(tolerance):
        raise ConfigError(f"tolerance must be a finite number >= 0, got {tolerance!r}; e.g. tolerance=0.05")
    if tolerance < 0:
        raise ConfigError(f"tolerance must be >= 0, got {tolerance!r}; use a non-negative gap, e.g. 0.05")
    return attributes.to(predictions.device), float(tolerance), check_bounds(bounds)


def check_bounds(bounds: tuple[float, float] | None) -> tuple[float, float] | None:
    """``(lb, ub)`` as floats with ``lb < ub``, or None; a one-line ConfigError otherwise."""
    if bounds is None:
        return None
    try:
        lb, ub = (float(v) for v in bounds)
    except (TypeError, ValueError):
        raise ConfigError(
            f"prediction_bounds must be a pair (lb, ub) of numbers or None, got {bounds!r}; e.g. (0.0, 1.0)"
        ) from None
    if math.isnan(lb) or math.isnan(ub) or not lb < ub:
        raise ConfigError(
            f"prediction_bounds lb must be < ub, got {bounds!r}; e.g. prediction_bounds=(0.0, 1.0)"
        )
    return lb, ub


@functools.lru_cache(maxsize=64)
def inward_bounds(bounds: tuple[float, float], dtype: torch.dtype) -> tuple[float, float]:
    """Bounds representable in ``dtype`` that lie inside [lb, ub], so clamping in ``dtype`` is exact."""
    lb, ub = bounds
    lo = torch.tensor(lb, dtype=torch.float64).to(dtype)
    hi = torch.tensor(ub, dtype=torch.float64).to(dtype)
    if float(lo) < lb:
        lo = torch.nextafter(lo, torch.tensor(math.inf, dtype=dtype))
    if float(hi) > ub:
        hi = torch.nextafter(hi, torch.tensor(-math.inf, dtype=dtype))
    if not float(lo) <= float(hi):
        raise ConfigError(
            f"prediction_bounds {bounds!r} contain no {dtype} value; widen them or use float64 predictions"
        )
    return float(lo), float(hi)
