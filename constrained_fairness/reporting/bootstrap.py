r"""Seeded, vectorized bootstrap of per-group means.

A resample draws ``n`` row indices uniformly with replacement; resample ``r`` gives row ``i``
the weight ``w_{r,i}`` = the number of times it was drawn. Resamples are drawn in chunks of
``chunk`` rows of ``torch.randint(0, n, (chunk, n))`` from one generator seeded with
``seed`` (the last chunk is shorter), so a loop that draws the same way reproduces them.

For per-sample values ``v_i``, groups ``g_i`` and an optional mask ``m_i`` (the rows that
count, e.g. ``y = 1`` for a true-positive rate), the resampled group means are

    mean_r[g] = Σ_i w_{r,i} m_i v_i 1[g_i = g] / Σ_i w_{r,i} m_i 1[g_i = g]      (NaN if empty),

computed for a whole chunk as two matrix products of the ``(R, n)`` weights with ``(n, G)``
design matrices (no loop over rows or groups; weights and designs in float32, where the
draw counts are exact, ratios in float64). The interval of a statistic is the percentile
interval of its resampled values: the ``(1 − c)/2`` and ``(1 + c)/2`` quantiles for
confidence ``c``, ignoring NaNs.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ..errors import ConfigError


def check_resamples(resamples: int, confidence: float) -> None:
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise ConfigError(f"bootstrap resamples must be an int >= 1, got {resamples!r}; e.g. 1000")
    if not 0 < confidence < 1:
        raise ConfigError(f"bootstrap confidence must lie in (0, 1), got {confidence!r}; e.g. 0.95")


def resample_weights(n: int, resamples: int, seed: int, chunk: int = 128) -> Iterator[torch.Tensor]:
    """``(chunk, n)`` float32 weights of successive resamples (draw counts: exact integers)."""
    generator = torch.Generator().manual_seed(seed)
    for start in range(0, resamples, chunk):
        rows = min(chunk, resamples - start)
        idx = torch.randint(0, n, (rows, n), generator=generator)
        yield torch.zeros(rows, n).scatter_add_(1, idx, torch.ones(rows, n))


def group_design(
    values: torch.Tensor,
    rows: torch.Tensor,
    groups: torch.Tensor,
    n: int,
    num_groups: int,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``(n, G)`` float32 matrix ``D[i, g] = Σ_{m: rows[m] = i, groups[m] = g} v_m m_m``.

    With it, the group sums of every resample are one matrix product, ``weights @ D``;
    ``values`` (and ``mask``) are per membership ``m`` (a row may sit in several groups)."""
    v = values.float() if mask is None else values.float() * mask.float()
    return torch.zeros(n, num_groups).index_put_((rows, groups), v, accumulate=True)


def weighted_group_means(
    weights: torch.Tensor, numerators: torch.Tensor, denominators: torch.Tensor
) -> torch.Tensor:
    """``(R, K)`` ratios ``(w @ numerators) / (w @ denominators)`` in float64; NaN where empty."""
    return (weights @ numerators).double() / (weights @ denominators).double()


def percentile_interval(samples: torch.Tensor, confidence: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower and upper percentile bounds over dim 0, NaN-aware (NaN if every sample is NaN)."""
    q = torch.tensor([(1 - confidence) / 2, (1 + confidence) / 2], dtype=torch.float64)
    bounds = torch.nanquantile(samples.double(), q, dim=0)
    return bounds[0], bounds[1]
