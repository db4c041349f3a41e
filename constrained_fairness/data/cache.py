"""The image cache of ``data.cache: memory | device``: every image decoded once, batches transformed whole.

With ``data.cache: none`` a ``DataLoader`` decodes, resizes and normalises each item of every batch. A
cache instead decodes each image once, applies the deterministic spatial prefix of its pipeline (the
resize of :class:`~constrained_fairness.data.transforms.BatchTransform`; none for the reference UTKFace
and CIFAR-100 pipelines, which then need images of one size) and stores all of them as one uint8 array
``(N, 3, H, W)``. Batches are gathered from it by index and go through the rest of the pipeline as tensor
operations on whole batches (:func:`~constrained_fairness.data.transforms.apply_batch_transform`):

- ``memory``: the array stays on the host (a memory-mapped file); a batch is ``index_select``-ed there,
  moved to the device (optionally through pinned memory) and transformed on the device;
- ``device``: the whole array is copied to the device once; batches are gathered and transformed there.

The files, their validation and the parallel decode are :mod:`.cache_files`.
"""

from __future__ import annotations

import os
import warnings
import weakref
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from .cache_files import CACHE_FOLDER, array_cache, image_cache
from .images import ImageData, LabeledImages, PathLike
from .transforms import Augmentation, BatchTransform, apply_batch_transform

__all__ = [
    "CACHE_FOLDER",
    "CACHE_MODES",
    "CachedImages",
    "cache_image_data",
    "cached_source",
    "image_cache",
    "with_image_cache",
]

CACHE_MODES = ("memory", "device")
"""The values of ``data.cache`` that build a cache (``"none"`` does not)."""

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]

_DEVICE_COPIES: weakref.WeakValueDictionary[tuple[str, int, str], torch.Tensor] = (
    weakref.WeakValueDictionary()
)  # (npy file, its mtime, device) -> the array on that device, shared by train and train_eval


# --------------------------------------------------------------------------------------------------------
# The cached split.


def _host_tensor(array: np.ndarray) -> torch.Tensor:
    """``torch.from_numpy(array)`` without copying (read-only arrays are never written through it)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


class CachedImages(torch.utils.data.Dataset):
    """One split as a uint8 image cache, its labels and its batch pipeline.

    Args:
        images: uint8 ``(N, 3, H, W)`` (a memory map, or in memory), after the cache-time prefix.
        targets: class index per image ``(N,)``; attributes: attribute codes ``(N, A)``.
        pipeline: the rest of the pipeline, applied to gathered batches.
        cache: ``"memory"`` (gather on the host, then move) or ``"device"`` (the array copied to ``device``
            once; gather there).
        device: where batches are transformed and returned.
        pin_memory: ``memory`` on CUDA: gather into pinned memory, copy without blocking.
        path: the ``.npy`` file of the cache (``None`` for in-memory arrays); arrays of one file share one
            device copy.

    Attributes:
        images: the array as a tensor (host or device); host: the host tensor; targets, attributes: int64
            CPU tensors (as :class:`~constrained_fairness.data.images.LabeledImages`, so ``dataset_labels``
            reads them); pipeline, mode, device, path.
    """

    def __init__(
        self,
        images: np.ndarray,
        targets: torch.Tensor,
        attributes: torch.Tensor,
        pipeline: BatchTransform,
        *,
        cache: str = "memory",
        device: torch.device | str = "cpu",
        pin_memory: bool = False,
        path: Path | None = None,
    ) -> None:
        if cache not in CACHE_MODES:
            raise DataError(f"image cache mode {cache!r} is unknown; choose one of: {', '.join(CACHE_MODES)}")
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise DataError(
                f"an image cache must be uint8 (N, 3, H, W); got {images.dtype} {tuple(images.shape)}; "
                f"rebuild it"
            )
        self.targets = torch.as_tensor(targets, dtype=torch.long).reshape(-1)
        self.attributes = torch.as_tensor(attributes, dtype=torch.long)
        if len(self.targets) != len(images) or len(self.attributes) != len(images):
            raise DataError(
                f"an image cache of {len(images)} images needs as many targets and attribute rows; got "
                f"{len(self.targets)} and {len(self.attributes)}; rebuild it from the data set"
            )
        self.pipeline = pipeline
        self.mode = cache
        self.device = torch.device(device)
        self.pin_memory = bool(pin_memory) and self.device.type == "cuda"
        self.path = path
        self.host = _host_tensor(images)
        self.images = self.host if cache == "memory" else self._device_copy()

    def _device_copy(self) -> torch.Tensor:
        """The array on ``self.device``, copied in chunks of about 256 MB (shared per file and device)."""
        key = None
        if self.path is not None:
            key = (str(self.path), os.stat(self.path).st_mtime_ns, str(self.device))
            shared = _DEVICE_COPIES.get(key)
            if shared is not None and shared.shape == self.host.shape:
                return shared
        if self.device.type == "cpu":
            out = self.host.clone()  # the whole array in RAM, not paged from the file
        else:
            out = torch.empty(self.host.shape, dtype=torch.uint8, device=self.device)
            step = max(1, (256 << 20) // max(1, self.host[0].numel()))
            for start in range(0, len(self.host), step):
                out[start : start + step].copy_(self.host[start : start + step])
        if key is not None:
            _DEVICE_COPIES[key] = out
        return out

    def __len__(self) -> int:
        """Number of images ``N``."""
        return int(self.targets.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(3, H, W)`` of a cached (uint8) image."""
        return tuple(self.host.shape[1:])  # type: ignore[return-value]

    def gather(self, index: torch.Tensor) -> torch.Tensor:
        """The uint8 images ``(B, 3, H, W)`` of the CPU int64 ``index``, on ``self.device``."""
        if self.mode == "device":
            return self.images.index_select(0, index.to(self.device, non_blocking=True))
        batch = self.host.index_select(0, index)
        if self.pin_memory:
            batch = batch.pin_memory()
        return batch.to(self.device, non_blocking=self.pin_memory)

    def batch(self, index: torch.Tensor, augmentation: Augmentation | None = None) -> torch.Tensor:
        """The float32 inputs ``(B, 3, H, W)`` of ``index`` on ``self.device``: gathered, then
        :func:`~constrained_fairness.data.transforms.apply_batch_transform` (``augmentation=None``: the
        deterministic steps only)."""
        return apply_batch_transform(self.pipeline, self.gather(index), augmentation)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        """``(image (3, H, W) float32 on self.device, target, attributes)`` of item ``index``, without
        random steps (for inspection, e.g. the input shape; training uses whole batches)."""
        image = self.batch(torch.tensor([int(index)]))[0]
        return image, int(self.targets[index]), self.attributes[index].clone()

    def batches_in_order(self, batch_size: int) -> Iterator[Batch]:
        """``(inputs on self.device, targets, attributes)`` of consecutive batches in item order, the last
        one smaller (never dropping a row), with the deterministic steps only: an evaluation pass."""
        if batch_size < 1:
            raise DataError(f"batch_size={batch_size} must be >= 1; use a positive evaluation batch size")
        for start in range(0, len(self), batch_size):
            stop = min(start + batch_size, len(self))
            if self.mode == "device":
                images = self.images[start:stop]
            else:
                images = self.host[start:stop]
                if self.pin_memory:
                    images = images.pin_memory()
                images = images.to(self.device, non_blocking=self.pin_memory)
            inputs = apply_batch_transform(self.pipeline, images)
            yield inputs, self.targets[start:stop].clone(), self.attributes[start:stop].clone()

    def __repr__(self) -> str:
        where = f"'{self.path}'" if self.path is not None else "in memory"
        return (
            f"CachedImages({len(self)} x {self.image_shape} uint8, {self.mode} on {self.device}, {where}, "
            f"{self.pipeline.dataset}/{self.pipeline.style}/{'train' if self.pipeline.train else 'eval'})"
        )


# --------------------------------------------------------------------------------------------------------
# Factories.


def _default_cache_dir(dataset: LabeledImages) -> Path:
    """``<dataset.root>/.cfair_cache``, or beside the images' common folder when no root is known."""
    if dataset.root is not None:
        return dataset.root / CACHE_FOLDER
    assert dataset.paths is not None
    return Path(os.path.commonpath([os.path.abspath(p.parent) for p in dataset.paths])) / CACHE_FOLDER


def cached_source(
    dataset: LabeledImages,
    cache: str = "memory",
    device: torch.device | str = "cpu",
    *,
    cache_dir: PathLike | None = None,
    progress: bool | None = None,
    pin_memory: bool = False,
    pipeline: BatchTransform | None = None,
    workers: int | None = None,
) -> CachedImages:
    """The :class:`CachedImages` of a split: its images decoded once (or reused from the cache files).

    Args:
        dataset: a split of an image loader (UTKFace, FairFace, CIFAR-100), whose ``pipeline`` describes
            its transform.
        cache: ``"memory"`` or ``"device"`` (``data.cache``).
        device: the training device.
        cache_dir: the folder of the cache files (``data.cache_dir``); default ``<data root>/.cfair_cache``.
            Not used for in-memory images (CIFAR-100).
        progress: show the decoding progress bar (``None``: when stderr is a terminal).
        pin_memory: ``memory`` on CUDA: gather batches into pinned memory (``data.pin_memory``).
        pipeline: overrides ``dataset.pipeline``, e.g.
            ``transforms.batch_pipeline(name, image_size, train, style)`` for a hand-built dataset.
        workers: decoding threads (``None``: ``os.cpu_count()``).

    Raises:
        DataError: an unknown mode, a dataset without a pipeline, or a decoding / size / folder problem
            (see :func:`image_cache`).
    """
    if cache not in CACHE_MODES:
        raise DataError(
            f"data.cache={cache!r} builds no image cache; choose one of: {', '.join(CACHE_MODES)} "
            f"(or train from a DataLoader with 'none')"
        )
    if not isinstance(dataset, LabeledImages):
        raise DataError(
            f"an image cache needs a LabeledImages split, got {type(dataset).__name__}; set data.cache: none "
            f"for other datasets"
        )
    pipeline = pipeline if pipeline is not None else dataset.pipeline
    if pipeline is None:
        raise DataError(
            "this LabeledImages has no batch pipeline; pass pipeline=batch_pipeline(dataset, image_size, "
            "train, style) or load it with an image loader"
        )
    path = None
    if dataset.array is not None:
        images = array_cache(dataset.array, pipeline.resize, progress, workers)
    elif len(dataset) == 0:
        images = np.zeros((0, 3, 1, 1), dtype=np.uint8)
    else:
        assert dataset.paths is not None
        folder = Path(cache_dir).expanduser() if cache_dir is not None else _default_cache_dir(dataset)
        images, path = image_cache(dataset.paths, pipeline.resize, folder, progress=progress, workers=workers)
    return CachedImages(
        images,
        dataset.targets,
        dataset.attributes,
        pipeline,
        cache=cache,
        device=device,
        pin_memory=pin_memory,
        path=path,
    )


def cache_image_data(
    data: ImageData,
    cache: str,
    device: torch.device | str,
    *,
    cache_dir: PathLike | None = None,
    progress: bool | None = None,
    pin_memory: bool = False,
) -> ImageData:
    """``data`` with every split (train, train_eval, val, test) replaced by its :class:`CachedImages`
    (see :func:`cached_source`); train and train_eval share one cache file and, for ``device``, one
    device copy."""

    def one(split: Any) -> Any:
        if split is None:
            return None
        return cached_source(
            split, cache, device, cache_dir=cache_dir, progress=progress, pin_memory=pin_memory
        )

    return replace(
        data,
        train=one(data.train),
        train_eval=one(data.train_eval),
        val=one(data.val),
        test=one(data.test),
    )


def with_image_cache(data: Any, d: Any, device: torch.device, progress: bool | None = None) -> Any:
    """A run's data with ``data.cache`` applied: :func:`cache_image_data` for image data and
    ``d.cache`` (a :class:`~constrained_fairness.config.DataConfig`) ``memory`` or ``device``;
    anything else (tables, ``none``) as it is. A split that is not a :class:`LabeledImages`
    (data given in Python) gets a one-line error naming the fix (``data.cache: none``)."""
    if not isinstance(data, ImageData) or d.cache not in CACHE_MODES:
        return data
    return cache_image_data(
        data, d.cache, device, cache_dir=d.cache_dir, progress=progress, pin_memory=d.pin_memory
    )
