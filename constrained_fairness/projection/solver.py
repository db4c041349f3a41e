"""The numpy solver of the projection QP: constraint rows on the cells, and the regularized
Newton method on the dual (the algorithm of the package docstring, steps 1-5)."""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import DataError

MAX_ITER = 500
TOL_REL = 1e-11
ACTIVE_REL = 1e-8
CHECK_ABS = 1e-6


def z_scale(y: np.ndarray, bounds: tuple[float, float] | None) -> float:
    """Magnitude of the solution z: max(1, |lb|, |ub|) over the finite bounds, and max|ŷ| too
    where a side is unbounded (no bounds, or one infinite)."""
    lb, ub = bounds if bounds is not None else (-math.inf, math.inf)
    scale = max([1.0, *(abs(v) for v in (lb, ub) if math.isfinite(v))])
    return scale if math.isfinite(lb) and math.isfinite(ub) else max(scale, float(np.abs(y).max()))


def cells(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Intersectional cells of (b, A) integer codes: ``cell`` (b,) in [0, K), the codes of each
    cell ``values`` (K, A) in lexicographic order, and their sample counts (K,).

    Every constraint row is constant on a cell, so C = C_K[:, cell] with C_K of shape (m, K)."""
    b, width = codes.shape
    if width == 0:
        return np.zeros(b, dtype=np.intp), np.zeros((1, 0), dtype=codes.dtype), np.array([b])
    low, high = int(codes.min()), int(codes.max())
    radix = high - low + 1
    if radix**width <= 4 * b + 64:  # small codes: count the cells in a dense table (no sort)
        place = np.array([radix ** (width - 1 - j) for j in range(width)])
        raw = (codes - low if low else codes) @ place
        table = np.bincount(raw, minlength=radix**width)
        present = np.flatnonzero(table)
        values = present[:, None] // place % radix + low
        if present.size == table.size:  # every cell present: the raw ids are the cells
            return raw, values, table
        lookup = np.empty(table.size, dtype=np.intp)
        lookup[present] = np.arange(present.size)
        return lookup[raw], values, table[present]
    values, cell, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    return cell.reshape(-1), values, counts


def cell_rows(values: np.ndarray, counts: np.ndarray, b: int) -> np.ndarray:
    """float64 rows (m, K) of the constraints on the cells (see the module docstring); loops over
    attributes, not groups. The values of an attribute are numbered in sorted order."""
    rows = []
    for column in values.T:
        low = int(column.min())
        if int(column.max()) - low < 4 * column.size + 64:  # small codes: count, no sort
            n = np.bincount(column - low, weights=counts)
            present = np.flatnonzero(n)
            n = n[present]
            k = present.size
            first = column == present[0] + low if k == 2 else None
            inverse = None if k == 2 else np.searchsorted(present, column - low)
        else:
            values_present, inverse = np.unique(column, return_inverse=True)
            k = values_present.size
            n = np.bincount(inverse, weights=counts, minlength=k)
            first = inverse == 0
        if k == 2:  # mean of the first value minus mean of the second
            rows.append(np.where(first, 1.0 / n[0], -1.0 / n[1])[None])
        elif k > 2:  # each value's mean minus the overall mean
            rows.append((inverse[None, :] == np.arange(k)[:, None]) / n[:, None] - 1.0 / b)
    return np.concatenate(rows) if rows else np.zeros((0, values.shape[0]))


def _rows(attributes: np.ndarray) -> np.ndarray:
    """float64 rows c_j (m, b) for (b, A) integer codes."""
    cell, values, counts = cells(attributes)
    return cell_rows(values, counts, attributes.shape[0])[:, cell]


def constraint_matrix(attributes: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Rows c_j (m, b) of the constraints |c_j·z| ≤ ε (see the module docstring), on the input's device."""
    rows = _rows(attributes.detach().cpu().numpy())
    return torch.from_numpy(rows).to(device=attributes.device, dtype=dtype)


def small_solve(M: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Solve M x = r. Up to 4 unknowns by Gaussian elimination with partial pivoting on Python floats:
    for such sizes LAPACK's call overhead dwarfs the arithmetic."""
    n = r.size
    if n > 4:
        return np.linalg.solve(M, r)
    a = M.tolist()
    x = r.tolist()
    for k in range(n):
        p = max(range(k, n), key=lambda i: abs(a[i][k]))
        if a[p][k] == 0.0:
            raise np.linalg.LinAlgError("singular matrix")
        if p != k:
            a[k], a[p], x[k], x[p] = a[p], a[k], x[p], x[k]
        for i in range(k + 1, n):
            f = a[i][k] / a[k][k]
            if f:
                for j in range(k, n):
                    a[i][j] -= f * a[k][j]
                x[i] -= f * x[k]
    for k in range(n - 1, -1, -1):
        x[k] = (x[k] - sum(a[k][j] * x[j] for j in range(k + 1, n))) / a[k][k]
    return np.array(x)


def _nonneg_qp(Q: np.ndarray, c: np.ndarray, tol: float, hint: np.ndarray) -> np.ndarray:
    """Exact min ½xᵀQx + cᵀx s.t. x ≥ 0 for a small positive-definite Q (Lawson–Hanson active-set method).

    ``hint`` is a guess of the support {x > 0}; it is returned directly when it satisfies the KKT conditions.
    """
    n = c.size
    x = np.zeros(n)
    if hint.any():
        x[hint] = small_solve(Q[hint][:, hint], -c[hint])
        if (x[hint] > 0).all() and (-(Q @ x + c))[~hint].max(initial=-math.inf) <= tol:
            return x
        x = np.zeros(n)
    free = np.zeros(n, dtype=bool)
    for _ in range(3 * n + 10):
        w = -(Q @ x + c)  # negative gradient; KKT: w ≤ 0 off the free set, w = 0 on it
        candidates = ~free & (w > tol)
        if not candidates.any():
            break
        free[int(np.argmax(np.where(candidates, w, -math.inf)))] = True
        for _ in range(3 * n + 10):
            step_to = np.zeros(n)
            step_to[free] = small_solve(Q[free][:, free], -c[free])
            if (step_to[free] > 0).all():
                x = step_to
                break
            blocking = free & (step_to <= 0)
            step = float((x[blocking] / (x[blocking] - step_to[blocking])).min())
            x = np.maximum(x + step * (step_to - x), 0.0)
            free &= x > 0
            x = np.where(free, x, 0.0)
            if not free.any():
                break
    return x


def _last_segment_root(u1: np.ndarray, w: np.ndarray, slope1: float, lb: float, ub: float) -> float | None:
    """The root of φ' if it lies on φ''s last linear piece before α = 1, else None.

    ``u1`` = u(1) and ``slope1`` = φ'(1) > 0; on the last piece φ'(α) = φ'(1) − (1 − α) Σ_{inside at 1} w², so
    α* = 1 − φ'(1) / Σ w². It is exact when no row changes state (clipped or inside) between α* and 1.
    """
    inside1 = (u1 > lb) & (u1 < ub)
    curvature = float(w[inside1] @ w[inside1])
    if curvature <= 0.0:
        return None
    alpha = 1.0 - slope1 / curvature
    if not 0.0 <= alpha < 1.0:
        return None
    u_star = u1 + (1.0 - alpha) * w  # u(α) = u(0) − α w
    same_pieces = np.array_equal((u_star > lb) & (u_star < ub), inside1) and np.array_equal(
        u_star <= lb, u1 <= lb
    )
    return alpha if same_pieces else None  # u is linear in α: same piece at both ends ⇒ on the whole interval


def _line_search(u: np.ndarray, w: np.ndarray, base: float, lb: float, ub: float) -> float:
    """Smallest root in [0, 1] of φ'(α) = base − Σ_i w_i clip(u_i − α w_i, lb, ub) (1 if φ'(1) ≤ 0).

    φ' is continuous and non-decreasing (slope Σ_{inside} w_i²), linear between the breakpoints where a row
    meets a bound. On a segment φ'(α) = A + Bα with A = base − Σ_low w·lb − Σ_high w·ub − Σ_inside w·u and
    B = Σ_inside w²; each breakpoint moves one row between states, changing (A, B) by its contributions.
    """
    # the state of each row just after α = 0 (ties resolved by the direction of motion −w)
    high = (u > ub) | ((u == ub) & (w <= 0))
    low = ~high & ((u < lb) | ((u == lb) & (w >= 0)))
    inside = ~(high | low)
    A0 = base - float(w[low].sum()) * lb if low.any() else base
    if high.any():
        A0 -= float(w[high].sum()) * ub
    A0 -= float(w[inside] @ u[inside])
    B0 = float(w[inside] @ w[inside])
    moving = w != 0
    times, dA, dB = [], [], []
    with np.errstate(divide="ignore", invalid="ignore"):
        for bound in (ub, lb):
            if not math.isfinite(bound):
                continue
            t = (u - bound) / np.where(moving, w, 1.0)
            hit = moving & (t > 0) & (t <= 1)
            wi, ui = w[hit], u[hit]
            # crossing ub: w > 0 goes high → inside, w < 0 inside → high; crossing lb: w > 0 inside → low,
            # w < 0 low → inside. Entering "inside" adds (−w·u, w²) and removes (−w·bound, 0).
            entering = (wi > 0) if bound == ub else (wi < 0)
            sign = np.where(entering, 1.0, -1.0)
            times.append(t[hit])
            dA.append(sign * (wi * bound - wi * ui))
            dB.append(sign * wi * wi)
    if times:
        T = np.concatenate(times)
        order = np.argsort(T, kind="stable")
        T, dA_, dB_ = T[order], np.concatenate(dA)[order], np.concatenate(dB)[order]
        A = A0 + np.concatenate([[0.0], np.cumsum(dA_)])  # segment k lies before breakpoint k
        B = B0 + np.concatenate([[0.0], np.cumsum(dB_)])
        reached = np.flatnonzero(A[:-1] + B[:-1] * T >= 0)  # φ' at each breakpoint (continuous)
        if reached.size:
            k = int(reached[0])
            return float(np.clip(-A[k] / B[k], 0.0, T[k])) if B[k] > 0 else float(T[k])
        A_end, B_end = float(A[-1]), float(B[-1])
    else:
        A_end, B_end = A0, B0
    if A_end + B_end <= 0 or B_end <= 0:
        return 1.0
    return float(min(max(-A_end / B_end, 0.0), 1.0))


def solve(
    y: np.ndarray, C: np.ndarray, tolerance: float, bounds: tuple[float, float] | None
) -> tuple[np.ndarray, np.ndarray]:
    """The algorithm of the module docstring on float64 numpy arrays: (z, λ)."""
    lb, ub = bounds if bounds is not None else (-math.inf, math.inf)
    m = C.shape[0]
    scale = z_scale(y, bounds)
    if m == 0:
        return np.clip(y, lb, ub), np.zeros(0)
    tol = TOL_REL * scale

    def evaluate(mu: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """∇f(μ) for f(μ) = −ψ(μ⁺ − μ⁻) + ε·1ᵀμ, u = ŷ − Cᵀλ and z = clip(u)."""
        u = y - (mu[:m] - mu[m:]) @ C
        z = np.clip(u, lb, ub)
        cz = C @ z
        return np.concatenate([tolerance - cz, tolerance + cz]), u, z

    mu = np.zeros(2 * m)
    g, u, z = evaluate(mu)
    row_scale = float(np.einsum("ij,ij->", C, C)) / m  # Levenberg scale, independent of the clipped set
    eye = np.eye(2 * m)
    converged = False
    for _ in range(MAX_ITER):
        rnorm = float(np.abs(np.minimum(mu, g)).max())
        if rnorm <= tol:
            converged = True
            break
        h_lam = (C * ((u > lb) & (u < ub))) @ C.T
        Q = np.empty((2 * m, 2 * m))
        Q[:m, :m] = Q[m:, m:] = h_lam
        Q[:m, m:] = Q[m:, :m] = -h_lam
        Q += row_scale * min(max((rnorm / scale) ** 2, 1e-12), 1e-9) * eye
        # exact minimizer over μ ≥ 0 of the local model f + gᵀ(x − μ) + ½(x − μ)ᵀQ(x − μ)
        c = g - Q @ mu
        x = _nonneg_qp(Q, c, 0.1 * tol, (mu > 0) | (g < 0))
        d = x - mu
        slope = float(g @ d)
        if slope >= 0.0 or float(np.abs(np.minimum(x, Q @ x + c)).max()) > tol:
            # the active-set solve hit rounding or its iteration cap: take a projected-gradient step instead,
            # a descent direction whenever μ is not stationary
            d = np.maximum(mu - g / float(np.linalg.eigvalsh(Q)[-1]), 0.0) - mu
            slope = float(g @ d)
            if slope >= 0.0:
                break  # no descent direction left: rounding level reached
        # exact line search on [0, 1]: φ(α) = f(μ + αd) is convex piecewise quadratic, and its derivative
        # φ'(α) = ε·1ᵀd − Σ_i w_i clip(u_i − α w_i) with w = Cᵀ(d⁺ − d⁻) is monotone piecewise linear:
        # solve φ'(α) = 0 exactly by sweeping its breakpoints (α = 1 if φ'(1) ≤ 0).
        full = evaluate(mu + d)
        alpha = 1.0
        if float(full[0] @ d) > 0.0:
            w = (d[:m] - d[m:]) @ C
            alpha = _last_segment_root(full[1], w, float(full[0] @ d), lb, ub)
            if alpha is None:
                alpha = _line_search(u, w, tolerance * float(d.sum()), lb, ub)
        # μ⁺_j and μ⁻_j both positive only adds ε(μ⁺_j + μ⁻_j): keep the smaller representation of λ
        lam_new = (mu[:m] - mu[m:]) + alpha * (d[:m] - d[m:])
        new_mu = np.concatenate([np.maximum(lam_new, 0.0), np.maximum(-lam_new, 0.0)])
        g, u, z = full if alpha == 1.0 and np.array_equal(new_mu, mu + d) else evaluate(new_mu)
        mu = new_mu
    violation = float(np.abs(C @ z).max()) - tolerance
    allowed = CHECK_ABS * max(1.0, 1e-4 * scale)  # 1e-6 unless |z| > 1e4 (float64 rounding of the means)
    if violation > allowed:
        state = "converged" if converged else "stalled"
        raise DataError(
            f"infeasible: fairness constraints violated by {violation:.3g} > {allowed:.3g} after "
            f"the projection solver {state}; check the predictions for extreme values or raise tolerance"
        )
    return z, mu[:m] - mu[m:]


def solve_projection(
    y: torch.Tensor,
    C: torch.Tensor,
    tolerance: float,
    bounds: tuple[float, float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve the QP for 1-D float64 ``y`` and rows ``C``; return (z, λ) with z = clip(y − Cᵀλ, lb, ub).

    λ_j > 0 means c_j·z = ε is tight, λ_j < 0 means c_j·z = −ε. Raises DataError("infeasible: ...") if the
    constraints cannot be certified to 1e-6 (1e-10·max|z| for |z| > 1e4). The dual solve runs in float64
    numpy on the CPU (its size is the number of constraint rows); the results return to ``y``'s device.
    """
    z, multipliers = solve(
        y.detach().cpu().double().numpy(), C.detach().cpu().double().numpy(), float(tolerance), bounds
    )
    return torch.from_numpy(z).to(y.device, y.dtype), torch.from_numpy(multipliers).to(y.device, y.dtype)
