"""Stratified loaders with the ``fairness_training`` signature, without its defects.

``create_stratified_dataloaders`` returns one ``DataLoader`` per split given. Training
batches keep the proportions of the intersectional cells of the protected columns:

* cell ``c`` with ``n_c`` of the ``N`` training rows gets ``q_c`` rows in every batch,
  ``q_c ≈ B n_c / N`` by largest remainders with ``Σ_c q_c = B`` and ``q_c ≥ 1``, so every
  cell appears in every batch;
* an epoch has ``K = min_c ⌊n_c / q_c⌋`` batches; the ``N − K B`` rows that cannot fill a
  complete batch are left out of that epoch (a different random subset each epoch), and
  one warning states the count;
* every epoch reshuffles, within the cells, within the batches and the batch order, from a
  generator seeded with ``(seed, epoch)``.

Evaluation loaders keep every row, in order.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from ..errors import ConfigError, DataError
from ..groups import present_cells


def _as_tensor(values: Any, name: str) -> torch.Tensor:
    tensor = values if isinstance(values, torch.Tensor) else torch.as_tensor(np.asarray(values))
    if tensor.numel() == 0:
        raise DataError(f"{name} is empty; pass at least one row")
    return tensor.float()


def protected_columns(X: torch.Tensor, protected_attr_idx: int | Sequence[int]) -> torch.Tensor:
    """The ``(N, A)`` integer codes of the protected columns of ``X`` (values must be discrete)."""
    idx = [protected_attr_idx] if isinstance(protected_attr_idx, int) else list(protected_attr_idx)
    if not idx:
        raise ConfigError("protected_attr_idx is empty; name at least one column of X")
    for i in idx:
        if not isinstance(i, int) or not -X.shape[1] <= i < X.shape[1]:
            raise ConfigError(f"protected_attr_idx {i!r} is out of range for X with {X.shape[1]} columns")
    columns = X[:, idx]
    if not torch.equal(columns, columns.round()):
        bad = idx[int((columns != columns.round()).any(0).nonzero()[0])]
        raise DataError(
            f"protected column {bad} of X is not discrete (non-integer values); encode it as codes"
        )
    return columns.long()


def apportion(counts: np.ndarray, batch_size: int) -> np.ndarray:
    """Rows per batch of each cell: ``q_c ≥ 1``, ``Σ q_c = B``, ``q_c ≈ B n_c / N`` (largest remainders)."""
    if batch_size < len(counts):
        raise ConfigError(
            f"batch_size_train={batch_size} is smaller than the {len(counts)} intersectional cells; "
            "every cell must fit in every batch, so use a larger batch"
        )
    share = batch_size * counts / counts.sum()
    quota = np.maximum(np.floor(share).astype(np.int64), 1)
    while quota.sum() > batch_size:  # the floor of 1 overshot: take from the largest
        quota[np.argmax(quota - share)] -= 1
    order = np.argsort(-(share - quota), kind="stable")
    quota[order[: batch_size - quota.sum()]] += 1
    return quota


class StratifiedBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Yields the index batches described in the module docstring; reshuffles every epoch."""

    def __init__(self, cells: torch.Tensor, batch_size: int, seed: int = 0) -> None:
        self.cells = cells.numpy()
        self.counts = np.bincount(self.cells)
        self.quota = apportion(self.counts, batch_size)
        self.num_batches = int((self.counts // self.quota).min())
        if self.num_batches == 0:
            raise DataError("a protected cell has too few rows for one stratified batch; use a smaller batch")
        self.members = [np.flatnonzero(self.cells == c) for c in range(len(self.counts))]
        self.seed = seed
        self.epoch = 0
        self.dropped = len(self.cells) - self.num_batches * batch_size

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        parts = [
            rng.permutation(rows)[: self.num_batches * q].reshape(self.num_batches, q)
            for rows, q in zip(self.members, self.quota, strict=True)
        ]
        batches = np.concatenate(parts, axis=1)  # (K, B): row k holds batch k, cell by cell
        batches = rng.permuted(batches, axis=1)[rng.permutation(self.num_batches)]
        yield from batches.tolist()


def create_stratified_dataloaders(
    X_train: Any,
    y_train: Any,
    X_val: Any = None,
    y_val: Any = None,
    X_test: Any = None,
    y_test: Any = None,
    protected_attr_idx: int | Sequence[int] = 0,
    batch_size_train: int = 256,
    batch_size_eval: int = 256,
    seed: int = 0,
) -> tuple[DataLoader, ...]:
    """Training loader (stratified, reshuffled each epoch) plus one evaluation loader per
    further split given; numpy arrays or tensors; batches are ``(X, y)`` float tensors."""
    if batch_size_train < 1 or batch_size_eval < 1:
        raise ConfigError(f"batch sizes must be >= 1, got {batch_size_train} and {batch_size_eval}")
    X, y = _as_tensor(X_train, "X_train"), _as_tensor(y_train, "y_train")
    if len(X) != len(y):
        raise DataError(f"X_train has {len(X)} rows but y_train {len(y)}; pass matching arrays")
    sampler = StratifiedBatchSampler(
        present_cells(protected_columns(X, protected_attr_idx))[1], batch_size_train, seed
    )
    if sampler.dropped:
        warnings.warn(
            f"{sampler.dropped} of {len(X)} training rows cannot fill a complete stratified batch and are "
            "left out of each epoch (a new random subset every epoch); evaluation loaders keep every row",
            stacklevel=2,
        )
    loaders = [DataLoader(TensorDataset(X, y), batch_sampler=sampler)]
    for name, (Xs, ys) in (("val", (X_val, y_val)), ("test", (X_test, y_test))):
        if Xs is None and ys is None:
            continue
        if Xs is None or ys is None:
            raise ConfigError(f"pass both X_{name} and y_{name}, or neither")
        Xe, ye = _as_tensor(Xs, f"X_{name}"), _as_tensor(ys, f"y_{name}")
        if len(Xe) != len(ye):
            raise DataError(f"X_{name} has {len(Xe)} rows but y_{name} {len(ye)}; pass matching arrays")
        protected_columns(Xe, protected_attr_idx)  # same checks as for training
        loaders.append(DataLoader(TensorDataset(Xe, ye), batch_size=batch_size_eval, shuffle=False))
    return tuple(loaders)
