"""The built-in constraints: brute-force statistics, and training that satisfies them."""

from __future__ import annotations

from collections import deque

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from constrained_fairness.config import DualConfig
from constrained_fairness.constraints import (
    AccuracyParity,
    BatchOutputs,
    BoundedGroupLoss,
    DemographicParity,
    EqualizedLoss,
    EqualizedOdds,
    EqualOpportunity,
    GroupStatisticConstraint,
)
from constrained_fairness.errors import ConfigError
from constrained_fairness.groups import GroupIndex, Grouping
from constrained_fairness.problem import FairnessProblem
from constrained_fairness.training.optimizers import build_cooper_optimizer

# -- brute force ---------------------------------------------------------------------------


def brute_force(constraint: GroupStatisticConstraint, kind: str, out: BatchOutputs) -> list[list[float]]:
    """Per-group loops over samples for every row of every group (NaN when absent)."""
    grouping = constraint.grouping
    pred = out.logits.argmax(1)
    c = getattr(constraint, "positive_class", 1)
    names = grouping.index.attribute_names
    codes = out.attributes[:, list(grouping.columns)].tolist()

    offsets = [sum(grouping.index.cardinalities[:a]) for a in range(len(names))]

    def attribute_of(g: int) -> int:
        return (
            0 if grouping.mode == "intersectional" else max(i for i in range(len(names)) if offsets[i] <= g)
        )

    def members(g: int) -> list[int]:
        if grouping.mode == "intersectional":
            target = [int(v) for v in _decode(g, grouping.index.cardinalities)]
            return [n for n in range(len(codes)) if codes[n] == target]
        a = attribute_of(g)
        return [n for n in range(len(codes)) if codes[n][a] == g - offsets[a]]

    def value(n: int) -> float:
        if kind in ("dp", "eopp", "eodds"):
            return float(pred[n] == c)
        if kind == "acc":
            return float(pred[n] == out.targets[n])
        return float(out.losses[n])

    def keep(n: int, label: int | None) -> bool:
        if kind == "eopp":
            return int(out.targets[n]) == c
        if kind == "eodds":
            return int(int(out.targets[n]) == c) == label
        return True

    labels = [0, 1] if kind == "eodds" else [None]
    stats, overall, partition = [], [], []
    for g in range(grouping.num_groups):
        for label in labels:
            partition.append((attribute_of(g), label))
            m = [n for n in members(g) if keep(n, label)]
            stats.append(sum(value(n) for n in m) / len(m) if m else float("nan"))
            part = [n for n in range(len(codes)) if keep(n, label)]
            overall.append(sum(value(n) for n in part) / len(part))
    eps = constraint.tolerance
    if kind == "bgl":
        return [[s - eps for s in stats]]
    if constraint.form == "max_min":  # the minimum within each partition (attribute, label)
        low = {
            p: min(s for s, q in zip(stats, partition, strict=True) if q == p and s == s) for p in partition
        }
        return [[s - low[p] - eps for s, p in zip(stats, partition, strict=True)]]
    return [
        [s - o - eps for s, o in zip(stats, overall, strict=True)],
        [o - s - eps for s, o in zip(stats, overall, strict=True)],
    ]


def _decode(g: int, cards: tuple[int, ...]) -> list[int]:
    out = []
    for card in reversed(cards):
        out.append(g % card)
        g //= card
    return list(reversed(out))


def random_outputs(n: int, cards: list[int], seed: int, num_classes: int = 2) -> BatchOutputs:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, num_classes, generator=gen)
    targets = torch.randint(0, num_classes, (n,), generator=gen)
    attributes = torch.stack([torch.randint(0, c, (n,), generator=gen) for c in cards], 1)
    return BatchOutputs(logits, targets, attributes, F.cross_entropy(logits, targets, reduction="none"))


INDEX = GroupIndex.from_lists(["a", "b"], [["x", "y"], ["p", "q", "r"]])
FACTORIES = {
    "dp": lambda g, form: DemographicParity(g, 0.02, 2, form=form),
    "eopp": lambda g, form: EqualOpportunity(g, 0.02, 2, form=form),
    "eodds": lambda g, form: EqualizedOdds(g, 0.02, 2, form=form),
    "acc": lambda g, form: AccuracyParity(g, 0.02, form=form),
    "bgl": lambda g, form: BoundedGroupLoss(g, 0.7),
}


@pytest.mark.parametrize("kind", list(FACTORIES))
@pytest.mark.parametrize("mode", ["intersectional", "marginal"])
@pytest.mark.parametrize("form", ["group_vs_overall", "max_min"])
def test_strict_statistics_equal_a_per_group_loop(kind, mode, form):
    out = random_outputs(300, [2, 3], seed=len(kind) + len(mode) + len(form))
    constraint = FACTORIES[kind](Grouping.create(INDEX, ["a", "b"], mode), form)
    got = constraint.evaluate(out)
    expected = torch.tensor(brute_force(constraint, kind, out), dtype=torch.float64)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-6, equal_nan=True)
    assert len(constraint.row_names()) == got.numel()


def test_buffered_strict_violation_matches_deques_in_marginal_mode():
    grouping = Grouping.create(INDEX, ["a", "b"], "marginal")
    k = 5
    constraint = DemographicParity(grouping, 0.0, 2, buffer_size=k)
    queues = [deque(maxlen=k) for _ in range(grouping.num_groups)]
    seen = [0] * grouping.num_groups
    for step in range(6):
        out = random_outputs(17, [2, 3], seed=100 + step)
        state = constraint.compute(out)
        pred = (out.logits.argmax(1) == 1).float().tolist()
        for n, (a, b) in enumerate(out.attributes.tolist()):
            for g in (a, 2 + b):
                queues[g].append(pred[n])
                seen[g] += 1
        full = [g for g in range(grouping.num_groups) if len(queues[g]) == k]
        if not full:
            continue
        est = {g: sum(queues[g]) / k for g in full}
        expected = {}
        for part in ([0, 1], [2, 3, 4]):
            members = [g for g in part if g in est]
            if not members:
                continue
            overall = sum(seen[g] * est[g] for g in members) / sum(seen[g] for g in members)
            for g in members:
                expected[g] = est[g] - overall
        ids = state.strict_constraint_features.tolist()
        values = state.strict_violation.tolist()
        G = grouping.num_groups
        for i, v in zip(ids, values, strict=True):
            row, g = divmod(i, G)
            assert v == pytest.approx(expected[g] if row == 0 else -expected[g], abs=1e-6)


def test_one_thousand_groups_step_equals_brute_force():
    cards = [10, 10, 10]
    index = GroupIndex.from_lists(["u", "v", "w"], [[str(i) for i in range(c)] for c in cards])
    grouping = Grouping.create(index, None, "intersectional")
    assert grouping.num_groups == 1000
    constraint = DemographicParity(grouping, 0.01, 2, buffer_size=2)
    out = random_outputs(6000, cards, seed=7)
    out.logits.requires_grad_(True)
    state = constraint.compute(out)
    ids = grouping.memberships(out.attributes)[1].tolist()
    soft = torch.sigmoid(out.logits[:, 1] - out.logits[:, 0]).detach().tolist()
    hard = (out.logits.argmax(1) == 1).float().tolist()
    by_group: dict[int, list[int]] = {}
    for n, g in enumerate(ids):
        by_group.setdefault(g, []).append(n)
    present = sorted(by_group)
    overall_soft = sum(soft) / len(soft)
    proxy = dict(zip(state.constraint_features.tolist(), state.violation.detach().tolist(), strict=True))
    for g in present:
        mean = sum(soft[n] for n in by_group[g]) / len(by_group[g])
        assert proxy[g] == pytest.approx(mean - overall_soft - 0.01, abs=1e-5)
        assert proxy[g + 1000] == pytest.approx(overall_soft - mean - 0.01, abs=1e-5)
    full = [g for g in present if len(by_group[g]) >= 2]
    est = {g: sum(hard[n] for n in by_group[g][-2:]) / 2 for g in full}
    overall = sum(len(by_group[g]) * est[g] for g in full) / sum(len(by_group[g]) for g in full)
    strict = dict(
        zip(state.strict_constraint_features.tolist(), state.strict_violation.tolist(), strict=True)
    )
    assert sorted(g for g in strict if g < 1000) == full
    for g in full:
        assert strict[g] == pytest.approx(est[g] - overall - 0.01, abs=1e-5)


# -- training satisfies the constraints ----------------------------------------------------


def group_shift_data(n: int = 2000, seed: int = 0):
    """Group a=1 (30 %) has a higher threshold and noisier labels than a=0."""
    gen = torch.Generator().manual_seed(seed)
    a = (torch.rand(n, generator=gen) < 0.3).long()
    x1, x2 = torch.randn(n, generator=gen), torch.randn(n, generator=gen)
    noise = torch.randn(n, generator=gen) * torch.where(a == 1, 1.0, 0.1)
    y = torch.where(a == 1, x1 + noise > 1.0, x1 + noise > 0.0).long()
    return torch.stack([x1, x2, a.float()], 1), y, a.unsqueeze(1)


def different_rule_data(n: int = 2000, seed: int = 0):
    """The minority's label follows another feature; the model does not see the group."""
    gen = torch.Generator().manual_seed(seed)
    a = (torch.rand(n, generator=gen) < 0.2).long()
    x = torch.randn(n, 2, generator=gen)
    return x, torch.where(a == 1, x[:, 1] > 0, x[:, 0] > 0).long(), a.unsqueeze(1)


def train(data, constraint, constrained: bool, measure=None, steps: int = 600, dual_lr: float = 0.2) -> float:
    """Full-batch Adam (LR × 0.3 at 50 % and 75 %), nuPI duals; the final max strict
    violation of ``measure`` (default: the trained constraint) on the training data."""
    torch.manual_seed(0)
    x, y, attributes = data
    model = nn.Sequential(nn.Linear(x.shape[1], 16), nn.ReLU(), nn.Linear(16, 2))
    problem = FairnessProblem([constraint] if constrained else [], ["c"] if constrained else [])
    duals = [DualConfig(lr=dual_lr, optimizer="nupi")] if constrained else []
    optimizer = build_cooper_optimizer(problem, torch.optim.Adam(model.parameters(), lr=0.02), duals)
    schedule = torch.optim.lr_scheduler.MultiStepLR(
        optimizer.primal_optimizers[0], [steps // 2, 3 * steps // 4], 0.3
    )
    for _ in range(steps):
        optimizer.roll({"model": model, "inputs": x, "targets": y, "attributes": attributes})
        schedule.step()
    with torch.no_grad():
        logits = model(x)
    out = BatchOutputs(logits, y, attributes, F.cross_entropy(logits, y, reduction="none"))
    violations = (measure or constraint).evaluate(out)
    return float(violations[~torch.isnan(violations)].max())


ONE = Grouping.create(GroupIndex.from_lists(["a"], [["0", "1"]]), ["a"], "intersectional")
T = 0.3  # proxy temperature used for every rate and accuracy constraint below
CASES = {  # name: (data, ε, constraint at a given tolerance)
    "demographic_parity": (
        group_shift_data,
        0.03,
        lambda tol: DemographicParity(ONE, tol, 2, buffer_size=0, temperature=T),
    ),
    "demographic_parity_max_min": (
        group_shift_data,
        0.03,
        lambda tol: DemographicParity(ONE, tol, 2, buffer_size=0, temperature=T, form="max_min"),
    ),
    "equal_opportunity": (
        group_shift_data,
        0.03,
        lambda tol: EqualOpportunity(ONE, tol, 2, buffer_size=0, temperature=T),
    ),
    "equalized_odds": (
        group_shift_data,
        0.08,
        lambda tol: EqualizedOdds(ONE, tol, 2, buffer_size=0, temperature=T),
    ),
    "accuracy_parity": (
        group_shift_data,
        0.03,
        lambda tol: AccuracyParity(ONE, tol, buffer_size=0, temperature=T),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_training_satisfies_each_builtin_constraint(name):
    """Unconstrained training breaks the constraint by more than 3ε; constrained training
    ends within ε. The constraint is trained at tolerance ε/2 and checked at ε: the
    constrained optimum lies on the boundary, around which the final iterate of
    gradient descent-ascent moves by about ±0.002 (measured), so a margin keeps the
    check stable."""
    make_data, eps, make = CASES[name]
    data = make_data()
    gap = make(0.0)  # strict violation at tolerance 0 is the gap itself
    assert train(data, make(eps / 2), constrained=False, measure=gap) > 3 * eps
    assert train(data, make(eps / 2), constrained=True, measure=gap) <= eps


def test_training_satisfies_bounded_group_loss():
    bound = 0.55
    data = different_rule_data()
    measure = BoundedGroupLoss(ONE, bound, buffer_size=0)  # violation L_g − b
    assert train(data, BoundedGroupLoss(ONE, bound - 0.02, buffer_size=0), False, measure=measure) > 3 * 0.03
    assert train(data, BoundedGroupLoss(ONE, bound - 0.02, buffer_size=0), True, measure=measure) <= 0.0


def test_rate_constraint_on_multiclass_target_needs_one_vs_rest():
    with pytest.raises(ConfigError, match="positive_class"):
        DemographicParity(ONE, 0.05, num_classes=4)
    assert DemographicParity(ONE, 0.05, num_classes=4, positive_class=2).positive_class == 2


def two_attribute_data(n: int = 3000, seed: int = 0):
    """Positive rates depend on both a (2 values) and b (3 values)."""
    gen = torch.Generator().manual_seed(seed)
    a = (torch.rand(n, generator=gen) < 0.4).long()
    b = torch.randint(0, 3, (n,), generator=gen)
    x1 = torch.randn(n, generator=gen)
    y = (x1 + 0.2 * torch.randn(n, generator=gen) > 0.8 * a.float() + 0.5 * b.float() - 0.5).long()
    return torch.stack([x1, a.float(), b.float()], 1), y, torch.stack([a, b], 1)


def test_marginal_constraints_on_two_attributes_hold_together():
    eps = 0.03
    grouping = Grouping.create(INDEX, ["a", "b"], "marginal")
    data = two_attribute_data()

    def make(tol: float) -> DemographicParity:
        return DemographicParity(grouping, tol, 2, buffer_size=0, temperature=T)

    gap = make(0.0)
    assert train(data, make(eps / 2), constrained=False, measure=gap) > 3 * eps
    torch.manual_seed(0)
    assert train(data, make(eps / 2), constrained=True, measure=gap) <= eps
    names = gap.row_names()
    assert names[:5] == ["a=x (above)", "a=y (above)", "b=p (above)", "b=q (above)", "b=r (above)"]


@pytest.mark.parametrize("kind", ["dp", "eopp", "eodds", "acc", "bgl"])
def test_multiclass_statistics_equal_a_per_group_loop(kind):
    """Accuracy and loss constraints take any number of classes; rates go one-vs-rest."""
    out = random_outputs(300, [2, 3], seed=11, num_classes=4)
    grouping = Grouping.create(INDEX, ["a", "b"], "intersectional")
    factories = {
        "dp": lambda: DemographicParity(grouping, 0.02, 4, positive_class=2),
        "eopp": lambda: EqualOpportunity(grouping, 0.02, 4, positive_class=2),
        "eodds": lambda: EqualizedOdds(grouping, 0.02, 4, positive_class=2),
        "acc": lambda: AccuracyParity(grouping, 0.02),
        "bgl": lambda: BoundedGroupLoss(grouping, 1.5),
    }
    constraint = factories[kind]()
    expected = torch.tensor(brute_force(constraint, kind, out), dtype=torch.float64)
    assert torch.allclose(constraint.evaluate(out), expected, atol=1e-6, equal_nan=True)


def test_training_satisfies_equalized_loss():
    eps = 0.05
    data = group_shift_data()
    gap = EqualizedLoss(ONE, 0.0)
    assert train(data, EqualizedLoss(ONE, eps / 2), constrained=False, measure=gap) > 3 * eps
    assert train(data, EqualizedLoss(ONE, eps / 2), constrained=True, measure=gap) <= eps


def prune_and_finetune(constrained: bool, eps: float, sparsity: float = 0.93) -> float:
    """Dense MLP → 93 % magnitude pruning → 30 epochs of mini-batch SGD, with or without
    CEAG (buffer k = 40); returns the train max EAG against the dense model."""
    from constrained_fairness.constraints import DenseReference, ExcessAccuracyGap
    from constrained_fairness.metrics import GroupStats, excess_accuracy_gap
    from constrained_fairness.sparsity import MagnitudePruner

    def stats(model: nn.Module) -> GroupStats:
        with torch.no_grad():
            logits = model(x)
        losses = F.cross_entropy(logits, y, reduction="none")
        return GroupStats.from_outputs((logits.argmax(1) == y).float(), losses, a[:, 0], 2)

    torch.manual_seed(0)
    x, y, a = group_shift_data()
    model = nn.Sequential(nn.Linear(3, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))
    adam = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(300):
        adam.zero_grad()
        F.cross_entropy(model(x), y).backward()
        adam.step()
    dense = stats(model)
    pruner = MagnitudePruner(model, dense_layers=["last"])
    pruner.prune_to(sparsity)
    constraint = ExcessAccuracyGap(DenseReference.from_stats(dense), eps, buffer_size=40, grouping=ONE)
    problem = FairnessProblem([constraint] if constrained else [], ["ceag"] if constrained else [])
    duals = [DualConfig(lr=0.2, optimizer="nupi")] if constrained else []
    sgd = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    optimizer = build_cooper_optimizer(problem, sgd, duals)
    generator = torch.Generator().manual_seed(1)
    for _ in range(30):
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y), 100):
            idx = order[start : start + 100]
            optimizer.roll({"model": model, "inputs": x[idx], "targets": y[idx], "attributes": a[idx]})
            pruner.apply()
    return float(excess_accuracy_gap(dense, stats(model)).max())


def test_training_satisfies_excess_accuracy_gap():
    eps = 0.01
    assert prune_and_finetune(constrained=False, eps=eps / 2) > 3 * eps
    assert prune_and_finetune(constrained=True, eps=eps / 2) <= eps
