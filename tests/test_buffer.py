from collections import deque

import pytest
import torch

from constrained_fairness.buffer import ReplayBuffer
from constrained_fairness.errors import ConfigError


def run_against_deques(num_groups, k, batches):
    buf = ReplayBuffer(num_groups, k)
    ref = [deque(maxlen=k) for _ in range(num_groups)]
    for values, groups in batches:
        buf.push(values, groups)
        for v, g in zip(values.tolist(), groups.tolist(), strict=True):
            ref[g].append(v)
        for g in range(num_groups):
            assert buf.contents(g).tolist() == pytest.approx(list(ref[g]))
            assert int(buf.fill[g]) == len(ref[g])
            assert bool(buf.is_full[g]) == (len(ref[g]) == k)
            if ref[g]:
                assert float(buf.means()[g]) == pytest.approx(sum(ref[g]) / len(ref[g]), rel=1e-6)
    return buf


def test_matches_deque_reference_over_many_batches():
    batches = [(torch.rand(n), torch.randint(0, 6, (n,))) for n in [3, 17, 1, 40, 9, 64, 2]]
    run_against_deques(6, 5, batches)


def test_many_groups_and_overflow_mixed_with_normal_groups():
    gen = torch.Generator().manual_seed(3)
    batches = [
        (torch.rand(n, generator=gen), torch.randint(0, 300, (n,), generator=gen)) for n in [500, 7, 900]
    ]
    skewed = torch.cat([torch.zeros(30, dtype=torch.long), torch.randint(0, 300, (70,), generator=gen)])
    run_against_deques(300, 3, [*batches, (torch.rand(100, generator=gen), skewed)])


def test_full_means_are_the_full_groups_and_their_deque_means():
    gen = torch.Generator().manual_seed(4)
    buf = ReplayBuffer(7, 4)
    ref = [deque(maxlen=4) for _ in range(7)]
    for n in [5, 11, 3, 20]:
        values, groups = torch.rand(n, generator=gen), torch.randint(0, 7, (n,), generator=gen)
        buf.push(values, groups)
        for v, g in zip(values.tolist(), groups.tolist(), strict=True):
            ref[g].append(v)
        ids, means = buf.full_means()
        expected = [g for g in range(7) if len(ref[g]) == 4]
        assert ids.tolist() == expected
        assert means.tolist() == pytest.approx([sum(ref[g]) / 4 for g in expected], rel=1e-6)


def test_overflow_inside_one_batch_keeps_last_k():
    values = torch.arange(20, dtype=torch.float32)
    groups = torch.tensor([0] * 12 + [1] * 3 + [0] * 5)
    buf = run_against_deques(2, 4, [(values, groups)])
    assert buf.contents(0).tolist() == [16.0, 17.0, 18.0, 19.0]
    assert buf.is_full.tolist() == [True, False]


def test_full_mask_and_state_round_trip():
    buf = ReplayBuffer(3, 2)
    buf.push(torch.tensor([1.0, 0.0, 1.0]), torch.tensor([0, 0, 1]))
    assert buf.is_full.tolist() == [True, False, False]
    other = ReplayBuffer(3, 2)
    other.load_state_dict(buf.state_dict())
    assert torch.equal(other.values, buf.values) and torch.equal(other.fill, buf.fill)


def test_size_zero_is_a_clear_error():
    with pytest.raises(ConfigError, match="buffer size"):
        ReplayBuffer(3, 0)


def test_values_and_groups_of_different_lengths_are_an_error():
    with pytest.raises(ValueError, match="3 values but 2 group ids"):
        ReplayBuffer(2, 4).push(torch.ones(3), torch.tensor([0, 1]))
