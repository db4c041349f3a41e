"""Stratified loaders: proportions, every cell in every batch, reshuffling, no dropped evaluation rows."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from constrained_fairness.data.stratified import create_stratified_dataloaders
from constrained_fairness.errors import ConfigError, DataError

pytestmark = pytest.mark.filterwarnings("ignore:.*training rows cannot fill")


def make(n: int = 1000, seed: int = 0):
    rng = np.random.default_rng(seed)
    a = rng.choice(2, size=n, p=[0.7, 0.3])
    b = rng.choice(3, size=n, p=[0.5, 0.3, 0.2])
    x = np.column_stack([a, b, rng.normal(size=(n, 3))]).astype(np.float32)
    y = (rng.random(n) < 0.4).astype(np.float32)
    return x, y


def cells_of(batch_x: torch.Tensor) -> list[tuple[int, int]]:
    return [(int(r[0]), int(r[1])) for r in batch_x[:, :2]]


def test_every_batch_has_every_cell_in_proportion_and_the_drop_is_announced_once():
    x, y = make()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (train,) = create_stratified_dataloaders(
            x, y, protected_attr_idx=[0, 1], batch_size_train=100, seed=1
        )
    counts = {
        c: int(((x[:, 0] == c[0]) & (x[:, 1] == c[1])).sum())
        for c in {(a, b) for a in (0, 1) for b in (0, 1, 2)}
    }
    batches = list(train)
    seen = sum(len(bx) for bx, _ in batches)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and f"{len(x) - seen} of {len(x)} training rows" in messages[0]
    for bx, _ in batches:
        assert len(bx) == 100
        in_batch = {c: cells_of(bx).count(c) for c in counts}
        for c, n in counts.items():
            assert in_batch[c] >= 1
            assert abs(in_batch[c] - 100 * n / len(x)) < 1.0 + 1e-9  # largest-remainder apportionment


def test_each_epoch_is_reshuffled_and_seeded():
    x, y = make()
    (a,) = create_stratified_dataloaders(x, y, protected_attr_idx=[0, 1], batch_size_train=50, seed=3)
    (b,) = create_stratified_dataloaders(x, y, protected_attr_idx=[0, 1], batch_size_train=50, seed=3)
    first, second = [bx for bx, _ in a], [bx for bx, _ in a]
    assert not torch.equal(first[0], second[0])  # a new composition every epoch
    assert all(
        torch.equal(p, q) for p, q in zip(first, [bx for bx, _ in b], strict=True)
    )  # same seed, same order


def test_evaluation_loaders_keep_every_row_in_order_and_count_matches_the_splits():
    x, y = make()
    xv, yv = make(1000 - 232, seed=5)
    loaders = create_stratified_dataloaders(x, y, xv, yv, protected_attr_idx=0, batch_size_eval=256)
    assert len(loaders) == 2
    rows = torch.cat([bx for bx, _ in loaders[1]])
    assert torch.equal(rows, torch.as_tensor(xv))  # 768 rows, none dropped
    assert len(create_stratified_dataloaders(x, y, xv, yv, xv, yv, batch_size_train=64)) == 3


def test_tensors_and_multi_valued_attributes_are_accepted():
    x, y = make()
    (train,) = create_stratified_dataloaders(
        torch.as_tensor(x), torch.as_tensor(y), protected_attr_idx=1, batch_size_train=30
    )
    bx, _ = next(iter(train))
    assert bx.dtype == torch.float32 and set(bx[:, 1].tolist()) == {0.0, 1.0, 2.0}


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"protected_attr_idx": 9}, ConfigError, "protected_attr_idx 9 is out of range"),
        ({"protected_attr_idx": 2}, DataError, "protected column 2 of X is not discrete"),
        (
            {"protected_attr_idx": [0, 1], "batch_size_train": 4},
            ConfigError,
            "smaller than the 6 intersectional cells",
        ),
    ],
)
def test_bad_input_is_a_clear_error(kwargs, error, message):
    x, y = make()
    with pytest.raises(error, match=message):
        create_stratified_dataloaders(x, y, **kwargs)
