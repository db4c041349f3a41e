"""Seeded mini-batches over in-memory tensors.

The order of epoch ``e`` is a permutation drawn from a generator seeded with
``(seed, e)``, so it does not depend on anything that happened before: a run resumed at
epoch ``e`` sees exactly the batches it would have seen, and every epoch is reshuffled.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ..errors import DataError

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def shard(indices: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """This rank's contiguous share of a global batch of indices (DDP)."""
    per_rank = -(-len(indices) // world)
    return indices[rank * per_rank : (rank + 1) * per_rank]


class TensorBatches:
    """Mini-batches ``(inputs, targets, attributes)``; the last, smaller batch is kept.

    Under DDP (``world > 1``) ``batch_size`` is the global batch; rank ``r`` yields its
    contiguous share of each global batch, and the last, incomplete global batch is
    dropped so that every rank holds an equal share.
    """

    def __init__(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        attributes: torch.Tensor,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.inputs, self.targets, self.attributes = inputs, targets, attributes
        self.rank, self.world = rank, world
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed

    def __len__(self) -> int:
        n = len(self.targets)
        return n // self.batch_size if self.world > 1 else -(-n // self.batch_size)

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[Batch]:
        """The batches of ``epoch`` in its seeded order, without the first ``skip`` (a resume)."""
        n = len(self.targets)
        if self.world > 1:
            if n < self.batch_size:
                raise DataError(
                    f"the training split has {n} rows, fewer than one global batch of {self.batch_size}; "
                    "lower the batch size"
                )
            n_batches = n // self.batch_size
        else:
            n_batches = -(-n // self.batch_size)
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(n, generator=generator)
        else:
            order = torch.arange(n)
        for start in range(skip * self.batch_size, n_batches * self.batch_size, self.batch_size):
            idx = shard(order[start : start + self.batch_size], self.rank, self.world)
            yield self.inputs[idx], self.targets[idx], self.attributes[idx]


class LoaderBatches:
    """Mini-batches ``(inputs, targets, attributes)`` of a map-style dataset through a
    ``DataLoader``; epoch ``e`` is shuffled by a generator seeded with ``(seed, e)``.

    Worker processes get seeds derived from the same generator, so data augmentation is
    reproducible too (on CPU, for a fixed ``num_workers``). The last, incomplete batch of
    an epoch is dropped when the split holds more than one batch: batch-norm layers
    cannot train on a batch of one, and the order changes every epoch anyway.
    """

    def __init__(
        self,
        dataset: torch.utils.data.Dataset,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        num_workers: int = 0,
        pin_memory: bool = False,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.rank, self.world = rank, world
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.num_workers = num_workers
        self.pin_memory = pin_memory

    @property
    def drop_last(self) -> bool:
        n = len(self.dataset)  # type: ignore[arg-type]
        if self.world > 1 and n < self.batch_size:
            raise DataError(
                f"the training split has {n} images, fewer than one global batch of {self.batch_size}; "
                "lower the batch size"
            )
        return n > self.batch_size or self.world > 1

    def __len__(self) -> int:
        n = len(self.dataset)  # type: ignore[arg-type]
        return n // self.batch_size if self.drop_last else 1

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[Batch]:
        """The batches of ``epoch`` in its seeded order, without the first ``skip`` (a resume;
        the order is exact, augmentation draws in worker processes are not replayed)."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        n = len(self.dataset)  # type: ignore[arg-type]
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        stop = n - n % self.batch_size if self.drop_last else n
        batches = [
            shard(order[s : s + self.batch_size], self.rank, self.world).tolist()
            for s in range(skip * self.batch_size, stop, self.batch_size)
        ]
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=batches,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            generator=generator,
        )
        yield from loader
