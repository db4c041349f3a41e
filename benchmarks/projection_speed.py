"""P3: exact fairness projection forward+backward vs a cvxpylayers layer of the same problem.

Problem (PEERS.md), for a batch of b scores ŷ and 2 binary protected attributes:

    min_z ||z − ŷ||²   s.t.   0 ≤ z ≤ 1,   |mean_{a=0} z − mean_{a=1} z| ≤ ε  per attribute.

Both sides get the same instances and the same upstream gradient, timed interleaved in one
process (median of the repetitions). The cvxpylayers layer is built once per batch size,
outside the timed region, which favours it (fairness_training rebuilds it on every forward;
that build time is printed separately, and "with rebuild" counts it). Target: ours ≥ 100x faster.

cvxpylayers is an optional, benchmark-only dependency: ``pip install cvxpylayers``. Without
it only our times are printed.

    python benchmarks/projection_speed.py            # b = 256 and 2048
    python benchmarks/projection_speed.py --quick    # smallest setting (smoke test)
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from constrained_fairness.projection import fair_projection

EPS, BOUNDS = 0.05, (0.0, 1.0)
INNER = 20


def instance(b: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    attributes = torch.randint(0, 2, (b, 2), generator=gen)
    scores = torch.sigmoid(torch.randn(b, generator=gen) + 1.5 * attributes[:, 0] - attributes[:, 1])
    scores[:4] = torch.tensor([0.0, 1.0, 1.0, 0.0])  # some rows at the bounds
    return scores, attributes


def ours(scores: torch.Tensor, attributes: torch.Tensor, upstream: torch.Tensor) -> torch.Tensor:
    y = scores.clone().requires_grad_(True)
    z = fair_projection(y, attributes, EPS, BOUNDS)
    z.backward(upstream)
    return z.detach()


def build_cvxpylayer(b: int):
    import cvxpy as cp
    from cvxpylayers.torch import CvxpyLayer

    y = cp.Parameter(b)
    c = cp.Parameter((2, b))  # the mean-gap rows, one per attribute: data, so the layer is reusable
    z = cp.Variable(b)
    problem = cp.Problem(
        cp.Minimize(cp.sum_squares(z - y)), [z >= BOUNDS[0], z <= BOUNDS[1], cp.abs(c @ z) <= EPS]
    )
    return CvxpyLayer(problem, parameters=[y, c], variables=[z])


def rows(attributes: torch.Tensor) -> torch.Tensor:
    out = []
    for col in attributes.T:
        one = (col == 1).double()
        out.append(one / one.sum() - (1 - one) / (1 - one).sum())
    return torch.stack(out)


def theirs(layer, scores: torch.Tensor, attributes: torch.Tensor, upstream: torch.Tensor) -> torch.Tensor:
    y = scores.double().clone().requires_grad_(True)
    (z,) = layer(y, rows(attributes))
    z.backward(upstream.double())
    return z.detach()


def times_ms(fn, reps: int) -> list[float]:
    """Wall time of each of ``reps`` calls, in ms."""
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - start))
    return times


class _Identity(torch.autograd.Function):
    """The cheapest custom autograd function: the engine's fixed cost, paid by both sides."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad


def breakdown(b: int, reps: int) -> dict[str, float]:
    """Where our time goes at batch ``b``: the autograd floor (any custom function pays it), the
    compiled kernels alone (forward and backward, no torch), everything, and everything on the
    numpy solver (numba missing, or an instance outside the kernels' reach)."""
    from constrained_fairness.projection import function as P

    scores, attributes = instance(b, seed=b)
    upstream = torch.randn(b)
    kernels = P._kernels()

    def floor() -> None:
        _Identity.apply(scores.clone().requires_grad_(True)).backward(upstream)

    parts = {"autograd floor": floor}
    if kernels is not None:
        y, codes, grad = scores.numpy(), attributes.numpy(), upstream.numpy()
        lo, hi = P.inward_bounds(BOUNDS, torch.float32)
        args = (y, codes, EPS, *BOUNDS, lo, hi, P.TOL_REL, P.ACTIVE_REL, P.FAST_ITER)
        _, _, cell, rows, inside = kernels.project(*args)

        def compiled() -> None:
            kernels.project(*args)
            kernels.backward(grad, cell, rows, inside)

        parts["compiled kernels"] = compiled
    parts["total"] = lambda: ours(scores, attributes, upstream)

    def numpy_path() -> None:
        original = P._kernels
        P._kernels = lambda: None
        try:
            ours(scores, attributes, upstream)
        finally:
            P._kernels = original

    parts["total, numpy solver"] = numpy_path
    samples: dict[str, list[float]] = {name: [] for name in parts}
    for _ in range(reps):  # interleaved: each repetition times every part once
        for name, fn in parts.items():
            samples[name].append(statistics.fmean(times_ms(fn, INNER)))
    out = {name: statistics.median(values) for name, values in samples.items()}
    print(f"breakdown of ours at b={b} (ms): " + ", ".join(f"{k} {v:.3f}" for k, v in out.items()))
    return out


def compare(b: int, reps: int, have_cvx: bool) -> dict[str, float]:
    """Interleaved repetitions; one repetition of ours is the mean of INNER calls (sub-ms timings)."""
    scores, attributes = instance(b, seed=b)
    upstream = torch.randn(b, generator=torch.Generator().manual_seed(1))
    ours(scores, attributes, upstream)  # warm-up
    nan = float("nan")
    build_ms, diff, layer = nan, nan, None
    if have_cvx:
        start = time.perf_counter()
        layer = build_cvxpylayer(b)
        build_ms = 1e3 * (time.perf_counter() - start)
        z_theirs = theirs(layer, scores, attributes, upstream)
        diff = float((z_theirs - ours(scores, attributes, upstream).double()).abs().max())
    ours_ms, cvx_ms = [], []
    for _ in range(reps):
        ours_ms.append(statistics.fmean(times_ms(lambda: ours(scores, attributes, upstream), INNER)))
        if layer is not None:
            cvx_ms += times_ms(lambda: theirs(layer, scores, attributes, upstream), 1)
    o = statistics.median(ours_ms)
    c = statistics.median(cvx_ms) if cvx_ms else nan
    return {"ours_ms": o, "cvxpylayers_ms": c, "build_ms": build_ms, "ratio": c / o, "max_abs_diff": diff}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="b = 64, 3 repetitions (smoke test)")
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args(argv)
    sizes, reps = ([64], 3) if args.quick else ([256, 2048], args.reps)
    try:
        import cvxpylayers  # noqa: F401

        have_cvx = True
    except ImportError:
        have_cvx = False
        print("cvxpylayers is not installed (pip install cvxpylayers): printing our times only")
    print(
        f"P3 projection forward+backward, 2 binary attributes, eps={EPS}, bounds={BOUNDS}, "
        f"torch threads={torch.get_num_threads()}, median of {reps}"
    )
    header = ("b", "ours ms", "cvxpylayers ms", "layer build ms", "speed-up", "with rebuild", "max |dz|")
    print(" ".join(f"{h:>15}" for h in header))
    result: dict = {}
    for b in sizes:
        r = compare(b, reps, have_cvx)
        rebuild = (r["cvxpylayers_ms"] + r["build_ms"]) / r["ours_ms"]
        print(
            f"{b:>15} {r['ours_ms']:>15.3f} {r['cvxpylayers_ms']:>15.1f} {r['build_ms']:>15.1f} "
            f"{r['ratio']:>14.0f}x {rebuild:>14.0f}x {r['max_abs_diff']:>15.1e}"
        )
        result[b] = r
    result["breakdown"] = breakdown(sizes[0], reps)
    return result


if __name__ == "__main__":
    main()
