from collections import deque

import pytest
import torch

from constrained_fairness import buffer as buffer_module
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


@pytest.fixture(params=["one_hot", "sort"])
def rank_path(request, monkeypatch):
    """Both ways of ranking samples within their group: a one-hot count, or a sort."""
    monkeypatch.setattr(buffer_module, "_ONE_HOT_LIMIT", 1 << 30 if request.param == "one_hot" else 0)
    return request.param


def test_matches_deque_reference_over_many_batches(rank_path):
    batches = [(torch.rand(n), torch.randint(0, 6, (n,))) for n in [3, 17, 1, 40, 9, 64, 2]]
    run_against_deques(6, 5, batches)


def test_overflow_inside_one_batch_keeps_last_k(rank_path):
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
