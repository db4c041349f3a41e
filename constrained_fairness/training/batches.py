"""Seeded mini-batches over in-memory tensors.

The order of epoch ``e`` is a permutation drawn from a generator seeded with
``(seed, e)``, so it does not depend on anything that happened before: a run resumed at
epoch ``e`` sees exactly the batches it would have seen, and every epoch is reshuffled.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class TensorBatches:
    """Mini-batches ``(inputs, targets, attributes)``; the last, smaller batch is kept."""

    def __init__(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        attributes: torch.Tensor,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
    ) -> None:
        self.inputs, self.targets, self.attributes = inputs, targets, attributes
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed

    def __len__(self) -> int:
        return -(-len(self.targets) // self.batch_size)

    def epoch(self, epoch: int) -> Iterator[Batch]:
        n = len(self.targets)
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(n, generator=generator)
        else:
            order = torch.arange(n)
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            yield self.inputs[idx], self.targets[idx], self.attributes[idx]
