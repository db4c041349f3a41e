"""Compiled (numba) CPU kernels of CEAG's fixed-shape rows; see :mod:`.ceag_fused`.

A CEAG step's statistics are a few hundred arithmetic operations on a few kilobytes; as
tensor ops they are about eighty dispatches of microseconds each, which on a small model
costs as much as the model's own step (benchmark P1a, ``benchmarks/step_overhead.py``). As
two compiled loops they cost a few microseconds. Each loop does, in ``float32`` and in the
order the tensor ops do, what the tensor path of
:meth:`~.fixed_shapes.FixedShapeStatistics.compute_fixed` does: the results are the same
bits (tested). Import this module only through :func:`.ceag_fused.kernels`, which falls
back to the tensor path when numba is missing.
"""

from __future__ import annotations

import numba
import numpy as np

_jit = numba.njit(cache=True, nogil=True)

OK = -1  # the forward kernel's status when every row's attribute codes are in range


@_jit
def rows_forward(
    logits: np.ndarray,
    targets: np.ndarray,
    codes: np.ndarray,
    losses: np.ndarray,
    cardinalities: np.ndarray,
    strides: np.ndarray,
    storage: np.ndarray,
    pointer: np.ndarray,
    fill: np.ndarray,
    reference: np.ndarray,
    scalars: np.ndarray,
    groups: np.ndarray,
    rows: np.ndarray,
) -> int:
    """CEAG's proxy and strict rows of one batch; the buffer is pushed in place.

    ``reference`` is ``(3, G)``: the dense loss ``L_d[g]``, accuracy ``acc_d[g]`` and the
    overall-estimate weights ``p[g]``; ``scalars`` is ``(L_d, acc_d, ε)`` (float32). Out:
    ``groups (B,)`` and ``rows (3, G)`` float32: the counts, ``proxy`` and ``strict``. Returns
    :data:`OK`, or the first row whose codes are out of range (nothing is written then).

    With ``n[g]`` the batch count, ``S[g] = Σ_{i ∈ g} ℓ_i`` in batch order, the overall mean
    ``L = Σ_g S[g] / max(Σ_g n[g], 1)`` and ``present[g] = n[g] > 0``:
    ``proxy[g] = present[g] · ((S[g] / max(n[g], 1) − L_d[g]) − (L − L_d))``. The batch's
    0/1 correctness goes into the ring buffer (only each group's last ``k``), then with
    ``full[g] = fill[g] = k``, the estimate ``a[g] = Σ_j buf[g, j] / k`` and
    ``ā = Σ_g w[g] a[g] / max(Σ_g w[g], 10⁻¹²)`` over ``w[g] = full[g] · p[g]``:
    ``strict[g] = full[g] · (((acc_d[g] − a[g]) − (acc_d − ā)) − ε)``."""
    b, num_classes = logits.shape
    counts, proxy, strict = rows[0], rows[1], rows[2]
    num_groups = counts.shape[0]
    k = storage.shape[0] // num_groups
    for i in range(b):  # the range check first: a bad row writes nothing
        for a in range(codes.shape[1]):
            if codes[i, a] < 0 or codes[i, a] >= cardinalities[a]:
                return i
    n = np.zeros(num_groups, np.int64)
    sums = np.zeros(num_groups, np.float32)
    for i in range(b):
        g = 0
        for a in range(codes.shape[1]):
            g += codes[i, a] * strides[a]
        groups[i] = g
        n[g] += 1
        sums[g] += losses[i]
    total_sum, total_count = np.float32(0.0), np.float32(0.0)
    for g in range(num_groups):
        counts[g] = np.float32(n[g])
        total_count += counts[g]
        total_sum += sums[g]
    overall = total_sum / max(total_count, np.float32(1.0))
    for g in range(num_groups):
        if n[g] > 0:
            proxy[g] = (sums[g] / max(counts[g], np.float32(1.0)) - reference[0, g]) - (overall - scalars[0])
        else:
            proxy[g] = np.float32(0.0)
    rank = np.zeros(num_groups, np.int64)
    for i in range(b):  # the push: group g keeps its last min(n[g], k) samples
        g = groups[i]
        best, arg = logits[i, 0], 0
        for j in range(1, num_classes):  # arg-max, the first maximum; NaN is the largest
            v = logits[i, j]
            if v > best or (np.isnan(v) and not np.isnan(best)):
                best, arg = v, j
        dropped = n[g] - min(n[g], k)
        if rank[g] >= dropped:
            slot = (pointer[g] + rank[g] - dropped) % k
            storage[g * k + slot] = np.float32(1.0) if arg == targets[i] else np.float32(0.0)
        rank[g] += 1
    weight_sum, weighted = np.float32(0.0), np.float32(0.0)
    estimates = np.zeros(num_groups, np.float32)
    for g in range(num_groups):
        kept = min(n[g], k)
        pointer[g] = (pointer[g] + kept) % k
        fill[g] = min(fill[g] + kept, k)
        total = np.float32(0.0)
        for j in range(k):
            total += storage[g * k + j]
        estimates[g] = total / np.float32(k)
        w = reference[2, g] if fill[g] == k else np.float32(0.0)
        weight_sum += w
        weighted += w * estimates[g]
    overall_estimate = weighted / max(weight_sum, np.float32(1e-12))
    for g in range(num_groups):
        if fill[g] == k:
            gap = (reference[1, g] - estimates[g]) - (scalars[1] - overall_estimate)
            strict[g] = gap - scalars[2]
        else:
            strict[g] = np.float32(0.0)
    return OK


@_jit
def rows_backward(
    grad_proxy: np.ndarray, groups: np.ndarray, counts: np.ndarray, grad_losses: np.ndarray
) -> None:
    """``∂/∂ℓ_i`` of ``Σ_g γ[g] proxy[g]`` for the incoming ``γ = grad_proxy``: with
    ``γ'[g] = present[g] · γ[g]``, ``grad_losses[i] = γ'[g_i] / max(n[g_i], 1) +
    (Σ_g −γ'[g]) / max(Σ_g n[g], 1)``, summed in the order autograd sums the tensor path."""
    num_groups = counts.shape[0]
    total, total_count = np.float32(0.0), np.float32(0.0)
    for g in range(num_groups):
        total_count += counts[g]
        if counts[g] > 0:
            total += -grad_proxy[g]
    shared = total / max(total_count, np.float32(1.0))
    per_group = np.zeros(num_groups, np.float32)
    for g in range(num_groups):
        own = grad_proxy[g] if counts[g] > 0 else np.float32(0.0)
        per_group[g] = own / max(counts[g], np.float32(1.0)) + shared
    for i in range(groups.shape[0]):
        grad_losses[i] = per_group[groups[i]]
