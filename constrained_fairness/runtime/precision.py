"""Device and mixed-precision helpers.

``precision: bf16`` runs forward passes under ``torch.autocast`` in bfloat16 (no loss
scaling needed); ``fp16`` in float16 with a ``GradScaler`` on the primal backward;
``fp32`` runs in full precision. Losses, constraint statistics and
multipliers are always float32.
"""

from __future__ import annotations

import contextlib

import torch

from ..config.choices import PRECISIONS as PRECISION_NAMES
from ..errors import ConfigError

PRECISIONS = dict(zip(PRECISION_NAMES, (None, torch.bfloat16, torch.float16), strict=True))


def autocast_dtype(precision: str) -> torch.dtype | None:
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return PRECISIONS[precision]


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A loss scaler for fp16 (whose gradients underflow without one); ``None`` otherwise."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` on ``device`` in ``dtype``, or a no-op for full precision."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
