"""The names of a data set's splits, and the held-out fractions shared by every loader."""

from __future__ import annotations

import math

from ..errors import DataError

SPLITS: tuple[str, ...] = ("train", "val", "test")
"""Every split a run can have, in order (a run without validation data has train and test)."""


def check_fraction(name: str, value: float) -> float:
    """Return ``value`` as a float if it lies strictly between 0 and 1, else raise DataError."""
    try:
        fraction = float(value)
    except (TypeError, ValueError):
        fraction = math.nan
    if not 0.0 < fraction < 1.0:
        raise DataError(f"{name}={value!r} is not a fraction strictly between 0 and 1; use e.g. {name}=0.2")
    return fraction


def held_out_count(fraction: float, n: int) -> int:
    """Items of a held-out split: ``fraction * n`` rounded half up, at least one."""
    return max(1, math.floor(fraction * n + 0.5))
