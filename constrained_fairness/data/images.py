"""Common pieces of the image data sets (UTKFace, FairFace, CIFAR-100): the container and the dataset.

Every image loader returns an :class:`ImageData`: three ``torch.utils.data.Dataset`` splits whose item ``i``
is ``(image, target, attributes)``:

- ``image``: float32 tensor ``(3, H, W)``, the output of :func:`.transforms.image_transforms` (or, with
  ``transform=None``, the raw uint8 tensor ``(3, H, W)``);
- ``target``: the class index, a Python ``int`` in ``[0, num_classes)``;
- ``attributes``: int64 tensor ``(A,)``; entry ``a`` is the code of protected attribute ``a``, an index into
  ``ImageData.attribute_values[a]``.

The splits are :class:`LabeledImages`, which keep every label in memory, so :meth:`ImageData.labels` returns
the labels of a split without decoding a single image. Images on disk are decoded lazily, one per item; a
file that cannot be decoded raises :class:`~constrained_fairness.errors.DataError` naming the file when its
item is loaded. Transforms live in :mod:`.transforms`, the split rules in :mod:`.splits`.

Splits are drawn with :func:`.splits.split_indices` (``default_rng(seed).permutation``); each split keeps
the original (sorted) order of its items.

The data root of a loader is its ``root`` argument or, when that is ``None``, the folder named after the
data set inside the environment variable ``CFAIR_DATA_ROOT`` (see :func:`resolve_data_root`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from constrained_fairness.data.splits import SPLITS
from constrained_fairness.errors import DataError

if TYPE_CHECKING:
    from constrained_fairness.data.transforms import BatchTransform

__all__ = [
    "DATA_ROOT_ENV",
    "ImageData",
    "LabeledImages",
    "check_names",
    "dataset_split",
    "decode_cifar_rows",
    "decode_image_file",
    "resolve_data_root",
]

PathLike = str | os.PathLike

DATA_ROOT_ENV = "CFAIR_DATA_ROOT"
"""Environment variable holding the folder that contains the data set folders (``UTKFace``, ...)."""


# --------------------------------------------------------------------------------------------------------
# Container.


@dataclass
class ImageData:
    """An image data set split into train / val / test, plus the names needed to interpret it.

    Attributes:
        train, val, test: datasets whose item ``i`` is ``(image (3, H, W) float32, target int,
            attributes (A,) int64)``; normally :class:`LabeledImages`.
        class_names: one name per class, in class-index order.
        attribute_names: names of the protected attributes, e.g. ``["race", "gender"]``.
        attribute_values: for each protected attribute its value names in code order.
        train_eval: the training images with the evaluation transform (no augmentation), for
            measuring the training split; defaults to ``train``.
    """

    train: torch.utils.data.Dataset
    val: torch.utils.data.Dataset
    test: torch.utils.data.Dataset
    class_names: list[str]
    attribute_names: list[str]
    attribute_values: list[list[str]]
    train_eval: torch.utils.data.Dataset | None = None

    def __post_init__(self) -> None:
        if len(self.attribute_names) != len(self.attribute_values):
            raise DataError(
                f"ImageData has {len(self.attribute_names)} attribute names but {len(self.attribute_values)} "
                f"value lists; give one list of value names per protected attribute"
            )

    @property
    def num_classes(self) -> int:
        """Number of target classes ``C``."""
        return len(self.class_names)

    def split(self, name: str) -> torch.utils.data.Dataset:
        """The dataset of split ``name`` (``"train"``, ``"val"`` or ``"test"``)."""
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r}; choose one of: {', '.join(SPLITS)}")
        return getattr(self, name)

    def labels(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Targets ``(N,)`` and attribute codes ``(N, A)`` (int64) of a split, without decoding images.

        Works for :class:`LabeledImages` and ``torch.utils.data.Subset`` views of one. Any other dataset
        that has ``targets`` and ``attributes`` tensors is read from those; otherwise (a last resort) every
        item is loaded.
        """
        return dataset_labels(self.split(split))


def dataset_labels(dataset: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(targets, attributes)`` of ``dataset``, read from its label tensors where possible."""
    if isinstance(dataset, torch.utils.data.Subset):
        targets, attributes = dataset_labels(dataset.dataset)
        index = torch.as_tensor(list(dataset.indices), dtype=torch.long)
        return targets[index], attributes[index]
    targets = getattr(dataset, "targets", None)
    attributes = getattr(dataset, "attributes", None)
    if isinstance(targets, torch.Tensor) and isinstance(attributes, torch.Tensor):
        return targets.clone().long(), attributes.clone().long()
    items = [dataset[i] for i in range(len(dataset))]
    if not items:
        raise DataError(f"cannot read the labels of the empty {type(dataset).__name__}; it has no items")
    return (
        torch.tensor([int(item[1]) for item in items], dtype=torch.long),
        torch.stack([torch.as_tensor(item[2], dtype=torch.long) for item in items]),
    )


# --------------------------------------------------------------------------------------------------------
# Decoding.


def decode_image_file(path: PathLike) -> torch.Tensor:
    """Decode an image file into a uint8 RGB tensor ``(3, H, W)`` (grayscale / RGBA are converted to RGB).

    Raises:
        DataError: naming the file if it is missing, unreadable or not a decodable image.
    """
    try:
        with Image.open(path) as image:
            array = np.array(image.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(
            f"cannot decode image file '{path}' ({reason}); replace the file with a valid image or delete it"
        ) from exc
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def decode_cifar_rows(data: np.ndarray, *, size: int = 32) -> np.ndarray:
    """Reshape CIFAR rows ``(N, 3 * size * size)`` into images ``(N, 3, size, size)`` (uint8, a view).

    Each row holds the R plane, then the G plane, then the B plane, each ``size x size`` in row-major order,
    so pixel ``(c, h, w)`` of row ``n`` is ``data[n, c * size * size + h * size + w]``.
    """
    array = np.asarray(data)
    if array.dtype != np.uint8 or array.ndim != 2 or array.shape[1] != 3 * size * size:
        raise DataError(
            f"CIFAR image rows must be a uint8 array (N, {3 * size * size}); got {array.dtype} "
            f"{tuple(array.shape)}; check that the file is a CIFAR pickle"
        )
    return array.reshape(array.shape[0], 3, size, size)


# --------------------------------------------------------------------------------------------------------
# Dataset.


class LabeledImages(torch.utils.data.Dataset):
    """Images with a class target and protected attribute codes per item.

    Args:
        images: either a sequence of image file paths (decoded lazily with :func:`decode_image_file`), or a
            uint8 array ``(N, 3, H, W)`` of images in memory (CIFAR).
        targets: class index per image, shape ``(N,)``.
        attributes: protected attribute codes, shape ``(N, A)``.
        transform: callable applied to the uint8 tensor ``(3, H, W)`` of an item, e.g.
            :func:`image_transforms`. ``None`` returns the raw uint8 tensor.
        pipeline: ``transform`` as a :class:`~constrained_fairness.data.transforms.BatchTransform` (set by
            the loaders), which the image cache (:mod:`.cache`) runs on whole batches; ``None``: unknown.
        root: the data folder the images come from; the image cache's files go to ``root/.cfair_cache``
            by default.

    Attributes:
        targets: int64 tensor ``(N,)``; attributes: int64 tensor ``(N, A)``; paths: the list of ``Path``
            (``None`` for in-memory images); transform, pipeline, root: as given.
    """

    def __init__(
        self,
        images: Sequence[PathLike] | np.ndarray,
        targets: Sequence[int] | np.ndarray | torch.Tensor,
        attributes: Sequence[Sequence[int]] | np.ndarray | torch.Tensor,
        transform: Any = None,
        *,
        pipeline: BatchTransform | None = None,
        root: PathLike | None = None,
    ) -> None:
        if isinstance(images, np.ndarray):
            if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != 3:
                raise DataError(
                    f"in-memory images must be a uint8 array (N, 3, H, W); got {images.dtype} "
                    f"{tuple(images.shape)}; convert them first"
                )
            self.array: np.ndarray | None = images
            self.paths: list[Path] | None = None
            n = int(images.shape[0])
        else:
            self.array = None
            self.paths = [Path(p) for p in images]
            n = len(self.paths)
        self.targets = torch.as_tensor(np.asarray(targets, dtype=np.int64)).reshape(-1)
        self.attributes = torch.as_tensor(np.asarray(attributes, dtype=np.int64))
        if self.attributes.dim() == 1 and n == 0:
            self.attributes = self.attributes.reshape(0, 0)
        if self.attributes.dim() != 2 or self.targets.shape[0] != n or self.attributes.shape[0] != n:
            raise DataError(
                f"LabeledImages needs {n} targets (N,) and attribute rows (N, A) for {n} images; got shapes "
                f"{tuple(self.targets.shape)} and {tuple(self.attributes.shape)}"
            )
        self.transform = transform
        self.pipeline = pipeline
        self.root = None if root is None else Path(root)

    def __len__(self) -> int:
        """Number of images."""
        return int(self.targets.shape[0])

    def raw(self, index: int) -> torch.Tensor:
        """The untransformed uint8 image ``(3, H, W)`` of item ``index``."""
        if self.array is not None:
            return torch.from_numpy(np.array(self.array[index], copy=True))
        assert self.paths is not None
        return decode_image_file(self.paths[index])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        """``(image, target, attributes)`` of item ``index`` (see the class docstring)."""
        image = self.raw(index)
        if self.transform is not None:
            image = self.transform(image)
            if isinstance(image, torch.Tensor):
                image = image.as_subclass(torch.Tensor)
        return image, int(self.targets[index]), self.attributes[index].clone()


def dataset_split(
    dataset: str,
    image_size: int,
    style: str,
    train: bool,
    images: Sequence[PathLike] | np.ndarray,
    targets: Any,
    attributes: Any,
    root: Path,
) -> LabeledImages:
    """One split of a paper data set: :class:`LabeledImages` with the data set's train (``train``) or
    eval transform (:func:`.transforms.dataset_transforms`) and the same pipeline as batch steps
    (:func:`.transforms.batch_pipeline`, for the image cache)."""
    from constrained_fairness.data.transforms import batch_pipeline, dataset_transforms

    return LabeledImages(
        images,
        targets,
        attributes,
        dataset_transforms(dataset, image_size, train, style),
        pipeline=batch_pipeline(dataset, image_size, train, style),
        root=root,
    )


# --------------------------------------------------------------------------------------------------------
# Data roots.


def resolve_data_root(root: PathLike | None, folder: str, dataset: str) -> Path:
    """The data folder of a loader: ``root``, or ``$CFAIR_DATA_ROOT/<folder>`` when ``root`` is None.

    Raises:
        DataError: if neither is given, or if the folder does not exist.
    """
    if root is None:
        base = os.environ.get(DATA_ROOT_ENV, "").strip()
        if not base:
            raise DataError(
                f"no data folder for {dataset}: set data.root in the config (root= in Python) or the "
                f"environment variable {DATA_ROOT_ENV} to a folder that contains {folder}/"
            )
        path = Path(base).expanduser() / folder
        if not path.is_dir():
            raise DataError(
                f"{dataset} folder '{path}' (from {DATA_ROOT_ENV}={base}) does not exist; put the data set "
                f"in {folder}/ there, or set data.root to its folder"
            )
        return path
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(
            f"{dataset} data root '{path}' does not exist or is not a folder; set data.root (root=) to the "
            f"folder holding the {dataset} files"
        )
    return path


def check_names(value: str | Sequence[str], allowed: Sequence[str], what: str) -> tuple[str, ...]:
    """``value`` (one name or a sequence) as a non-empty tuple of distinct names from ``allowed``."""
    names = (value,) if isinstance(value, str) else tuple(value)
    if not names:
        raise DataError(f"{what} is empty; choose at least one of: {', '.join(allowed)}")
    for name in names:
        if name not in allowed:
            raise DataError(f"{what} {name!r} is not available; choose from: {', '.join(allowed)}")
    if len(set(names)) != len(names):
        raise DataError(f"{what} {list(names)} lists a name more than once; list each once")
    return names
