import math

import torch

from constrained_fairness.groups import GroupIndex
from constrained_fairness.metrics import GroupStats, excess_accuracy_gap, group_means, max_over_present


def loop_stats(correct, losses, groups, num_groups):
    acc, loss, n = [], [], []
    for g in range(num_groups):
        idx = [i for i in range(len(groups)) if int(groups[i]) == g]
        n.append(len(idx))
        acc.append(sum(float(correct[i]) for i in idx) / len(idx) if idx else math.nan)
        loss.append(sum(float(losses[i]) for i in idx) / len(idx) if idx else math.nan)
    return n, acc, loss


def test_group_stats_match_python_loop():
    G = 7
    groups = torch.randint(0, G - 1, (500,))  # group G-1 is absent
    correct = torch.randint(0, 2, (500,)).float()
    losses = torch.rand(500)
    stats = GroupStats.from_outputs(correct, losses, groups, G)
    n, acc, loss = loop_stats(correct, losses, groups, G)
    assert stats.counts.tolist() == n
    for g in range(G):
        if n[g]:
            assert math.isclose(float(stats.accuracy[g]), acc[g], rel_tol=1e-9)
            assert math.isclose(float(stats.loss[g]), loss[g], rel_tol=1e-6)
        else:
            assert math.isnan(float(stats.accuracy[g]))
    assert math.isclose(stats.overall_accuracy, float(correct.double().mean()), rel_tol=1e-9)


def test_eag_matches_hand_computation_per_group():
    G = 5
    groups = torch.randint(0, G, (400,))
    dense_c, sparse_c = torch.randint(0, 2, (400,)).float(), torch.randint(0, 2, (400,)).float()
    losses = torch.rand(400)
    dense = GroupStats.from_outputs(dense_c, losses, groups, G)
    sparse = GroupStats.from_outputs(sparse_c, losses, groups, G)
    eag = excess_accuracy_gap(dense, sparse)
    _, acc_d, _ = loop_stats(dense_c, losses, groups, G)
    _, acc_s, _ = loop_stats(sparse_c, losses, groups, G)
    overall = float(dense_c.double().mean()) - float(sparse_c.double().mean())
    expected = [(acc_d[g] - acc_s[g]) - overall for g in range(G)]
    assert torch.allclose(eag, torch.tensor(expected, dtype=eag.dtype), atol=1e-12)
    assert math.isclose(max_over_present(eag), max(expected), rel_tol=1e-9)


def test_group_means_are_differentiable():
    values = torch.rand(10, requires_grad=True)
    groups = torch.tensor([0, 0, 1, 1, 1, 2, 2, 2, 2, 2])
    group_means(values, groups, 3).sum().backward()
    expected = torch.tensor([1 / 2] * 2 + [1 / 3] * 3 + [1 / 5] * 5)
    assert torch.allclose(values.grad, expected)


def test_intersectional_ids_and_names():
    index = GroupIndex.from_lists(["race", "sex"], [["A", "B", "C"], ["F", "M"]])
    codes = torch.tensor([[r, s] for r in range(3) for s in range(2)])
    assert index.ids(codes).tolist() == list(range(6))
    assert index.names == ["A|F", "A|M", "B|F", "B|M", "C|F", "C|M"]
    assert index.num_groups == 6
