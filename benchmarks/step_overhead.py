"""P1: CEAG fine-tuning step time ÷ NFT step time (same model, batch, data and primal optimizer).

A step is timed the way the trainer runs it: ``optimizer.roll(...)``, then
``pruner.apply()`` (both sides fine-tune the same 95 %-sparse GMP masks), then the loss
read back for the epoch mean. NFT is the :class:`FairnessProblem` with no constraint
(Cooper's ``UnconstrainedOptimizer``); CEAG is :class:`ExcessAccuracyGap` with a k = 40
replay buffer and SGD duals (Cooper's ``AlternatingDualPrimalOptimizer``); its buffers are
pre-filled, so every timed step updates every dual, as in the steady state of fine-tuning.
Both use SGD, LR 0.01, momentum 0.9, weight decay 1e-4, start from the same weights and see
the same batches. Blocks of NFT and CEAG steps alternate (ABBA order) over the repetitions;
the median per-step time of each side is reported, and the median of the per-repetition
CEAG/NFT ratios (robust to the machine's speed drifting between repetitions). Targets:

* the default experiment's Adult MLP 107-128-64-2, batch 256, race x sex (10 groups): ≤ 1.10;
* torchvision MobileNetV2 on random 64x64 images, batch 128, 8 groups: ≤ 1.03.

    python benchmarks/step_overhead.py                # full setting (1-2 minutes on 2 cores)
    python benchmarks/step_overhead.py --profile      # + where CEAG's extra time goes
    python benchmarks/step_overhead.py --quick        # smallest setting (smoke test)
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import functools
import pstats
import statistics
import time
from collections.abc import Callable
from typing import NamedTuple

import cooper
import torch
from cooper.multipliers import IndexedMultiplier

from constrained_fairness.config import DualConfig, GuardsConfig
from constrained_fairness.constraints import DenseReference, ExcessAccuracyGap
from constrained_fairness.groups import GroupIndex, Grouping
from constrained_fairness.metrics import GroupStats
from constrained_fairness.models import build_model
from constrained_fairness.problem import FairnessProblem
from constrained_fairness.sparsity import MagnitudePruner
from constrained_fairness.training.optimizers import build_cooper_optimizer, fixed_shapes
from constrained_fairness.training.step import TrainingStep

SPARSITY, BUFFER, TOLERANCE, DUAL_LR = 0.95, 40, 0.01, 0.01
# Adult's race x sex shares of the training rows (race codes in sorted order), for --data synthetic
ADULT_RACE = (0.0096, 0.0319, 0.0959, 0.0083, 0.8543)
ADULT_SEX = (0.331, 0.669)


class Setting(NamedTuple):
    """One row of the table."""

    label: str
    model: str  # "mlp" or "mobilenet_v2"
    batch: int
    target: float
    steps: int  # per timed block
    repetitions: int
    resolution: int = 0  # image side (mobilenet_v2)
    groups: int = 0  # number of groups (mobilenet_v2; the MLP uses race x sex)
    width: float = 1.0
    data: str = "adult"  # MLP data: the bundled Adult training split, or random with its shapes


def settings(quick: bool, groups: int) -> dict[str, Setting]:
    if quick:
        return {
            "mlp": Setting("mlp 107-128-64-2", "mlp", 256, 1.10, 5, 3, data="synthetic"),
            "mobilenet_v2": Setting(
                "mobilenet_v2 w0.25 32x32", "mobilenet_v2", 8, 1.03, 2, 2, 32, groups, width=0.25
            ),
        }
    return {
        "mlp": Setting("mlp 107-128-64-2 (Adult)", "mlp", 256, 1.10, 50, 21),
        # one step per block: the VM's speed drifts by 10-30 % over a minute, so many short,
        # adjacent NFT/CEAG pairs estimate the ratio best
        "mobilenet_v2": Setting("mobilenet_v2 64x64", "mobilenet_v2", 128, 1.03, 1, 31, 64, groups),
    }


def tabular_data(s: Setting, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Grouping]:
    """Features, targets, (N, 2) race/sex codes and the intersectional grouping of Adult."""
    if s.data == "adult":
        from constrained_fairness.data import load_adult

        data = load_adult(("race", "sex"), 0.2, seed)
        index = GroupIndex.from_lists(data.attribute_names, data.attribute_values)
        split = data.train
        return split.features, split.targets, split.attributes, Grouping.create(index, None)
    gen = torch.Generator().manual_seed(seed)
    n = 40 * s.batch
    x = torch.randn(n, 107, generator=gen)
    y = (x[:, 0] + 0.5 * torch.randn(n, generator=gen) > 0.5).long()
    race = torch.multinomial(torch.tensor(ADULT_RACE), n, replacement=True, generator=gen)
    sex = torch.multinomial(torch.tensor(ADULT_SEX), n, replacement=True, generator=gen)
    index = GroupIndex.from_lists(["race", "sex"], [[str(i) for i in range(5)], ["F", "M"]])
    return x, y, torch.stack([race, sex], 1), Grouping.create(index, None)


def image_data(s: Setting, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Grouping]:
    gen = torch.Generator().manual_seed(seed)
    n = 4 * s.batch
    x = torch.randn(n, 3, s.resolution, s.resolution, generator=gen)
    y = torch.randint(0, 2, (n,), generator=gen)
    a = torch.randint(0, s.groups, (n, 1), generator=gen)
    return x, y, a, Grouping.single(s.groups)


@torch.no_grad()
def reference(model: torch.nn.Module, x, y, a, grouping: Grouping, batch: int) -> DenseReference:
    """The starting model's own per-group statistics: CEAG's 'dense' reference."""
    model.eval()
    logits = torch.cat([model(x[i : i + batch]) for i in range(0, len(x), batch)])
    model.train()
    losses = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    rows, groups = grouping.memberships(a)
    correct = (logits.argmax(1) == y).float()
    return DenseReference.from_stats(
        GroupStats.from_memberships(correct, losses, rows, groups, grouping.num_groups)
    )


METHODS = ("nft", "cooper only", "ceag")
MLP_METHODS = (*METHODS, "ceag (before)")
P1A_TARGET = 1.15  # CEAG ÷ Cooper alone on the MLP (issue #15): the library's own overhead
FLOORS = ("fused", "fused compiled")


class Guard(NamedTuple):
    """How the library's steps run: ``guards.fixed_shapes`` and ``guards.check_every``."""

    fixed_shapes: str = GuardsConfig().fixed_shapes
    check_every: int = GuardsConfig().check_every


DEFAULT_GUARD = Guard()


def make_steps(
    s: Setting,
    dual: str,
    device: str,
    seed: int = 0,
    methods: tuple[str, ...] = METHODS,
    guard: Guard = DEFAULT_GUARD,
) -> dict[str, Callable[[], None]]:
    """Trainer steps of ``methods`` (NFT, CEAG, the floors) on copies of one model and the
    same batches. NFT and CEAG run as the trainer runs them, through :class:`TrainingStep`
    with ``guard`` (the defaults: fixed shapes ``auto``, the guard read every 100 steps);
    Cooper alone runs Cooper's ``roll`` with nothing of the library around it."""
    torch.manual_seed(seed)
    if s.model == "mlp":
        x, y, a, grouping = tabular_data(s, seed)
        # the label (107-128-64-2) and the table's group count (10) describe this data
        assert (x.shape[1], grouping.num_groups) == (107, 10), (x.shape[1], grouping.num_groups)
        base = build_model("mlp", x.shape[1], 2, (128, 64))
    else:
        x, y, a, grouping = image_data(s, seed)
        base = build_model("mobilenet_v2", num_classes=2, width=s.width)
    base = base.to(device)
    x, y, a = x.to(device), y.to(device), a.to(device)
    pruner = MagnitudePruner(base, "layerwise", ["last"])
    pruner.prune_to(SPARSITY)
    ref = reference(base, x, y, a, grouping, s.batch)
    gen = torch.Generator().manual_seed(seed + 1)
    order = torch.randperm(len(x), generator=gen).to(device)
    batches = [
        (x[idx], y[idx], a[idx])
        for idx in (order[i : i + s.batch] for i in range(0, len(x) - s.batch + 1, s.batch))
    ]
    steps = {}
    for method in methods:
        model = copy.deepcopy(base)
        masks = MagnitudePruner(model, "layerwise", ["last"])
        masks.load_state_dict(pruner.state_dict())
        primal = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        constraint = ExcessAccuracyGap(ref, TOLERANCE, BUFFER, "weighted", grouping)
        _prefill(constraint, ref, seed)
        if method.startswith("fused"):
            fused = _FusedCEAG(constraint, DUAL_LR, compiled=method == "fused compiled")
            update = _masked(functools.partial(fused.step, model, primal), masks)
        elif method == "cooper only":
            problem, duals = _CooperOnly(grouping.num_groups), [DualConfig(lr=DUAL_LR, optimizer=dual)]
            update = _roll(build_cooper_optimizer(problem, primal, duals), model, masks)
        else:
            constrained = method == "ceag"
            duals = [DualConfig(lr=DUAL_LR, optimizer=dual)] if constrained else []
            problem = FairnessProblem([constraint] if constrained else [], ["ceag"] if constrained else [])
            problem.use_fixed_shapes(fixed_shapes(guard.fixed_shapes, duals))
            optimizer = build_cooper_optimizer(problem, primal, duals)
            training_step = TrainingStep(
                model, problem, optimizer, check_every=guard.check_every, pruner=masks
            )
            update = _library_step(training_step, model)
        steps[method] = _trainer_step(model, update, batches)
    return steps


def _library_step(training_step: TrainingStep, model) -> Callable[..., torch.Tensor]:
    """The library's step, as ``Trainer.train_epoch`` calls it (masks and guard included)."""

    def update(inputs, targets, attributes) -> torch.Tensor:
        return training_step(model=model, inputs=inputs, targets=targets, attributes=attributes).loss

    return update


def _roll(optimizer, model, masks) -> Callable[..., torch.Tensor]:
    """Cooper's ``roll`` on one batch, then the masks; returns the loss."""

    def update(inputs, targets, attributes) -> torch.Tensor:
        kwargs = {"model": model, "inputs": inputs, "targets": targets, "attributes": attributes}
        return optimizer.roll(compute_cmp_state_kwargs=kwargs).loss

    return _masked(update, masks)


def _masked(update: Callable[..., torch.Tensor], masks) -> Callable[..., torch.Tensor]:
    """``update``, then the pruning masks re-applied (what ``TrainingStep`` does)."""

    def masked(inputs, targets, attributes) -> torch.Tensor:
        loss = update(inputs, targets, attributes)
        masks.apply()
        return loss

    return masked


def _prefill(constraint: ExcessAccuracyGap, ref: DenseReference, seed: int) -> None:
    """Fill every group's buffer with draws at its reference accuracy, so that every timed
    step (and the warm-up) already has all estimates and updates every dual, as in the
    steady state of fine-tuning."""
    gen = torch.Generator().manual_seed(seed + 2)
    num_groups = constraint.num_groups
    values = torch.bernoulli(ref.accuracy.cpu().repeat(BUFFER), generator=gen)
    constraint.buffer.push(values.to(ref.device), torch.arange(num_groups, device=ref.device).repeat(BUFFER))
    assert bool(constraint.buffer.is_full.all())


def _trainer_step(model, update: Callable[..., torch.Tensor], batches) -> Callable[[], None]:
    """The body of ``Trainer.train_epoch`` for one batch: ``update(inputs, targets, attributes)``
    (the library's step, Cooper's roll, or the hand-fused floor), then the loss added up on
    the device for the epoch's mean, as the trainer does (no host read)."""
    position = [0]
    total = [torch.zeros((), dtype=torch.float64, device=batches[0][0].device)]
    model.train()

    def step() -> None:
        inputs, targets, attributes = batches[position[0] % len(batches)]
        position[0] += 1
        loss = update(inputs, targets, attributes)
        total[0] += loss.detach().to(torch.float64) * len(targets)

    step.model = model  # for the equivalence check
    return step


class _CooperOnly(cooper.ConstrainedMinimizationProblem):
    """Floor 1, Cooper's machinery alone: the NFT loss plus one constraint of G rows whose proxy
    is the loss itself and whose strict violation is a constant (no buffer, no statistics)."""

    is_constrained = True

    def __init__(self, num_groups: int) -> None:
        super().__init__()
        self.rows = torch.arange(num_groups)
        self.violation = torch.full((num_groups,), -1e-3)
        self.constraint = cooper.Constraint(
            constraint_type=cooper.ConstraintType.INEQUALITY,
            multiplier=IndexedMultiplier(num_constraints=num_groups),
        )

    def compute_cmp_state(self, model, inputs, targets, attributes) -> cooper.CMPState:
        loss = torch.nn.functional.cross_entropy(model(inputs), targets)
        state = cooper.ConstraintState(
            violation=loss.expand(len(self.rows)),
            constraint_features=self.rows,
            strict_violation=self.violation,
            strict_constraint_features=self.rows,
        )
        return cooper.CMPState(loss=loss, observed_constraints={self.constraint: state})


class _FusedCEAG:
    """Floors 2 and 3: CEAG's arithmetic written out by hand, without Cooper, checks or
    syncs; the same update as the library's (checked against it by ``--floors``):

    push the batch's correctness into a (G, k+1) ring (column k takes the overflow),
    ``λ ← max(0, λ + η (ψ_buf − ε))``, then one backward of ``Σ_n w_n ℓ_n`` with
    ``w_n = 1/b + λ[g_n]/c[g_n] − Σ_{g present} λ[g]/b``, the gradient of
    ``L + Σ_{g present} λ[g] ψ̃[g]``. ``compiled``: the bookkeeping under ``torch.compile``."""

    def __init__(self, constraint: ExcessAccuracyGap, dual_lr: float, compiled: bool) -> None:
        ref, buf = constraint.reference, constraint.buffer
        self.k, self.num_groups, self.lr, self.eps = buf.size, buf.num_groups, dual_lr, constraint.tolerance
        self.values = torch.cat([buf.values, torch.zeros_like(buf.values[:, :1])], 1)
        self.pointer, self.lam = buf.pointer.clone(), torch.zeros_like(ref.accuracy)
        self.acc, self.acc_all, self.freq = ref.accuracy, ref.overall_accuracy, ref.frequency
        self.strides = torch.tensor(constraint.grouping.index.strides, device=ref.device)
        self.weights = torch.compile(self._weights, dynamic=False) if compiled else self._weights

    def _weights(self, logits, targets, attributes, values, pointer, lam):
        k = self.k
        groups = (attributes * self.strides).sum(1)
        correct = (logits.argmax(1) == targets).float()
        counts = torch.bincount(groups, minlength=self.num_groups)
        sorted_groups, order = torch.sort(groups, stable=True)
        rank = torch.arange(len(groups), device=groups.device) - (counts.cumsum(0) - counts)[sorted_groups]
        slot = torch.where(rank >= counts[sorted_groups] - k, (pointer[sorted_groups] + rank) % k, k)
        values[sorted_groups, slot] = correct[order]
        pointer.copy_((pointer + counts) % k)
        estimate = values[:, :k].sum(1) / k
        overall = (self.freq * estimate).sum() / self.freq.sum()
        lam.copy_(
            (lam + self.lr * ((self.acc - estimate) - (self.acc_all - overall) - self.eps)).clamp(min=0)
        )
        present_sum = (lam * (counts > 0)).sum()
        return (lam / counts.clamp(min=1))[groups] + (1 - present_sum) / len(groups)

    def step(self, model, primal, inputs, targets, attributes) -> torch.Tensor:
        primal.zero_grad()
        logits = model(inputs)
        losses = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
        w = self.weights(logits.detach(), targets, attributes, self.values, self.pointer, self.lam)
        loss = (losses * w).sum()
        loss.backward()
        primal.step()
        return loss


def time_steps(step: Callable[[], None], count: int, device: str) -> float:
    """Seconds per step over a block of ``count`` steps."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(count):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / count


BEFORE = Guard(fixed_shapes="off", check_every=1)
"""The step before issue #15's round: the present groups' rows and the guard read every step."""


def measure(
    s: Setting,
    dual: str,
    device: str,
    methods: tuple[str, ...] = METHODS,
    guard: Guard = DEFAULT_GUARD,
) -> dict[str, dict[str, float]]:
    """Per method: median ms per step, the median per-repetition ratio to NFT, and to Cooper
    alone where it runs. ``ceag (before)`` is CEAG with :data:`BEFORE`."""
    library = tuple(m for m in methods if m != "ceag (before)")
    steps = make_steps(s, dual, device, methods=library, guard=guard)
    if "ceag (before)" in methods:
        steps["ceag (before)"] = make_steps(s, dual, device, methods=("ceag",), guard=BEFORE)["ceag"]
    for step in steps.values():  # warm up: allocate, compile (the replay buffers are already full)
        time_steps(step, 2, device)
    times: dict[str, list[float]] = {method: [] for method in methods}
    for rep in range(s.repetitions):  # interleaved, ABBA
        for method in methods if rep % 2 == 0 else reversed(methods):
            times[method].append(time_steps(steps[method], s.steps, device))
    result = {}
    for method, t in times.items():
        result[method] = {"ms": 1e3 * statistics.median(t)} | {
            f"ratio_{base}": statistics.median(c / n for c, n in zip(t, times[base], strict=True))
            for base in ("nft", "cooper only")
            if base in times
        }
        result[method]["ratio"] = result[method]["ratio_nft"]
        result[method]["ratio_of_medians"] = statistics.median(t) / statistics.median(times["nft"])
    return result


def equivalence(s: Setting, device: str, count: int = 5) -> float:
    """Max |Δθ| between the library's CEAG and the hand-fused floor after ``count`` steps from
    the same state: the floor does the library's work, no less."""
    steps = make_steps(s, "sgd", device, methods=("ceag", "fused"))
    for step in steps.values():
        time_steps(step, count, device)
    pairs = zip(steps["ceag"].model.parameters(), steps["fused"].model.parameters(), strict=True)
    return max(float((p - q).detach().abs().max()) for p, q in pairs)


def floors(s: Setting, device: str, compiled: bool) -> dict[str, dict[str, float]]:
    """What CEAG's arithmetic costs at the least without Cooper, as a ratio to NFT: hand-fused
    (eager, and compiled)."""
    diff = equivalence(s, device)
    if compiled:  # torch.compile needs a working C++ toolchain: probe it alone, never masking the rest
        try:
            time_steps(make_steps(s, "sgd", device, methods=("fused compiled",))["fused compiled"], 1, device)
        except Exception as error:
            print(f"torch.compile floor unavailable ({type(error).__name__}: {str(error).splitlines()[0]})")
            compiled = False
    result = measure(s, "sgd", device, ("nft", *FLOORS) if compiled else ("nft", *FLOORS[:-1]))
    print(
        f"\nfloors of {s.label} without Cooper, as a ratio to NFT (interleaved, median; hand-fused "
        f"vs library CEAG after 5 steps: max |Δθ| = {diff:.1e})"
    )
    print(f"{'step':<56} {'ms/step':>8} {'ratio':>6}")
    labels = {
        "nft": "NFT",
        "fused": "CEAG arithmetic hand-fused, no Cooper, eager",
        "fused compiled": "the same, bookkeeping under torch.compile",
    }
    for method, r in result.items():
        print(f"{labels[method]:<56} {r['ms']:>8.3f} {r['ratio']:>6.3f}")
    result["max_abs_diff"] = {"value": diff}
    return result


# (file suffix, function) of the parts of a step, for the --profile breakdown; rows nest
PHASES = (
    ("step whole (roll + mask + loss read-back)", "step_overhead.py", "step"),
    ("  compute_cmp_state (forward, constraints)", "problem.py", "compute_cmp_state"),
    ("    ExcessAccuracyGap.compute", "statistic.py", "compute"),
    ("      Grouping.memberships", "groups.py", "memberships"),
    ("      batch_means (proxy)", "statistic.py", "batch_means"),
    ("      ReplayBuffer.push", "buffer.py", "push"),
    ("    _check_finite", "problem.py", "_check_finite"),
    ("  Lagrangians (primal + dual)", "cmp.py", "_compute_primal_or_dual_lagrangian"),
    ("  backward (primal + dual)", "cmp.py", "backward"),
    ("  dual_step (SGD, sparse grads)", "constrained_optimizer.py", "dual_step"),
    ("  primal_step", "optimizer.py", "primal_step"),
    ("  zero_grad", "cooper/optim/optimizer.py", "zero_grad"),
)


def profile(s: Setting, dual: str, device: str, count: int, top: int) -> dict[str, float]:
    """cProfile ``count`` steps of each side and print where CEAG's extra time goes, by part
    of the step (cumulative time, rows nest); then torch.profiler's self time per op."""
    steps = make_steps(s, dual, device)
    cum: dict[str, dict[str, float]] = {}
    wall: dict[str, float] = {}
    for method, step in steps.items():
        time_steps(step, max(2, count // 2), device)
        prof = cProfile.Profile()
        start = time.perf_counter()
        prof.enable()
        for _ in range(count):
            step()
        prof.disable()
        wall[method] = (time.perf_counter() - start) / count
        stats = pstats.Stats(prof).stats  # (file, line, name) -> (cc, nc, tottime, cumtime, callers)
        cum[method] = {
            label: sum(v[3] for (f, _, n), v in stats.items() if f.endswith(suffix) and n == name) / count
            for label, suffix, name in PHASES
        }
    extra = wall["ceag"] - wall["nft"]
    print(
        f"\nprofile of {s.label} (cProfile, {count} steps each, which inflates Python-heavy code): "
        f"NFT {1e3 * wall['nft']:.3f} ms/step, CEAG {1e3 * wall['ceag']:.3f} ms/step"
    )
    print(f"{'part of the step (cumulative)':<44} {'NFT ms':>7} {'CEAG ms':>8} {'extra ms':>8} {'share':>6}")
    shares = {}
    for label, _, _ in PHASES:
        n, c = 1e3 * cum["nft"][label], 1e3 * cum["ceag"][label]
        shares[label.strip()] = (c - n) / (1e3 * extra) if extra > 0 else float("nan")
        print(f"{label:<44} {n:>7.3f} {c:>8.3f} {c - n:>8.3f} {100 * shares[label.strip()]:>5.0f}%")
    ops = _op_profile(steps, count)
    print(f"{'torch op (torch.profiler self CPU time per step)':<50} {'extra ms':>8}")
    for name, d in ops[:top]:
        print(f"{name:<50} {d:>8.3f}")
    return shares


def _op_profile(steps: dict[str, Callable[[], None]], count: int) -> list[tuple[str, float]]:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    self_ms: dict[str, dict[str, float]] = {}
    for method, step in steps.items():
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(count):
                step()
        self_ms[method] = {e.key: e.self_cpu_time_total / 1e3 / count for e in prof.key_averages()}
    keys = set(self_ms["ceag"]) | set(self_ms["nft"])
    diff = [(k, self_ms["ceag"].get(k, 0.0) - self_ms["nft"].get(k, 0.0)) for k in keys]
    return sorted(diff, key=lambda kv: -kv[1])


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smallest setting, for the smoke test")
    parser.add_argument(
        "--models", nargs="+", default=["mlp", "mobilenet_v2"], choices=["mlp", "mobilenet_v2"]
    )
    parser.add_argument("--groups", type=int, default=8, help="groups of the MobileNetV2 setting")
    parser.add_argument("--dual", default="sgd", choices=["sgd", "nupi"], help="CEAG's dual optimizer")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--profile", action="store_true", help="also profile the CEAG and NFT steps")
    parser.add_argument("--no-floors", action="store_true", help="skip the floors of the MLP setting")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile floor")
    parser.add_argument("--profile-steps", type=int, default=0, help="steps per profile (default: a block)")
    parser.add_argument("--fixed-shapes", default=Guard().fixed_shapes, choices=["auto", "on", "off"])
    parser.add_argument("--check-every", type=int, default=Guard().check_every, help="guards.check_every")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    chosen = {name: s for name, s in settings(args.quick, args.groups).items() if name in args.models}
    guard = Guard(args.fixed_shapes, args.check_every)
    measured = {
        name: measure(s, args.dual, args.device, MLP_METHODS if s.model == "mlp" else METHODS[::2], guard)
        for name, s in chosen.items()
    }
    results = {}
    for name, r in measured.items():
        results[name] = {"nft_ms": r["nft"]["ms"], "ceag_ms": r["ceag"]["ms"]} | {
            "ratio": r["ceag"]["ratio"],
            "ratio_of_medians": r["ceag"]["ratio_of_medians"],
        }
        if "cooper only" in r:
            results[name] |= {
                "cooper_ms": r["cooper only"]["ms"],
                "ratio_to_cooper": r["ceag"]["ratio_cooper only"],
                "before_ms": r["ceag (before)"]["ms"],
                "before_ratio_to_cooper": r["ceag (before)"]["ratio_cooper only"],
            }
    print(
        "P1 CEAG ÷ NFT fine-tuning step time (the library's step as the trainer runs it: roll, masks, "
        f"guard read every {guard.check_every} steps, fixed shapes {guard.fixed_shapes}; SGD momentum 0.9, "
        f"{100 * SPARSITY:.0f} % GMP masks; CEAG k={BUFFER}, {args.dual} duals; {args.device}, "
        f"{torch.get_num_threads()} threads; interleaved repetitions, median)"
    )
    print(
        f"{'model':<26} {'batch':>5} {'groups':>6} {'reps x steps':>12} {'NFT ms/step':>11} "
        f"{'CEAG ms/step':>12} {'ratio':>6} {'med/med':>7}  target"
    )
    for name, r in results.items():
        s = chosen[name]
        groups = 10 if s.model == "mlp" else s.groups
        r["target"] = P1A_TARGET if s.model == "mlp" else s.target
        ratio = r["ratio_to_cooper"] if s.model == "mlp" else r["ratio"]
        r["met"] = float(ratio <= r["target"])
        verdict = (
            ("CEAG ÷ Cooper alone " if s.model == "mlp" else "")
            + f"<= {r['target']:.2f} "
            + ("met" if r["met"] else "MISSED")
        )
        print(
            f"{s.label:<26} {s.batch:>5} {groups:>6} {f'{s.repetitions} x {s.steps}':>12} "
            f"{r['nft_ms']:>11.3f} {r['ceag_ms']:>12.3f} {r['ratio']:>6.3f} {r['ratio_of_medians']:>7.3f}  "
            f"{verdict}"
        )
    print("ratio = median of the per-repetition CEAG/NFT ratios; med/med = median CEAG / median NFT")
    if "mlp" in results:
        r = results["mlp"]
        print(
            f"P1a, the library's own overhead on {chosen['mlp'].label}: Cooper alone (the NFT loss and "
            f"a trivial 10-row constraint, no statistics, no guard) {r['cooper_ms']:.3f} ms/step; "
            f"CEAG ÷ Cooper alone {r['ratio_to_cooper']:.3f} (target <= {P1A_TARGET:.2f}); the step "
            f"before this round (present groups, guard every step) {r['before_ms']:.3f} ms/step, "
            f"÷ Cooper alone {r['before_ratio_to_cooper']:.3f}"
        )
    if "mlp" in chosen and not args.no_floors:
        results["mlp"]["floors"] = floors(
            chosen["mlp"], args.device, compiled=not (args.quick or args.no_compile)
        )
    if args.profile:
        for name, s in chosen.items():
            results[name]["profile"] = profile(s, args.dual, args.device, args.profile_steps or s.steps, 10)
    return results


if __name__ == "__main__":
    main()
