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
regularized, globalized Newton method whose subproblems keep the sign constraints exactly. The solve runs
in float64 numpy on the CPU: its unknowns are the 2m multipliers, and dispatching hundreds of tiny torch
ops would cost more than the arithmetic (inputs and outputs stay torch tensors on their device):
  1. stop when the projected-gradient residual ‖min(μ, ∇f(μ))‖_∞ ≤ 1e-11·scale (scale = max(1, |lb|, |ub|)
     with bounds, else max(1, max|ŷ|), the magnitude of z); the residual bounds the primal
     infeasibility max_j(|c_j·z| − ε)₊ and the complementarity error;
  2. model: H = Eᵀ C D Cᵀ E (E = [I, −I]) plus ρI with ρ = mean‖c_j‖² · clamp((‖r‖/scale)², 1e-12, 1e-9)
     (Levenberg term, shrinking quadratically with the residual r so the Newton rate is kept: rows are
     linearly dependent, e.g. the k rows of a k-valued attribute, and clipped coordinates flatten f, so H
     alone is singular);
  3. x = argmin_{x ≥ 0} ∇fᵀ(x − μ) + ½(x − μ)ᵀ(H + ρI)(x − μ), solved exactly by the finite Lawson–Hanson
     active-set method (warm-started on the current support), d = x − μ is a descent direction; should that
     solve fail its own KKT check (rounding, iteration cap), d is the projected-gradient step
     max(μ − ∇f/‖H + ρI‖, 0) − μ instead, also a descent direction;
  4. exact line search on α ∈ [0, 1] (μ + αd stays ≥ 0): φ(α) = f(μ + αd) is convex piecewise quadratic, so
     its derivative φ'(α) = ε·1ᵀd − Σ_i w_i clip(u_i − α w_i) (w = Cᵀ(d⁺ − d⁻)) is monotone piecewise
     linear; α = 1 if φ'(1) ≤ 0, else its root, found exactly by one sorted sweep over the breakpoints where
     rows meet a bound. Only gradients are used, never values of f (which lose precision to rounding);
  5. replace (μ⁺, μ⁻) by ((λ)₊, (−λ)₊), which keeps λ and can only lower f.
Globally this is a descent method with exact line search along gradient-related directions (uniformly
positive-definite models), hence convergent to the dual optimum;
f is piecewise quadratic, so once the pieces (box set and active rows) are identified the model is exact and
the iteration finishes in one or two steps; without bounds f is quadratic and 1-3 iterations suffice.
Finally z = clip(ŷ − Cᵀλ, lb, ub), so the bounds hold exactly (they are rounded inwards to the output dtype),
and max_j(|c_j·z| − ε) ≤ 1e-6 (1e-10·scale once scale > 1e4) is verified (at most 500 iterations).

Fast path. Every row c_j is constant on an intersectional cell (a distinct attribute row), so C = C_K[:, cell]
with C_K of shape (m, K), and ψ's gradient and Hessian are per-cell sums. When numba is installed and the
codes are small (radix^A ≤ 4b + 64), one compiled kernel (kernels.project) builds the cells and C_K
and runs a semismooth Newton method on λ: the rows with λ_j ≠ 0, or violated at λ_j = 0, are held tight at
±ε and one Newton step solves them on the current piece (a row whose multiplier changes sign leaves; of
dependent tight rows, the least violated entering one waits); the step is taken whole if the dual still
descends at its end, else to the root of the directional derivative (regula falsi). It stops by the rule of
step 1, so it
certifies the same optimality; if it has not within 8 steps, or its system is singular, the method above
runs. The numpy version is about a hundred small calls whose dispatch outweighs their arithmetic;
benchmark P3 (``benchmarks/projection_speed.py``) measures both.

Gradient. Let D = diag(1 for coordinates strictly inside the box) and C_A the tight rows (|c_j·z| = ε up to
1e-8·scale). Locally z is the projection onto the affine set {z_i = bound for i ∉ D, C_A z = ±ε}, so

    dz/dŷ = D − D C_Aᵀ (C_A D C_Aᵀ)⁺ C_A D     (symmetric; the pseudo-inverse handles dependent rows),

which FairProjection / fair_projection implement as a torch.autograd.Function (vector-Jacobian product on
the cells, compiled when numba is there; the small system is solved by elimination, or by the
pseudo-inverse for dependent rows). Differentiating twice raises torch's once_differentiable error.

Inference on small batches. projection_offsets projects a large reference batch and summarizes z − ŷ as a mean
additive offset per intersectional cell (distinct attribute row); apply_offsets adds the offsets and clips.
"""

from __future__ import annotations

from .checks import check_bounds, inward_bounds
from .function import FairProjection, fair_projection
from .offsets import apply_offsets, projection_offsets
from .solver import constraint_matrix, solve_projection

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
