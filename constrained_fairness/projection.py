"""Exact, differentiable projection of a batch of predictions onto a fairness polytope.

Problem. For predictions ŷ ∈ R^b and integer attribute codes (b, A), solve

    min_z ½‖z − ŷ‖²   s.t.   lb ≤ z ≤ ub   (only if bounds are given),   |c_j·z| ≤ ε  for every row j of C.

The rows of C ∈ R^{m×b} are built per attribute a from the group-mean indicator vectors
g_v = 1[a = v] / n_v of the values v present in the batch:

* exactly 2 values present (binary):  one row  g_{v0} − g_{v1}          (mean gap between the two groups);
* k > 2 values present:               k rows   g_v − 1/b               (group mean vs overall mean);
* 1 value present:                    no row.

The problem is always feasible when lb < ub: a constant z = t ∈ [lb, ub] has equal group means, so C z = 0.
The solution is unique (strongly convex objective); DataError("infeasible: ...") is raised only if the solver
fails to certify the constraints to 1e-6, which indicates a numerical failure.

Dual. With a free-signed multiplier λ ∈ R^m (|c_j·z| ≤ ε is two half-spaces, λ_j = μ⁺_j − μ⁻_j),

    ψ(λ) = min_{lb ≤ z ≤ ub} ½‖z − ŷ‖² + λᵀ C z,   attained at   z(λ) = clip(ŷ − Cᵀλ, lb, ub),
    dual:  max_{μ⁺, μ⁻ ≥ 0}  ψ(μ⁺ − μ⁻) − ε·1ᵀ(μ⁺ + μ⁻).

ψ is concave, piecewise quadratic and C¹ with ∇ψ(λ) = C z(λ) and generalized Hessian −C D Cᵀ, where
D = diag(1[lb < ŷ_i − (Cᵀλ)_i < ub]). Strong duality holds (feasible convex QP), and z* = z(λ*).

Algorithm. We minimize f(μ) = −ψ(μ⁺ − μ⁻) + ε·1ᵀμ over μ = (μ⁺, μ⁻) ≥ 0 (2m variables, m small) with a
regularized, globalized Newton method whose subproblems keep the sign constraints exactly (float64, on the
input's device):
  1. stop when the projected-gradient residual ‖min(μ, ∇f(μ))‖_∞ ≤ 1e-11·scale (scale = max(1, |lb|, |ub|)
     with bounds, else max(1, max|ŷ|), the magnitude of z); the residual bounds the primal
     infeasibility max_j(|c_j·z| − ε)₊ and the complementarity error;
  2. model: H = Eᵀ C D Cᵀ E (E = [I, −I]) plus ρI with ρ = mean‖c_j‖² · clamp(‖r‖/scale, 1e-10, 1e-4)
     (Levenberg term: rows are linearly dependent, e.g. the k rows of a k-valued attribute, and clipped
     coordinates flatten f, so H alone is singular);
  3. x = argmin_{x ≥ 0} ∇fᵀ(x − μ) + ½(x − μ)ᵀ(H + ρI)(x − μ), solved exactly by the finite Lawson–Hanson
     active-set method (warm-started on the current support), d = x − μ is a descent direction; should that
     solve fail its own KKT check (rounding, iteration cap), d is the projected-gradient step
     max(μ − ∇f/‖H + ρI‖, 0) − μ instead, also a descent direction;
  4. exact line search on α ∈ [0, 1] (μ + αd stays ≥ 0): φ(α) = f(μ + αd) is convex piecewise quadratic, so
     its derivative ∇f(μ + αd)ᵀd is monotone piecewise linear; α = 1 if φ'(1) ≤ 0, else the root of φ' by
     Illinois false position. Only gradients are used, never values of f (which lose precision to rounding);
  5. replace (μ⁺, μ⁻) by ((λ)₊, (−λ)₊), which keeps λ and can only lower f.
Globally this is a descent method with exact line search along gradient-related directions (uniformly
positive-definite models), hence convergent to the dual optimum;
f is piecewise quadratic, so once the pieces (box set and active rows) are identified the model is exact and
the iteration finishes in one or two steps; without bounds f is quadratic and 1-3 iterations suffice.
Finally z = clip(ŷ − Cᵀλ, lb, ub), so the bounds hold exactly (they are rounded inwards to the output dtype),
and max_j(|c_j·z| − ε) ≤ 1e-6 (1e-10·scale once scale > 1e4) is verified (at most 500 iterations).

Gradient. Let D = diag(1 for coordinates strictly inside the box) and C_A the tight rows (|c_j·z| = ε up to
1e-8·scale). Locally z is the projection onto the affine set {z_i = bound for i ∉ D, C_A z = ±ε}, so

    dz/dŷ = D − D C_Aᵀ (C_A D C_Aᵀ)⁺ C_A D     (symmetric; the pseudo-inverse handles dependent rows),

which FairProjection / fair_projection implement as a torch.autograd.Function (vector-Jacobian product).

Inference on small batches. projection_offsets projects a large reference batch and summarizes z − ŷ as a mean
additive offset per intersectional cell (distinct attribute row); apply_offsets adds the offsets and clips.
"""

from __future__ import annotations

import math

import torch

from constrained_fairness.errors import ConfigError, DataError

__all__ = [
    "FairProjection",
    "apply_offsets",
    "check_bounds",
    "constraint_matrix",
    "fair_projection",
    "inward_bounds",
    "projection_offsets",
    "solve_projection",
]

_MAX_ITER = 500
_MAX_BACKTRACK = 60
_TOL_REL = 1e-11
_ACTIVE_REL = 1e-8
_CHECK_ABS = 1e-6


# ----------------------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------------------


def _check_inputs(
    predictions: torch.Tensor,
    attributes: torch.Tensor,
    tolerance: float,
    bounds: tuple[float, float] | None,
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
    if not bool(torch.isfinite(predictions).all()):
        raise DataError("predictions contain NaN or inf; fix the model outputs before projecting")
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


def _z_scale(y: torch.Tensor, bounds: tuple[float, float] | None) -> float:
    """Magnitude of the solution z: max(1, |lb|, |ub|) with bounds, else max(1, max|ŷ|)."""
    if bounds is not None:
        return max(1.0, abs(bounds[0]), abs(bounds[1]))
    return max(1.0, float(y.abs().max()))


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


# ----------------------------------------------------------------------------------------------------------
# constraint matrix and solver
# ----------------------------------------------------------------------------------------------------------


def constraint_matrix(attributes: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Rows c_j (m, b) of the constraints |c_j·z| ≤ ε (see the module docstring); loops over attributes."""
    b = attributes.shape[0]
    rows: list[torch.Tensor] = []
    for col in attributes.unbind(dim=1):
        _, inverse, counts = torch.unique(col, return_inverse=True, return_counts=True)
        k = counts.numel()
        if k < 2:
            continue
        means = torch.nn.functional.one_hot(inverse, k).T.to(dtype) / counts.to(dtype)[:, None]  # (k, b)
        rows.append((means[0] - means[1])[None] if k == 2 else means - 1.0 / b)
    if not rows:
        return torch.zeros(0, b, dtype=dtype, device=attributes.device)
    return torch.cat(rows, dim=0)


def _nonneg_qp(Q: torch.Tensor, c: torch.Tensor, tol: float, hint: torch.Tensor) -> torch.Tensor:
    """Exact min ½xᵀQx + cᵀx s.t. x ≥ 0 for a small positive-definite Q (Lawson–Hanson active-set method).

    ``hint`` is a guess of the support {x > 0}; it is returned directly when it satisfies the KKT conditions.
    """
    n = c.numel()
    x = torch.zeros_like(c)
    if bool(hint.any()):
        x[hint] = torch.linalg.solve(Q[hint][:, hint], -c[hint])
        if bool((x[hint] > 0).all()) and bool((-(Q @ x + c))[~hint].le(tol).all()):
            return x
        x = torch.zeros_like(c)
    free = torch.zeros(n, dtype=torch.bool, device=c.device)
    for _ in range(3 * n + 10):
        w = -(Q @ x + c)  # negative gradient; KKT: w ≤ 0 off the free set, w = 0 on it
        candidates = (~free) & (w > tol)
        if not bool(candidates.any()):
            break
        j = int(torch.where(candidates, w, torch.full_like(w, -math.inf)).argmax())
        free[j] = True
        for _ in range(3 * n + 10):
            s = torch.zeros_like(c)
            s[free] = torch.linalg.solve(Q[free][:, free], -c[free])
            if bool((s[free] > 0).all()):
                x = s
                break
            blocking = free & (s <= 0)
            step = float((x[blocking] / (x[blocking] - s[blocking])).min())
            x = (x + step * (s - x)).clamp_min(0.0)
            free &= x > 0
            x = torch.where(free, x, torch.zeros_like(x))
            if not bool(free.any()):
                break
    return x


def solve_projection(
    y: torch.Tensor,
    C: torch.Tensor,
    tolerance: float,
    bounds: tuple[float, float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve the QP for 1-D float64 ``y`` and rows ``C``; return (z, λ) with z = clip(y − Cᵀλ, lb, ub).

    λ_j > 0 means c_j·z = ε is tight, λ_j < 0 means c_j·z = −ε. Raises DataError("infeasible: ...") if the
    constraints cannot be certified to 1e-6 (1e-10·max|z| for |z| > 1e4).
    """
    lb, ub = bounds if bounds is not None else (-math.inf, math.inf)
    m = C.shape[0]
    scale = _z_scale(y, bounds)
    if m == 0:
        return y.clamp(lb, ub), y.new_zeros(0)
    eps = tolerance
    tol = _TOL_REL * scale

    def evaluate(mu: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """∇f(μ) for f(μ) = −ψ(μ⁺ − μ⁻) + ε·1ᵀμ, u = ŷ − Cᵀλ and z = clip(u)."""
        u = y - C.T @ (mu[:m] - mu[m:])
        z = u.clamp(lb, ub)
        cz = C @ z
        return torch.cat([eps - cz, eps + cz]), u, z

    mu = y.new_zeros(2 * m)
    g, u, z = evaluate(mu)
    row_scale = float(C.square().sum(dim=1).mean())  # Levenberg scale, independent of the clipped set
    eye = torch.eye(2 * m, dtype=y.dtype, device=y.device)
    converged = False
    for _ in range(_MAX_ITER):
        rnorm = float(torch.minimum(mu, g).abs().max())
        if rnorm <= tol:
            converged = True
            break
        inside = ((u > lb) & (u < ub)).to(y.dtype)
        h_lam = (C * inside) @ C.T
        H = torch.cat([torch.cat([h_lam, -h_lam], 1), torch.cat([-h_lam, h_lam], 1)], 0)
        Q = H + row_scale * min(max(rnorm / scale, 1e-10), 1e-4) * eye
        # exact minimizer over μ ≥ 0 of the local model f + gᵀ(x − μ) + ½(x − μ)ᵀQ(x − μ)
        c = g - Q @ mu
        x = _nonneg_qp(Q, c, 0.1 * tol, (mu > 0) | (g < 0))
        d = x - mu
        slope = float(g @ d)
        if slope >= 0.0 or float(torch.minimum(x, Q @ x + c).abs().max()) > tol:
            # the active-set solve hit rounding or its iteration cap: take a projected-gradient step instead,
            # a descent direction whenever μ is not stationary
            d = (mu - g / float(torch.linalg.eigvalsh(Q)[-1])).clamp_min(0.0) - mu
            slope = float(g @ d)
            if slope >= 0.0:
                break  # no descent direction left: rounding level reached
        # exact line search on [0, 1]: φ(α) = f(μ + αd) is convex piecewise quadratic, φ'(α) = ∇f(μ + αd)ᵀd
        # is monotone and piecewise linear; take α = 1 or find its root by Illinois false position.
        g_new = evaluate(mu + d)[0]
        hi, phi_hi, lo, phi_lo, alpha = 1.0, float(g_new @ d), 0.0, slope, 1.0
        side = 0
        for _ in range(_MAX_BACKTRACK if phi_hi > 1e-9 * -slope else 0):
            alpha = (lo * phi_hi - hi * phi_lo) / (phi_hi - phi_lo)
            g_new = evaluate(mu + alpha * d)[0]
            phi = float(g_new @ d)
            if abs(phi) <= 1e-9 * -slope or hi - lo <= 1e-15:
                break
            if phi < 0:
                lo, phi_lo = alpha, phi
                phi_hi = phi_hi / 2 if side == -1 else phi_hi
                side = -1
            else:
                hi, phi_hi = alpha, phi
                phi_lo = phi_lo / 2 if side == 1 else phi_lo
                side = 1
        # μ⁺_j and μ⁻_j both positive only adds ε(μ⁺_j + μ⁻_j): keep the smaller representation of λ
        lam_new = (mu[:m] - mu[m:]) + alpha * (d[:m] - d[m:])
        mu = torch.cat([lam_new.clamp_min(0.0), (-lam_new).clamp_min(0.0)])
        g, u, z = evaluate(mu)
    violation = float((C @ z).abs().max()) - eps
    allowed = _CHECK_ABS * max(1.0, 1e-4 * scale)  # 1e-6 unless |z| > 1e4 (float64 rounding of the means)
    if violation > allowed:
        state = "converged" if converged else "stalled"
        raise DataError(
            f"infeasible: fairness constraints violated by {violation:.3g} > {allowed:.3g} after "
            f"the projection solver {state}; check the predictions for extreme values or raise tolerance"
        )
    return z, mu[:m] - mu[m:]


# ----------------------------------------------------------------------------------------------------------
# autograd
# ----------------------------------------------------------------------------------------------------------


class _FairProjectionFn(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        predictions: torch.Tensor,
        attributes: torch.Tensor,
        tolerance: float,
        bounds: tuple[float, float] | None,
    ) -> torch.Tensor:
        y = predictions.detach().reshape(-1).to(torch.float64)
        C = constraint_matrix(attributes)
        z, lam = solve_projection(y, C, tolerance, bounds)
        lb, ub = bounds if bounds is not None else (-math.inf, math.inf)
        u = y - C.T @ lam
        inside = ((u > lb) & (u < ub)).to(torch.float64)
        scale = _z_scale(y, bounds)
        active = (C @ z).abs() >= tolerance - _ACTIVE_REL * scale
        ctx.save_for_backward(C[active], inside)
        ctx.shape, ctx.dtype = predictions.shape, predictions.dtype
        out = z.to(predictions.dtype)
        if bounds is not None:
            out = out.clamp(*inward_bounds(bounds, predictions.dtype))
        return out.reshape(predictions.shape)

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_out: torch.Tensor
    ) -> tuple[torch.Tensor | None, None, None, None]:
        C_a, inside = ctx.saved_tensors
        dg = inside * grad_out.reshape(-1).to(torch.float64)
        if C_a.shape[0] > 0:
            CD = C_a * inside
            M = CD @ C_a.T
            v = torch.linalg.pinv(M, hermitian=True, rtol=1e-10) @ (C_a @ dg)
            dg = dg - CD.T @ v
        return dg.to(ctx.dtype).reshape(ctx.shape), None, None, None


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
    attributes, eps, checked = _check_inputs(predictions, attributes, tolerance, bounds)
    return _FairProjectionFn.apply(predictions, attributes, eps, checked)


class FairProjection(torch.nn.Module):
    """Module wrapper of :func:`fair_projection` holding ``tolerance`` and ``bounds``."""

    def __init__(self, tolerance: float, bounds: tuple[float, float] | None = None) -> None:
        super().__init__()
        _check_inputs(torch.zeros(1), torch.zeros(1, 0, dtype=torch.long), tolerance, bounds)
        self.tolerance = float(tolerance)
        self.bounds = bounds

    def forward(self, predictions: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
        return fair_projection(predictions, attributes, self.tolerance, self.bounds)

    def extra_repr(self) -> str:
        return f"tolerance={self.tolerance}, bounds={self.bounds}"


# ----------------------------------------------------------------------------------------------------------
# offsets for small inference batches
# ----------------------------------------------------------------------------------------------------------


def projection_offsets(
    predictions: torch.Tensor,
    attributes: torch.Tensor,
    tolerance: float,
    bounds: tuple[float, float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Project a reference batch; return (group_ids (G, A), offsets (G,)) with the mean of z − ŷ per cell."""
    attributes, eps, checked = _check_inputs(predictions, attributes, tolerance, bounds)
    with torch.no_grad():
        z = _FairProjectionFn.apply(predictions, attributes, eps, checked)
        delta = z.reshape(-1).to(torch.float64) - predictions.reshape(-1).to(torch.float64)
        group_ids, inverse, counts = torch.unique(attributes, dim=0, return_inverse=True, return_counts=True)
        sums = torch.zeros(group_ids.shape[0], dtype=torch.float64, device=delta.device)
        sums.index_add_(0, inverse, delta)
    return group_ids, (sums / counts.to(torch.float64)).to(predictions.dtype)


def apply_offsets(
    predictions: torch.Tensor,
    attributes: torch.Tensor,
    table: tuple[torch.Tensor, torch.Tensor],
    bounds: tuple[float, float] | None = None,
) -> torch.Tensor:
    """Add the per-cell offsets of ``table`` (from projection_offsets) to ``predictions``; clip to bounds."""
    attributes, _, checked = _check_inputs(predictions, attributes, 0.0, bounds)
    group_ids, offsets = (t.to(predictions.device) for t in table)
    if group_ids.dim() != 2 or group_ids.shape[1] != attributes.shape[1]:
        raise DataError(
            f"offset table has group_ids of shape {tuple(group_ids.shape)} but attributes have "
            f"{attributes.shape[1]} columns; build the table with the same attributes"
        )
    n_groups = group_ids.shape[0]
    _, inverse = torch.unique(
        torch.cat([group_ids, attributes.to(group_ids.dtype)]), dim=0, return_inverse=True
    )
    lookup = torch.full((int(inverse.max()) + 1,), -1, dtype=torch.long, device=predictions.device)
    lookup[inverse[:n_groups]] = torch.arange(n_groups, device=predictions.device)
    idx = lookup[inverse[n_groups:]]
    if bool((idx < 0).any()):
        missing = attributes[int(torch.nonzero(idx < 0)[0, 0])].tolist()
        raise DataError(
            f"attribute cell {missing} has no offset in the table; build the table on a reference batch "
            "that contains every cell"
        )
    out = predictions + offsets[idx].to(predictions.dtype).reshape(predictions.shape)
    if checked is not None:
        out = out.clamp(*inward_bounds(checked, predictions.dtype))
    return out
