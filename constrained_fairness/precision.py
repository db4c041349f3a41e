"""Device and mixed-precision helpers.

``precision: bf16`` runs forward passes under ``torch.autocast`` in bfloat16 (no loss
scaling needed); ``fp32`` runs in full precision. Losses, constraint statistics and
multipliers are always float32.
"""

from __future__ import annotations

import contextlib

import torch

from .errors import ConfigError

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def autocast_dtype(precision: str) -> torch.dtype | None:
    if precision not in PRECISIONS:
        raise ConfigError(
            f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r} "
            "(fp16 with loss scaling is not supported yet; use bf16)"
        )
    return PRECISIONS[precision]


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` on ``device`` in ``dtype``, or a no-op for full precision."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
