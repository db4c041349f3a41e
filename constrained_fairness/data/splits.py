"""Splits: their names, the held-out fractions, and the seeded split of a data set's items
(:func:`split_indices`; :func:`reference_split_indices` is the paper code's UTKFace split)."""

from __future__ import annotations

import math

import numpy as np

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


def split_indices(
    n: int, *, seed: int, val_fraction: float, test_fraction: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded train / val / test indices into ``range(n)``, each sorted ascending.

    With ``perm = numpy.random.default_rng(seed).permutation(n)``: if ``test_fraction`` is given, test is
    the first ``round(test_fraction * n)`` entries of ``perm``; val is the first ``round(val_fraction * m)``
    of the ``m`` remaining entries and train the rest. Without ``test_fraction`` (a data set with its own
    test files) test is empty. Held-out sizes are rounded half up with at least one item;
    ``val_fraction = 0`` gives an empty val split (train on all the non-test items).
    """
    try:
        rng = np.random.default_rng(seed)
    except (TypeError, ValueError) as exc:
        raise DataError(f"seed={seed!r} is not a valid random seed; use a non-negative integer") from exc
    perm = rng.permutation(n)
    test = np.zeros(0, dtype=np.int64)
    if test_fraction is not None:
        n_test = held_out_count(check_fraction("test_fraction", test_fraction), n)
        test, perm = perm[:n_test], perm[n_test:]
    train, val = _carve_val(perm, val_fraction, n, test_fraction)
    return train, val, np.sort(test)


def reference_split_indices(
    n: int, *, test_fraction: float = 0.2, val_fraction: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The paper code's UTKFace split, then (optionally) a seeded validation split of its train part.

    ``perm = numpy.random.RandomState(1357).permutation(n)`` over the sorted valid files; test is
    ``perm[:int(test_fraction * n)]`` (truncated, not rounded) and train the rest, exactly as
    ``src/datasets/utkface.py`` of ``merajhashemi/balancing-act``. The reference trains on all of it
    (``val_fraction = 0``); a positive ``val_fraction`` (the honest NFT+ES option) takes val from the
    front of the rest of that permutation, so test stays the paper's. Each split is sorted ascending.
    """
    perm = np.random.RandomState(1357).permutation(n)
    n_test = int(check_fraction("test_fraction", test_fraction) * n)
    test, rest = perm[:n_test], perm[n_test:]
    train, val = _carve_val(rest, val_fraction, n, test_fraction)
    return train, val, np.sort(test)


def _carve_val(
    perm: np.ndarray, val_fraction: float, n: int, test_fraction: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``(train, val)`` of the permuted items ``perm``: val is the first ``val_fraction`` share
    (rounded half up, at least one item), none when ``val_fraction == 0``."""
    if val_fraction == 0:
        val, train = perm[:0], perm
    else:
        n_val = held_out_count(check_fraction("val_fraction", val_fraction), len(perm))
        val, train = perm[:n_val], perm[n_val:]
    if len(train) == 0:
        raise DataError(
            f"the train split is empty ({n} items, val_fraction={val_fraction}, "
            f"test_fraction={test_fraction}); supply more data or lower the fractions"
        )
    return np.sort(train), np.sort(val)
