"""The compiled CEAG rows (``constraints/ceag_fused.py``) against the tensor path they replace:
the same rows, gradients and buffer, bit for bit, over batches that overflow the buffer,
leave groups out, tie logits and hold NaN."""

from __future__ import annotations

import pytest
import torch

from constrained_fairness.constraints import DenseReference, ExcessAccuracyGap, ceag_fused
from constrained_fairness.constraints.base import BatchOutputs
from constrained_fairness.errors import DataError
from constrained_fairness.groups import GroupIndex, Grouping

pytestmark = pytest.mark.skipif(ceag_fused.kernels() is None, reason="numba is not installed")

CARDINALITIES = (2, 3)


def _pair(k: int, unweighted: bool = False) -> tuple[ExcessAccuracyGap, ExcessAccuracyGap]:
    gen = torch.Generator().manual_seed(1)
    index = GroupIndex.from_lists(["a", "b"], [["0", "1"], ["x", "y", "z"]])
    grouping = Grouping.create(index)
    g = grouping.num_groups
    counts = torch.randint(1, 50, (g,), generator=gen).float()
    ref = DenseReference(
        accuracy=torch.rand(g, generator=gen),
        loss=torch.rand(g, generator=gen) * 2,
        overall_accuracy=0.7134,
        overall_loss=0.8123,
        frequency=counts / counts.sum(),
    )
    made = []
    for _ in range(2):
        c = ExcessAccuracyGap(ref, 0.0137, k, "unweighted" if unweighted else "weighted", grouping)
        c.fixed_shapes = True
        made.append(c)
    return made[0], made[1]


def _batch(gen: torch.Generator, b: int, groups_used: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    logits = torch.randn(b, 3, generator=gen).round(decimals=1)  # rounding makes ties
    targets = torch.randint(0, 3, (b,), generator=gen)
    cells = torch.randint(0, groups_used, (b,), generator=gen)
    codes = torch.stack([cells // 3, cells % 3], 1)
    return logits, targets, codes


def _rows(constraint: ExcessAccuracyGap, logits, targets, codes, weights, fused: bool):
    leaf = logits.clone().requires_grad_(True)
    losses = torch.nn.functional.cross_entropy(leaf, targets, reduction="none")
    batch = BatchOutputs(leaf, targets, codes, losses)
    state = constraint.compute(batch) if fused else constraint.compute_fixed(batch)
    (state.violation * weights).sum().backward()
    return state, leaf.grad


def _assert_same(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("k,unweighted", [(3, False), (5, True), (40, False)])
def test_fused_rows_gradients_and_buffer_equal_the_tensor_path_bit_for_bit(k, unweighted):
    fused, tensor = _pair(k, unweighted)
    assert ceag_fused.applies(
        fused,
        BatchOutputs(torch.zeros(1, 3), torch.zeros(1).long(), torch.zeros(1, 2).long(), torch.zeros(1)),
    )
    gen = torch.Generator().manual_seed(k)
    for step, (b, used) in enumerate([(7, 2), (64, 6), (1, 6), (33, 4), (128, 6), (9, 6)] * 3):
        logits, targets, codes = _batch(gen, b, used)
        if step == 5:
            logits[0, 1] = float("nan")
        weights = torch.rand(6, generator=gen)
        got, got_grad = _rows(fused, logits, targets, codes, weights, fused=True)
        want, want_grad = _rows(tensor, logits, targets, codes, weights, fused=False)
        _assert_same(got.violation, want.violation)
        _assert_same(got.strict_violation, want.strict_violation)
        _assert_same(got_grad, want_grad)
        assert torch.equal(got.constraint_features, want.constraint_features)
        assert got.strict_violation.requires_grad is False
        _assert_same(fused.buffer.values, tensor.buffer.values)
        assert torch.equal(fused.buffer.pointer, tensor.buffer.pointer)
        assert torch.equal(fused.buffer.fill, tensor.buffer.fill)
    assert bool(fused.buffer.is_full.all())  # the strict rows were exercised with full buffers


def test_fused_rows_equal_a_per_group_loop():
    """Against the definition, computed group by group in the test (float64, tolerance)."""
    fused, _ = _pair(4)
    gen = torch.Generator().manual_seed(3)
    logits, targets, codes = _batch(gen, 50, 5)
    state, _ = _rows(fused, logits, targets, codes, torch.ones(6), fused=True)
    losses = torch.nn.functional.cross_entropy(logits.double(), targets, reduction="none")
    groups = codes[:, 0] * 3 + codes[:, 1]
    ref = fused.reference
    for g in range(6):
        members = groups == g
        if not members.any():
            assert float(state.violation.detach()[g]) == 0.0
            continue
        want = (losses[members].mean() - ref.loss[g]) - (losses.mean() - ref.overall_loss)
        assert float(state.violation.detach()[g]) == pytest.approx(float(want), rel=1e-5, abs=1e-6)
        correct = (logits.argmax(1) == targets)[members].double()
        assert torch.equal(fused.buffer.contents(g), correct[-4:].float()) or len(correct) < 4


def test_out_of_range_codes_raise_and_leave_the_buffer_alone():
    fused, _ = _pair(3)
    gen = torch.Generator().manual_seed(0)
    logits, targets, codes = _batch(gen, 10, 6)
    codes[4, 1] = 3
    before = fused.buffer.state_dict()
    with pytest.raises(DataError, match=r"row 4: \[.*3\].*\[2, 3\]"):
        _rows(fused, logits, targets, codes, torch.ones(6), fused=True)
    assert all(torch.equal(before[key], value) for key, value in fused.buffer.state_dict().items())
