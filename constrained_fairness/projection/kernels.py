"""Compiled (numba) kernels of the projection's fast path; see :mod:`constrained_fairness.projection`.

At b = 256 the projection is a few hundred arithmetic operations on a few kilobytes: as numpy
calls, dispatch outweighs the arithmetic; as compiled loops it does not (benchmark P3,
``benchmarks/projection_speed.py``, measures both). The kernels cover the common case:
attribute codes of a small range (``(max − min + 1)^A ≤ 4b + 64``), solved by semismooth Newton
within ``max_iter`` steps. Anything else returns a status, and :mod:`.function` runs the numpy
solver, which handles every instance. Import this module only through
:func:`.function._kernels`, which falls back when numba is missing.

Notation as in :mod:`constrained_fairness.projection`: cells ``k`` are the distinct attribute rows,
``C_K`` the (m, K) constraint rows on the cells, ``C = C_K[:, cell]``, ``u = ŷ − Cᵀλ``, ``z = clip(u)``.
"""

from __future__ import annotations

import numba
import numpy as np

OK, NOT_CERTIFIED, NOT_FINITE, CODES_NOT_SMALL = 0, 1, 2, 3

_jit = numba.njit(cache=True, nogil=True)


@_jit
def cells_and_rows(codes: np.ndarray, b: int) -> tuple[int, np.ndarray, np.ndarray]:
    """``(status, cell (b,), C_K (m, K))`` for (b, A) int64 codes; the rows are those of
    :func:`.projection._cell_rows` (values in sorted order; a 2-valued attribute gives
    ``1/n_first`` vs ``−1/n_second``, a k-valued one ``1[v]/n_v − 1/b`` per value)."""
    width = codes.shape[1]
    cell = np.zeros(b, dtype=np.int64)
    if width == 0:
        return OK, cell, np.zeros((0, 1))
    low, high = codes[0, 0], codes[0, 0]
    for i in range(b):
        for j in range(width):
            low = min(low, codes[i, j])
            high = max(high, codes[i, j])
    if float(high) - float(low) + 1.0 > 4 * b + 64:  # in float: high − low may overflow int64
        return CODES_NOT_SMALL, cell, np.zeros((0, 1))
    radix = high - low + 1
    size = 1
    for _ in range(width):
        size *= radix
        if size > 4 * b + 64:
            return CODES_NOT_SMALL, cell, np.zeros((0, 1))
    table = np.zeros(size, dtype=np.int64)
    value_counts = np.zeros((width, radix))
    for i in range(b):
        raw = 0
        for j in range(width):
            value = codes[i, j] - low
            raw = raw * radix + value
            value_counts[j, value] += 1.0
        cell[i] = raw
        table[raw] += 1
    lookup = np.full(size, -1, dtype=np.int64)
    num_cells = 0
    for raw in range(size):
        if table[raw]:
            lookup[raw] = num_cells
            num_cells += 1
    cell_values = np.zeros((num_cells, width), dtype=np.int64)
    for raw in range(size):
        if table[raw]:
            rest = raw
            for j in range(width - 1, -1, -1):
                cell_values[lookup[raw], j] = rest % radix
                rest //= radix
    for i in range(b):
        cell[i] = lookup[cell[i]]
    num_rows = 0
    for j in range(width):
        present = 0
        for v in range(radix):
            present += value_counts[j, v] > 0
        num_rows += 1 if present == 2 else (present if present > 2 else 0)
    rows = np.zeros((num_rows, num_cells))
    row = 0
    for j in range(width):
        order = np.full(radix, -1, dtype=np.int64)  # value -> its rank among the present values
        present = 0
        for v in range(radix):
            if value_counts[j, v] > 0:
                order[v] = present
                present += 1
        if present < 2:
            continue
        for c in range(num_cells):
            v = cell_values[c, j]
            if present == 2:
                rows[row, c] = 1.0 / value_counts[j, v] if order[v] == 0 else -1.0 / value_counts[j, v]
            else:
                for w in range(radix):
                    if order[w] >= 0:
                        rows[row + order[w], c] = (1.0 / value_counts[j, v] if w == v else 0.0) - 1.0 / b
        row += 1 if present == 2 else present
    return OK, cell, rows


@_jit
def _solve_dense(a: np.ndarray, x: np.ndarray) -> bool:
    """Solve a·v = x in place (x becomes v) by Gaussian elimination with partial pivoting;
    False if a pivot is below ``1e-12·max|a|`` (singular up to rounding, e.g. dependent rows)."""
    n = x.size
    limit = 0.0
    for i in range(n):
        for j in range(n):
            limit = max(limit, abs(a[i, j]))
    limit *= 1e-12
    for k in range(n):
        p = k
        for i in range(k + 1, n):
            if abs(a[i, k]) > abs(a[p, k]):
                p = i
        if not abs(a[p, k]) > limit:
            return False
        if p != k:
            for j in range(n):
                a[k, j], a[p, j] = a[p, j], a[k, j]
            x[k], x[p] = x[p], x[k]
        for i in range(k + 1, n):
            f = a[i, k] / a[k, k]
            for j in range(k, n):
                a[i, j] -= f * a[k, j]
            x[i] -= f * x[k]
    for k in range(n - 1, -1, -1):
        total = x[k]
        for j in range(k + 1, n):
            total -= a[k, j] * x[j]
        x[k] = total / a[k, k]
    return True


@_jit
def _newton_step(rows, counts, r, multipliers, sign, tolerance) -> tuple[bool, np.ndarray]:
    """λ' with ``H_AA (λ'_A − λ_A) = r_A − σ_A ε`` and ``λ'_j = 0`` off A = {σ ≠ 0}. Where the
    tight rows are dependent (all k rows of a k-valued attribute: ``Σ_v n_v c_v = 0``), the
    least violated row entering at ``λ_j = 0`` is left out, until the system is regular."""
    m, num_cells = rows.shape
    sign = sign.copy()
    while True:
        active = 0
        for j in range(m):
            active += sign[j] != 0.0
        index = np.empty(active, dtype=np.int64)
        n = 0
        for j in range(m):
            if sign[j] != 0.0:
                index[n] = j
                n += 1
        hessian, step = np.empty((active, active)), np.empty(active)
        for p in range(active):
            jp = index[p]
            step[p] = r[jp] - tolerance * sign[jp]
            for q in range(active):
                jq = index[q]
                total = 0.0
                for c in range(num_cells):
                    total += rows[jp, c] * counts[c] * rows[jq, c]
                hessian[p, q] = total
        if _solve_dense(hessian, step):
            new = np.zeros(m)
            for p in range(active):
                j = index[p]
                value = multipliers[j] + step[p]
                if not np.isfinite(value):
                    return False, new
                new[j] = value if value * sign[j] >= 0.0 else 0.0  # crossed zero: the row leaves
            return True, new
        drop, least = -1, np.inf
        for j in range(m):
            if sign[j] != 0.0 and multipliers[j] == 0.0 and abs(r[j]) - tolerance < least:
                drop, least = j, abs(r[j]) - tolerance
        if drop < 0:
            return False, multipliers
        sign[drop] = 0.0


@_jit
def _evaluate(y, cell, rows, multipliers, lb, ub, z, inside, sums, counts, r) -> None:
    """z = clip(u) for u = ŷ − Cᵀλ, inside = 1[lb < u < ub], and r = C z; ``sums``/``counts``
    receive the per-cell sums of z and of ``inside``."""
    m, num_cells = rows.shape
    shift = np.zeros(num_cells)
    for j in range(m):
        for c in range(num_cells):
            shift[c] += multipliers[j] * rows[j, c]
    sums[:] = 0.0
    counts[:] = 0.0
    for i in range(y.size):
        c = cell[i]
        value = y[i] - shift[c]
        if value <= lb:
            z[i], inside[i] = lb, 0.0
        elif value >= ub:
            z[i], inside[i] = ub, 0.0
        else:
            z[i], inside[i] = value, 1.0
            counts[c] += 1.0
        sums[c] += z[i]
    for j in range(m):
        total = 0.0
        for c in range(num_cells):
            total += rows[j, c] * sums[c]
        r[j] = total


@_jit
def newton(
    y: np.ndarray,
    cell: np.ndarray,
    rows: np.ndarray,
    tolerance: float,
    lb: float,
    ub: float,
    tol: float,
    active_tol: float,
    max_iter: int,
) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """Semismooth Newton on the dual (see the module docstring of :mod:`.projection`):
    ``(status, z, inside, tight)`` with ``tight[j] = |c_j·z| ≥ ε − active_tol``.

    Rows with ``σ_j = sign λ_j ≠ 0``, or violated at ``λ_j = 0`` (``σ_j = sign r_j``), are
    held tight; one Newton step solves ``r_A(λ') = σ_A ε`` on the current piece, with the
    Jacobian ``−C_A diag(N) C_Aᵀ``; a row whose multiplier changes sign leaves. The step is
    taken whole when the dual ``f = −ψ + ε‖λ‖₁`` still descends at its end, else up to the
    root of ``φ'(α) = d f(λ + α d)/dα`` (non-decreasing: f is convex). Stop when
    ``max_j max(|min(λ⁺_j, ε − r_j)|, |min(λ⁻_j, ε + r_j)|) ≤ tol``, the stopping rule of
    the numpy solver, so both certify the same optimality."""
    m, num_cells = rows.shape
    b = y.size
    z, inside = np.empty(b), np.empty(b)
    sums, counts, r = np.empty(num_cells), np.empty(num_cells), np.empty(m)
    multipliers, sign = np.zeros(m), np.zeros(m)
    tight = np.zeros(m, dtype=np.bool_)
    _evaluate(
        y, cell, rows, multipliers, lb, ub, z, inside, sums, counts, r
    )  # then kept current with multipliers
    for _ in range(max_iter):
        residual = 0.0
        for j in range(m):
            plus = abs(min(max(multipliers[j], 0.0), tolerance - r[j]))
            minus = abs(min(max(-multipliers[j], 0.0), tolerance + r[j]))
            residual = max(residual, plus, minus)
        if residual <= tol:
            for j in range(m):
                tight[j] = abs(r[j]) >= tolerance - active_tol
            return OK, z, inside, tight
        for j in range(m):
            if multipliers[j] != 0.0:
                sign[j] = 1.0 if multipliers[j] > 0.0 else -1.0
            elif abs(r[j]) > tolerance:
                sign[j] = 1.0 if r[j] > 0.0 else -1.0
            else:
                sign[j] = 0.0
        ok, target = _newton_step(rows, counts, r, multipliers, sign, tolerance)
        if not ok:
            return NOT_CERTIFIED, z, inside, tight
        step = target - multipliers
        slope0 = _slope(r, multipliers, step, tolerance)
        if not slope0 < 0.0:  # not a descent direction of the dual: leave it to the numpy solver
            return NOT_CERTIFIED, z, inside, tight
        # the full step if the dual still descends at its end; else a line search for the root of
        # φ'(α), non-decreasing (f is convex) and piecewise linear: regula falsi, Illinois variant
        _evaluate(y, cell, rows, target, lb, ub, z, inside, sums, counts, r)
        slope1 = _slope(r, target, step, tolerance)
        if slope1 <= 1e-9 * abs(slope0):
            multipliers = target
            continue
        low, high, f_low, f_high, side = 0.0, 1.0, slope0, slope1, 0
        alpha = 0.5
        for _ in range(30):
            alpha = low - f_low * (high - low) / (f_high - f_low)
            trial = multipliers + alpha * step
            _evaluate(y, cell, rows, trial, lb, ub, z, inside, sums, counts, r)
            f_alpha = _slope(r, trial, step, tolerance)
            if abs(f_alpha) <= 1e-12 * abs(slope0) or high - low <= 1e-12:
                break
            if f_alpha > 0.0:
                high, f_high = alpha, f_alpha
                if side == 1:
                    f_low *= 0.5
                side = 1
            else:
                low, f_low = alpha, f_alpha
                if side == -1:
                    f_high *= 0.5
                side = -1
        multipliers = multipliers + alpha * step  # the state was last evaluated there
    return NOT_CERTIFIED, z, inside, tight


@_jit
def _slope(r: np.ndarray, multipliers: np.ndarray, step: np.ndarray, tolerance: float) -> float:
    """φ'(α⁺), the right derivative of the dual objective ``f = −ψ + ε‖λ‖₁`` along ``step`` at
    ``multipliers`` (= λ + α·step), with ``r = C z(multipliers)`` (∇(−ψ) = −r)."""
    total = 0.0
    for j in range(multipliers.size):
        if multipliers[j] > 0.0:
            direction = 1.0
        elif multipliers[j] < 0.0:
            direction = -1.0
        else:
            direction = 1.0 if step[j] > 0.0 else (-1.0 if step[j] < 0.0 else 0.0)
        total += (tolerance * direction - r[j]) * step[j]
    return total


@_jit
def project(
    y: np.ndarray,
    codes: np.ndarray,
    tolerance: float,
    lb: float,
    ub: float,
    lo_out: float,
    hi_out: float,
    tol_rel: float,
    active_rel: float,
    max_iter: int,
) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The whole forward pass in one call: ``(status, z, cell, tight rows, inside)``.

    ``y`` is float32 or float64 (computed in float64); ``z`` comes back in ``y``'s dtype,
    clipped to ``[lo_out, hi_out]``, the bounds rounded inwards to that dtype, so they hold
    exactly. The tolerances scale with :func:`.projection._z_scale`: ``max(1, |lb|, |ub|)``,
    and ``max|ŷ|`` too where a side is unbounded."""
    b = y.size
    values = np.empty(b)
    bounded = np.isfinite(lb) and np.isfinite(ub)
    scale = max(1.0, abs(lb) if np.isfinite(lb) else 0.0, abs(ub) if np.isfinite(ub) else 0.0)
    for i in range(b):
        values[i] = y[i]
        if not np.isfinite(values[i]):
            return NOT_FINITE, y.copy(), np.zeros(b, dtype=np.int64), np.zeros((0, 1)), values
        if not bounded:
            scale = max(scale, abs(values[i]))
    status, cell, rows = cells_and_rows(codes, b)
    if status != OK:
        return status, y.copy(), cell, rows, values
    status, z, inside, tight = newton(
        values, cell, rows, tolerance, lb, ub, tol_rel * scale, active_rel * scale, max_iter
    )
    out = np.empty_like(y)
    for i in range(b):
        out[i] = z[i]  # rounded to y's dtype, then clipped to bounds representable in it
        out[i] = min(max(out[i], lo_out), hi_out)
    return status, out, cell, rows[tight], inside


@_jit
def backward(
    grad: np.ndarray, cell: np.ndarray, rows: np.ndarray, inside: np.ndarray
) -> tuple[bool, np.ndarray]:
    """``(ok, D g − D C_Aᵀ v)`` with ``(C_A D C_Aᵀ) v = C_A D g`` for the tight rows ``rows``
    (m_A, K), in ``grad``'s dtype (computed in float64); ok is False when that system is
    singular or solved inaccurately (then the caller uses the pseudo-inverse)."""
    m, num_cells = rows.shape
    dg = np.empty(grad.size)
    for i in range(grad.size):
        dg[i] = grad[i] * inside[i]
    out = np.empty_like(grad)
    if m > 0:
        sums, counts = np.zeros(num_cells), np.zeros(num_cells)
        for i in range(dg.size):
            sums[cell[i]] += dg[i]
            counts[cell[i]] += inside[i]
        system, rhs = np.empty((m, m)), np.empty(m)
        for p in range(m):
            total = 0.0
            for c in range(num_cells):
                total += rows[p, c] * sums[c]
            rhs[p] = total
            for q in range(m):
                total = 0.0
                for c in range(num_cells):
                    total += rows[p, c] * counts[c] * rows[q, c]
                system[p, q] = total
        v = rhs.copy()
        if not _solve_dense(system.copy(), v):
            return False, out
        scale = 1.0
        for p in range(m):
            scale = max(scale, abs(rhs[p]))
        for p in range(m):
            total = 0.0
            for q in range(m):
                total += system[p, q] * v[q]
            if not abs(total - rhs[p]) <= 1e-9 * scale:
                return False, out
        shift = np.zeros(num_cells)
        for p in range(m):
            for c in range(num_cells):
                shift[c] += v[p] * rows[p, c]
        for i in range(dg.size):
            dg[i] -= inside[i] * shift[cell[i]]
    for i in range(dg.size):
        out[i] = dg[i]
    return True, out
