"""Seeded mini-batches over in-memory tensors, a dataset (``DataLoader``) or an image cache.

The order of epoch ``e`` is a permutation drawn from a generator seeded with
``(seed, e)``, so it does not depend on anything that happened before: a run resumed at
epoch ``e`` sees exactly the batches it would have seen, and every epoch is reshuffled.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ..data.cache import CachedImages
from ..data.transforms import augmentation_generator, draw_augmentation
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
        # drawn on the CPU (the same order on every device), copied to the data's device once
        # per epoch: indexing device tensors with a CPU index copies it there at every batch
        order = epoch_order(n, self.seed, epoch, self.shuffle)[0].to(self.targets.device)
        for start in range(skip * self.batch_size, n_batches * self.batch_size, self.batch_size):
            idx = shard(order[start : start + self.batch_size], self.rank, self.world)
            yield self.inputs[idx], self.targets[idx], self.attributes[idx]


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True) -> tuple[torch.Tensor, torch.Generator]:
    """The order of epoch ``epoch`` over ``n`` items, ``randperm(n)`` from a CPU generator seeded with
    ``seed * 1_000_003 + epoch`` (``arange(n)`` without shuffling), and that generator (the
    ``DataLoader`` of :class:`LoaderBatches` draws its worker seeds from it next)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    return order, generator


def loader_drop_last(n: int, batch_size: int, world: int) -> bool:
    """Whether an epoch of ``n`` images drops its last, incomplete batch: when the split holds more
    than one batch, and always under DDP (``world > 1``), where it must hold one global batch."""
    if world > 1 and n < batch_size:
        raise DataError(
            f"the training split has {n} images, fewer than one global batch of {batch_size}; "
            "lower the batch size"
        )
    return n > batch_size or world > 1


def global_batches(
    order: torch.Tensor, batch_size: int, drop_last: bool, skip: int = 0
) -> Iterator[tuple[int, torch.Tensor]]:
    """``(k, order[k B : (k + 1) B])`` for the batches ``k >= skip`` of an epoch; with ``drop_last`` the
    last ``n mod B`` items are left out."""
    n = len(order)
    stop = n - n % batch_size if drop_last else n
    for start in range(skip * batch_size, stop, batch_size):
        yield start // batch_size, order[start : start + batch_size]


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
        return loader_drop_last(len(self.dataset), self.batch_size, self.world)  # type: ignore[arg-type]

    def __len__(self) -> int:
        n = len(self.dataset)  # type: ignore[arg-type]
        return n // self.batch_size if self.drop_last else 1

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[Batch]:
        """The batches of ``epoch`` in its seeded order, without the first ``skip`` (a resume;
        the order is exact, augmentation draws in worker processes are not replayed)."""
        n = len(self.dataset)  # type: ignore[arg-type]
        order, generator = epoch_order(n, self.seed, epoch, self.shuffle)
        batches = [
            shard(idx, self.rank, self.world).tolist()
            for _, idx in global_batches(order, self.batch_size, self.drop_last, skip)
        ]
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=batches,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            generator=generator,
        )
        yield from loader


class CachedBatches:
    """The batches of :class:`LoaderBatches` (same order, same dropped last batch, same DDP shares)
    gathered from an image cache (:class:`~constrained_fairness.data.cache.CachedImages`) and
    transformed on its device, without a ``DataLoader``.

    Random crops and flips of batch ``k`` of epoch ``e`` are drawn for the whole global batch from a
    CPU generator seeded with ``(seed, e, k)``
    (:func:`~constrained_fairness.data.transforms.augmentation_generator`), then sharded like the
    indices: a resumed epoch (``skip``) replays them exactly, and they do not depend on the number of
    ranks. They follow torchvision's distribution, not its draws, so the augmented batches differ
    from those of :class:`LoaderBatches`; deterministic pipelines give the same bits on the CPU.
    """

    def __init__(
        self,
        source: CachedImages,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.source = source
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank, self.world = rank, world

    @property
    def drop_last(self) -> bool:
        return loader_drop_last(len(self.source), self.batch_size, self.world)

    def __len__(self) -> int:
        n = len(self.source)
        return n // self.batch_size if self.drop_last else 1

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[Batch]:
        """``(inputs float32 on the cache's device, targets, attributes)`` of the batches of ``epoch``
        in its seeded order, without the first ``skip`` (a resume, exact including augmentation)."""
        order, _ = epoch_order(len(self.source), self.seed, epoch, self.shuffle)
        pipeline = self.source.pipeline
        for k, idx in global_batches(order, self.batch_size, self.drop_last, skip):
            mine = shard(idx, self.rank, self.world)
            augmentation = None
            if pipeline.random:
                generator = augmentation_generator(self.seed, epoch, k)
                drawn = draw_augmentation(pipeline, len(idx), generator)
                augmentation = None if drawn is None else drawn.shard(self.rank, self.world)
            yield (
                self.source.batch(mine, augmentation),
                self.source.targets[mine],
                self.source.attributes[mine],
            )
