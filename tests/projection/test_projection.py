"""Tests of the exact fairness projection (constrained_fairness.projection)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from constrained_fairness.errors import ConfigError, DataError
from constrained_fairness.projection import (
    FairProjection,
    apply_offsets,
    constraint_matrix,
    fair_projection,
    projection_offsets,
    solve_projection,
    solver,
)
from constrained_fairness.projection import function as projection

BOUNDS = [None, (0.0, 1.0), (-0.5, 0.7)]


def reference_rows(attributes: np.ndarray) -> np.ndarray:
    """Constraint rows written independently of the package, with plain loops over values."""
    b = attributes.shape[0]
    rows = []
    for a in range(attributes.shape[1]):
        col = attributes[:, a]
        values = sorted(set(col.tolist()))
        means = [(col == v) / float((col == v).sum()) for v in values]
        if len(values) == 2:
            rows.append(means[0] - means[1])
        elif len(values) > 2:
            rows.extend(mean - 1.0 / b for mean in means)
    return np.array(rows).reshape(-1, b)


def random_instance(gen: torch.Generator, b: int) -> tuple[torch.Tensor, torch.Tensor]:
    n_attr = int(torch.randint(1, 5, (1,), generator=gen))
    ks = torch.randint(2, 6, (n_attr,), generator=gen).tolist()
    attributes = torch.stack([torch.randint(0, k, (b,), generator=gen) for k in ks], dim=1)
    shift = sum(0.3 * (a + 1) * attributes[:, a].double() for a in range(n_attr))
    y = (torch.randn(b, generator=gen, dtype=torch.float64) + shift - shift.mean()).float()
    return y, attributes


def slsqp_projection(
    y: np.ndarray, C: np.ndarray, eps: float, bounds: tuple[float, float] | None
) -> np.ndarray:
    optimize = pytest.importorskip("scipy.optimize")
    constraints = [
        {"type": "ineq", "fun": lambda x: eps - C @ x, "jac": lambda x: -C},
        {"type": "ineq", "fun": lambda x: eps + C @ x, "jac": lambda x: C},
    ]
    x0 = np.clip(y, *bounds) if bounds else y.copy()
    res = optimize.minimize(
        lambda x: 0.5 * float(((x - y) ** 2).sum()),
        x0,
        jac=lambda x: x - y,
        method="SLSQP",
        constraints=constraints,
        bounds=[bounds] * len(y) if bounds else None,
        tol=1e-14,
        options={"maxiter": 1000},
    )
    assert res.success, res.message
    return res.x


def assert_kkt(
    y: torch.Tensor, attributes: torch.Tensor, eps: float, bounds, z: torch.Tensor, lam: torch.Tensor
):
    """Optimality certificate of the convex QP: feasibility, z = clip(y − Cᵀλ), complementary slackness."""
    C = torch.from_numpy(reference_rows(attributes.numpy()))
    lb, ub = bounds if bounds else (-np.inf, np.inf)
    assert torch.allclose(z, (y.double() - C.T @ lam).clamp(lb, ub), atol=1e-12, rtol=0)
    cz = C @ z
    # c·z is a difference of group means of values of size |z|: its float64 rounding (and the
    # solver's stopping rule, 1e-11·scale) grow with that size, so the tolerances scale with it
    # (values of 3e3 gave 2.2e-9 with OPENBLAS_CORETYPE=Haswell, and on some CI machines)
    scale = max(1.0, float(z.abs().max()))
    feasible, active = max(1e-9, 1e-11 * scale), max(1e-8, 1e-10 * scale)
    assert float(torch.cat([cz.abs(), cz.new_zeros(1)]).max()) <= eps + feasible
    assert bool(((lam <= 0) | (cz >= eps - active)).all())  # λ_j > 0  ⇒  c_j·z = +ε
    assert bool(((lam >= 0) | (cz <= -eps + active)).all())  # λ_j < 0  ⇒  c_j·z = −ε


# ----------------------------------------------------------------------------------------------------------
# (1) exactness
# ----------------------------------------------------------------------------------------------------------


def test_constraint_matrix_matches_reference_rows():
    gen = torch.Generator().manual_seed(3)
    for b in (2, 7, 50):
        _, attributes = random_instance(gen, b)
        attributes[:, 0] = 4  # a single-valued attribute contributes no row
        expected = reference_rows(attributes.numpy())
        np.testing.assert_allclose(constraint_matrix(attributes).numpy(), expected, atol=1e-15)


@pytest.mark.parametrize("seed", range(36))
def test_matches_independent_qp_solve(seed: int):
    gen = torch.Generator().manual_seed(seed)
    b = int(torch.randint(2, 50, (1,), generator=gen))
    y, attributes = random_instance(gen, b)
    eps = 0.0 if seed % 4 == 0 else 0.3 * float(torch.rand(1, generator=gen))
    bounds = BOUNDS[seed % 3]
    z = fair_projection(y, attributes, eps, bounds)
    C = reference_rows(attributes.numpy())
    expected = slsqp_projection(y.double().numpy(), C, eps, bounds)
    np.testing.assert_allclose(z.double().numpy(), expected, atol=1e-5, rtol=0)
    assert np.abs(C @ z.double().numpy()).max(initial=0.0) <= eps + 1e-6
    z64, lam = solve_projection(y.double(), constraint_matrix(attributes), eps, bounds)
    assert_kkt(y, attributes, eps, bounds, z64, lam)


@pytest.mark.parametrize("b", [2, 3, 17, 256, 1024, 4096])
@pytest.mark.parametrize("bounds", BOUNDS)
def test_matches_an_interior_point_qp_solve_up_to_4096_rows(b: int, bounds):
    """cvxpy (a test-only dependency) solves the primal QP independently, with Clarabel."""
    cp = pytest.importorskip("cvxpy")
    gen = torch.Generator().manual_seed(1000 + b)
    for trial in range(2):
        y, attributes = random_instance(gen, b)
        y = 2.0 * y  # with bounds, many rows end at them
        eps = 0.0 if trial == 0 else 0.05
        C = reference_rows(attributes.numpy())
        x = cp.Variable(b)
        cons = [cp.abs(C @ x) <= eps] if C.shape[0] else []
        if bounds is not None:
            cons += [x >= bounds[0], x <= bounds[1]]
        tight = {"tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12, "tol_ktratio": 1e-10}
        problem = cp.Problem(cp.Minimize(cp.sum_squares(x - y.double().numpy())), cons)
        problem.solve(solver=cp.CLARABEL, **tight)  # default tolerances leave errors of 1e-3 at b = 1024
        z = fair_projection(y, attributes, eps, bounds).double().numpy()
        np.testing.assert_allclose(z, x.value, atol=1e-4, rtol=0)
        assert np.abs(C @ z).max(initial=0.0) <= eps + 1e-6
        if bounds is not None:
            assert z.min() >= bounds[0] and z.max() <= bounds[1]
            if b >= 17:
                assert ((z == bounds[0]) | (z == bounds[1])).any()  # some rows at the bounds


@pytest.mark.parametrize("b", [64, 512, 4096])
@pytest.mark.parametrize("bounds", BOUNDS)
def test_large_batches_satisfy_kkt(b: int, bounds):
    gen = torch.Generator().manual_seed(b)
    y, attributes = random_instance(gen, b)
    y = 2.0 * y  # many rows at the bounds
    for eps in (0.0, 0.02, 0.2):
        z64, lam = solve_projection(y.double(), constraint_matrix(attributes), eps, bounds)
        assert_kkt(y, attributes, eps, bounds, z64, lam)
        z = fair_projection(y, attributes, eps, bounds)
        assert torch.allclose(z.double(), z64, atol=1e-6, rtol=1e-6)
        # any other feasible point is farther from y: a constant, and midpoints with it
        objective = float((z.double() - y.double()).square().sum())
        for t in (0.0, 0.5 if bounds is None else sum(bounds) / 2):
            other = torch.full_like(z64, t)
            for w in (1.0, 0.5, 0.1):
                cand = w * other + (1 - w) * z64
                assert float((cand - y.double()).square().sum()) >= objective - 1e-6
    if bounds is not None:
        assert bool(((z64 == bounds[0]) | (z64 == bounds[1])).any())


def test_multivalued_attribute_is_group_vs_overall_and_absent_values_ignored():
    attributes = torch.tensor([[0], [0], [2], [2], [5], [5]])  # values 1, 3, 4 absent
    y = torch.tensor([0.0, 0.2, 0.5, 0.7, 1.0, 1.2])
    z = fair_projection(y, attributes, 0.1).double()
    means = torch.stack([z[0:2].mean(), z[2:4].mean(), z[4:6].mean()])
    assert float((means - z.mean()).abs().max()) <= 0.1 + 1e-6
    # KKT of this symmetric instance: outer groups move by 0.4 towards the mean, the middle one stays
    assert torch.allclose(z, torch.tensor([0.4, 0.6, 0.5, 0.7, 0.6, 0.8], dtype=torch.float64), atol=1e-6)


# ----------------------------------------------------------------------------------------------------------
# (2) bounds and dtype
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bounds", [(0.0, 1.0), (0.1, 0.3), (-1.3, 2.7)])
def test_bounds_hold_exactly_and_dtype_is_float32(bounds):
    gen = torch.Generator().manual_seed(1)
    y, attributes = random_instance(gen, 300)
    z = fair_projection(3.0 * y, attributes, 0.05, bounds)
    assert z.dtype == torch.float32
    assert float(z.min()) >= bounds[0] and float(z.max()) <= bounds[1]
    assert bool((z == z.min()).any()) and bool((z == z.max()).any())


def test_bce_loss_on_projected_probabilities():
    gen = torch.Generator().manual_seed(2)
    logits, attributes = random_instance(gen, 128)
    probs = torch.sigmoid(4.0 * logits).requires_grad_(True)
    probs.data[:5] = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0])
    z = fair_projection(probs, attributes, 0.02, (0.0, 1.0))
    loss = torch.nn.functional.binary_cross_entropy(z, torch.randint(0, 2, (128,), generator=gen).float())
    loss.backward()
    assert torch.isfinite(loss) and bool(torch.isfinite(probs.grad).all())


# ----------------------------------------------------------------------------------------------------------
# (3) gradients
# ----------------------------------------------------------------------------------------------------------


def test_gradcheck_with_active_constraints_and_bounds():
    attributes = torch.tensor(
        [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2], [0, 0], [1, 2], [0, 1], [1, 1]]
    )
    y = torch.tensor([0.9, 0.8, 4.0, 0.1, -3.0, 0.3, 0.75, 0.05, 0.6, 0.2], dtype=torch.float64)
    bounds = (-0.5, 1.5)
    z = fair_projection(y, attributes, 0.2, bounds)
    C = constraint_matrix(attributes)
    assert int(((C @ z).abs() >= 0.2 - 1e-9).sum()) >= 3  # some constraints are active...
    assert bool(((z == bounds[0]) | (z == bounds[1])).any())  # ...and some rows sit at a bound
    y.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: fair_projection(p, attributes, 0.2, bounds), (y,), eps=1e-7)


def test_gradient_matches_central_differences_float32_module():
    gen = torch.Generator().manual_seed(5)
    y, attributes = random_instance(gen, 16)
    module = FairProjection(0.05, (-1.0, 1.0))
    weights = torch.randn(16, generator=gen, dtype=torch.float64)
    y64 = y.double().requires_grad_(True)
    (module(y64, attributes) * weights).sum().backward()
    h = 1e-6
    numeric = torch.empty(16, dtype=torch.float64)
    for i in range(16):
        e = torch.zeros(16, dtype=torch.float64)
        e[i] = h
        plus = (module(y.double() + e, attributes) * weights).sum()
        minus = (module(y.double() - e, attributes) * weights).sum()
        numeric[i] = (plus - minus) / (2 * h)
    assert torch.allclose(y64.grad, numeric, atol=1e-6)
    y32 = y.clone().requires_grad_(True)
    (module(y32, attributes) * weights.float()).sum().backward()
    assert y32.grad.dtype == torch.float32 and torch.allclose(y32.grad.double(), numeric, atol=1e-4)


def test_gradient_is_identity_when_nothing_is_active():
    y = torch.tensor([0.2, 0.3, 0.4, 0.5], requires_grad=True)
    attributes = torch.tensor([[0], [1], [0], [1]])
    fair_projection(y, attributes, 1.0, (0.0, 1.0)).sum().backward()
    assert torch.equal(y.grad, torch.ones(4))


# ----------------------------------------------------------------------------------------------------------
# (4) feasible input, (5) errors, (6) shapes
# ----------------------------------------------------------------------------------------------------------


def test_feasible_input_is_returned_unchanged():
    gen = torch.Generator().manual_seed(7)
    y, attributes = random_instance(gen, 200)
    y = torch.sigmoid(y)
    assert torch.equal(fair_projection(y, attributes, 1.0, (0.0, 1.0)), y)
    assert torch.equal(fair_projection(y, attributes, 1.0), y)
    z = fair_projection(y, attributes, 0.01, (0.0, 1.0))
    assert torch.equal(fair_projection(z, attributes, 0.01 + 1e-5, (0.0, 1.0)), z)


def test_no_constraints_reduces_to_clipping():
    y = torch.tensor([-1.0, 0.5, 2.0])
    assert torch.equal(
        fair_projection(y, torch.zeros(3, 2, dtype=torch.long), 0.0, (0.0, 1.0)), y.clamp(0, 1)
    )
    assert torch.equal(fair_projection(y[:1], torch.tensor([[1, 2]]), 0.0), y[:1])


def test_equal_means_are_always_reachable_within_bounds():
    """A constant z is feasible, so even ε = 0 with far-away predictions has a solution."""
    gen = torch.Generator().manual_seed(8)
    y, attributes = random_instance(gen, 500)
    z = fair_projection(10.0 * y, attributes, 0.0, (0.0, 1.0))
    C = constraint_matrix(attributes)
    assert float((C @ z.double()).abs().max()) <= 1e-6
    assert float(z.min()) >= 0.0 and float(z.max()) <= 1.0


def test_solver_failure_raises_infeasible(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(solver, "MAX_ITER", 0)
    monkeypatch.setattr(projection, "_kernels", lambda: None)  # the numpy solver, which certifies
    y = torch.tensor([0.0, 1.0, 0.0, 1.0])
    with pytest.raises(DataError, match=r"^infeasible: "):
        fair_projection(y, torch.tensor([[0], [1], [0], [1]]), 0.1, (0.0, 1.0))


@pytest.mark.parametrize(
    ("bounds", "message"),
    [
        ((1.0, 0.0), r"prediction_bounds lb must be < ub, got \(1.0, 0.0\)"),
        ((0.5, 0.5), r"prediction_bounds lb must be < ub, got \(0.5, 0.5\)"),
        ((0.0, float("nan")), "prediction_bounds lb must be < ub"),
        ((0.0,), "prediction_bounds must be a pair"),
    ],
)
def test_bad_bounds_raise_config_error(bounds, message: str):
    with pytest.raises(ConfigError, match=message):
        fair_projection(torch.zeros(3), torch.zeros(3, 1, dtype=torch.long), 0.1, bounds)
    with pytest.raises(ConfigError, match=message):
        FairProjection(0.1, bounds)


def test_bad_tolerance_raises_config_error():
    for bad in (-0.1, float("nan"), "0.1"):
        with pytest.raises(ConfigError, match="tolerance must be"):
            fair_projection(torch.zeros(3), torch.zeros(3, 1, dtype=torch.long), bad)


@pytest.mark.parametrize(
    ("predictions", "attributes", "message"),
    [
        (torch.zeros(4, 2), torch.zeros(4, 1, dtype=torch.long), r"shape \(b,\) or \(b, 1\), got \(4, 2\)"),
        (torch.zeros(0), torch.zeros(0, 1, dtype=torch.long), "empty"),
        (torch.zeros(4, dtype=torch.long), torch.zeros(4, 1, dtype=torch.long), "floating-point"),
        (torch.tensor([0.0, float("nan")]), torch.zeros(2, 1, dtype=torch.long), "NaN"),
        (torch.zeros(4), torch.zeros(4, 1), "integer"),
        (torch.zeros(4), torch.zeros(4, dtype=torch.long), r"shape \(b, A\) = \(4, A\), got \(4,\)"),
        (torch.zeros(4), torch.zeros(3, 1, dtype=torch.long), r"got \(3, 1\)"),
    ],
)
def test_bad_shapes_raise_data_error(predictions, attributes, message: str):
    with pytest.raises(DataError, match=message):
        fair_projection(predictions, attributes, 0.1)


def test_column_input_returns_column():
    gen = torch.Generator().manual_seed(9)
    y, attributes = random_instance(gen, 64)
    col = y[:, None].clone().requires_grad_(True)
    z = fair_projection(col, attributes, 0.02, (-1.0, 1.0))
    assert z.shape == (64, 1) and z.dtype == torch.float32
    assert torch.equal(z[:, 0], fair_projection(y, attributes, 0.02, (-1.0, 1.0)))
    z.sum().backward()
    assert col.grad.shape == (64, 1)


# ----------------------------------------------------------------------------------------------------------
# offsets for small inference batches
# ----------------------------------------------------------------------------------------------------------


def test_offsets_reproduce_unbounded_projection_and_apply_to_small_batches():
    gen = torch.Generator().manual_seed(10)
    y, attributes = random_instance(gen, 1000)
    table = projection_offsets(y, attributes, 0.02)
    group_ids, offsets = table
    assert group_ids.shape[1] == attributes.shape[1] and offsets.shape == (group_ids.shape[0],)
    # without bounds z − ŷ = −Cᵀλ is constant on each intersectional cell: the offsets are exact there
    z = fair_projection(y, attributes, 0.02)
    assert torch.allclose(apply_offsets(y, attributes, table), z, atol=1e-5)
    small = apply_offsets(y[:5, None], attributes[:5], table, (0.0, 1.0))
    assert small.shape == (5, 1) and float(small.min()) >= 0.0 and float(small.max()) <= 1.0
    unseen = attributes[:1].clone()
    unseen[0, 0] = 99
    with pytest.raises(DataError, match=r"attribute cell \[99"):
        apply_offsets(y[:1], unseen, table)


def test_narrow_box_far_from_the_data():
    """Almost every coordinate is clipped and the dual has many kinks (the line search matters here)."""
    gen = torch.Generator().manual_seed(11)
    b = 400
    attributes = torch.stack([torch.randint(0, k, (b,), generator=gen) for k in (2, 3, 5, 8)], dim=1)
    y = 1000.0 * (torch.randn(b, generator=gen) + 0.5 * attributes.sum(dim=1).float())
    median = float(y.median())
    bounds = (median, median + 1.0)
    for eps in (0.0, 1e-3):
        z64, lam = solve_projection(y.double(), constraint_matrix(attributes), eps, bounds)
        assert_kkt(y, attributes, eps, bounds, z64, lam)
        z = fair_projection(y, attributes, eps, bounds)
        assert float(z.min()) >= bounds[0] and float(z.max()) <= bounds[1]


# ----------------------------------------------------------------------------------------------------------
# the compiled fast path (numba) against the numpy solver
# ----------------------------------------------------------------------------------------------------------


def _both_paths(monkeypatch, y, attributes, eps, bounds, upstream):
    """(z, grad) from the compiled path and from the numpy solver alone."""
    out = []
    for kernels in (projection._kernels, lambda: None):
        monkeypatch.setattr(projection, "_kernels", kernels)
        leaf = y.clone().requires_grad_(True)
        z = fair_projection(leaf, attributes, eps, bounds)
        z.backward(upstream)
        out.append((z.detach(), leaf.grad))
    monkeypatch.undo()
    return out


def _seeded_instance(seed: int):
    """``(y, attributes, eps, bounds, upstream)``: a random instance, some rows clipped."""
    gen = torch.Generator().manual_seed(500 + seed)
    b = int(torch.randint(2, 600, (1,), generator=gen))
    y, attributes = random_instance(gen, b)
    y = (2.0 * y).to(torch.float64 if seed % 5 == 0 else torch.float32)
    eps = 0.0 if seed % 4 == 0 else 0.2 * float(torch.rand(1, generator=gen))
    bounds = BOUNDS[seed % 3]
    return y, attributes, eps, bounds, torch.randn(b, generator=gen, dtype=y.dtype)


def test_most_seeded_instances_are_certified_by_the_compiled_kernel(monkeypatch: pytest.MonkeyPatch):
    """So that the comparison below compares two solvers: an instance the kernel does not
    certify goes to the numpy solver on both sides."""
    pytest.importorskip("numba")
    fallbacks = []
    original = projection._project_numpy

    def counted(*args, **kwargs):
        fallbacks.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(projection, "_project_numpy", counted)
    for seed in range(40):
        y, attributes, eps, bounds, _ = _seeded_instance(seed)
        fair_projection(y, attributes, eps, bounds)
    assert len(fallbacks) <= 10, f"{len(fallbacks)} of 40 instances fell back to the numpy solver"


@pytest.mark.parametrize("seed", range(40))
def test_compiled_path_matches_the_numpy_solver(monkeypatch: pytest.MonkeyPatch, seed: int):
    pytest.importorskip("numba")
    y, attributes, eps, bounds, upstream = _seeded_instance(seed)
    (z_fast, g_fast), (z_ref, g_ref) = _both_paths(monkeypatch, y, attributes, eps, bounds, upstream)
    assert z_fast.dtype == y.dtype
    torch.testing.assert_close(z_fast, z_ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(g_fast, g_ref, atol=1e-5, rtol=1e-5)
    C = reference_rows(attributes.numpy())
    assert np.abs(C @ z_fast.double().numpy()).max(initial=0.0) <= eps + 1e-6
    if bounds is not None:
        assert float(z_fast.min()) >= bounds[0] and float(z_fast.max()) <= bounds[1]


def test_compiled_path_solves_the_benchmark_case_without_the_numpy_solver(monkeypatch: pytest.MonkeyPatch):
    """Two binary attributes, scores in [0, 1] with rows at the bounds (benchmark P3): the compiled
    kernel certifies it alone, so the speed measured there is this path's."""
    pytest.importorskip("numba")

    def refuse(*args):
        raise AssertionError("the numpy solver ran")

    monkeypatch.setattr(projection, "_project_numpy", refuse)
    gen = torch.Generator().manual_seed(256)
    for b in (64, 256, 2048):
        attributes = torch.randint(0, 2, (b, 2), generator=gen)
        y = torch.sigmoid(torch.randn(b, generator=gen) + 1.5 * attributes[:, 0] - attributes[:, 1])
        y[:4] = torch.tensor([0.0, 1.0, 1.0, 0.0])
        leaf = y.clone().requires_grad_(True)
        z = fair_projection(leaf, attributes, 0.05, (0.0, 1.0))
        z.backward(torch.ones(b))
        assert np.abs(reference_rows(attributes.numpy()) @ z.detach().double().numpy()).max() <= 0.05 + 1e-6


@pytest.mark.parametrize(
    "codes",
    [
        torch.tensor([[0], [1], [2], [0], [1], [2]]) * 1_000_000,  # a large range: the numpy cells
        torch.tensor([[0], [1], [2], [0], [1], [2]]) - 7,  # negative codes: the kernel, offset by the minimum
        torch.tensor([[-(2**63)], [2**63 - 1], [0]] * 2),  # a range that overflows int64: the numpy cells
        torch.tensor([[2**62], [-(2**62)], [0]] * 2),
    ],
)
def test_codes_of_any_range_give_the_same_projection_on_both_paths(monkeypatch: pytest.MonkeyPatch, codes):
    y = torch.tensor([0.9, 0.1, 0.5, 0.8, 0.2, 0.4])
    (z_fast, g_fast), (z_ref, g_ref) = _both_paths(monkeypatch, y, codes, 0.05, (0.0, 1.0), torch.ones(6))
    torch.testing.assert_close(z_fast, z_ref, atol=1e-7, rtol=0)
    torch.testing.assert_close(g_fast, g_ref)
    C = reference_rows(codes.numpy())
    assert np.abs(C @ z_fast.double().numpy()).max() <= 0.05 + 1e-6


@pytest.mark.parametrize("bounds", [(0.0, float("inf")), (float("-inf"), 1.0), (float("-inf"), float("inf"))])
def test_infinite_bounds_still_enforce_the_constraints(monkeypatch: pytest.MonkeyPatch, bounds):
    """A one-sided box: the tolerance scales with the finite bound and max|ŷ|, never with inf."""
    gen = torch.Generator().manual_seed(9)
    attributes = torch.randint(0, 2, (40, 2), generator=gen)
    y = torch.randn(40, generator=gen) + attributes[:, 0] - 0.5 * attributes[:, 1]
    (z_fast, _), (z_ref, _) = _both_paths(monkeypatch, y, attributes, 0.05, bounds, torch.ones(40))
    C = reference_rows(attributes.numpy())
    for z in (z_fast, z_ref):
        assert np.abs(C @ z.double().numpy()).max() <= 0.05 + 1e-6
        assert float(z.min()) >= bounds[0] and float(z.max()) <= bounds[1]
    if bounds[1] == np.inf:  # SLSQP takes a lower bound alone, or none
        lower = None if bounds[0] == -np.inf else (0.0, None)
        expected = slsqp_projection(y.double().numpy(), C, 0.05, lower)
        np.testing.assert_allclose(z_fast.double().numpy(), expected, atol=1e-5)
    torch.testing.assert_close(z_fast, z_ref, atol=1e-6, rtol=0)


def test_not_finite_predictions_are_a_data_error_on_both_paths(monkeypatch: pytest.MonkeyPatch):
    for kernels in (projection._kernels, lambda: None):
        monkeypatch.setattr(projection, "_kernels", kernels)
        for bad in (float("nan"), float("inf")):
            with pytest.raises(DataError, match="NaN or inf"):
                fair_projection(torch.tensor([0.2, bad, 0.4]), torch.tensor([[0], [1], [1]]), 0.1, (0.0, 1.0))


def test_second_derivative_is_refused():
    y = torch.rand(16, requires_grad=True)
    z = fair_projection(y, torch.arange(16).remainder(2).unsqueeze(1), 0.01, (0.0, 1.0))
    (grad,) = torch.autograd.grad(z.square().sum(), y, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        grad.sum().backward()
