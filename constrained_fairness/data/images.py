"""Common pieces of the image data sets (UTKFace, FairFace, CIFAR-100): container, dataset, transforms.

Every image loader returns an :class:`ImageData`: three ``torch.utils.data.Dataset`` splits whose item ``i``
is ``(image, target, attributes)``:

- ``image``: float32 tensor ``(3, H, W)``, the output of :func:`image_transforms` (or, with
  ``transform=None``, the raw uint8 tensor ``(3, H, W)``);
- ``target``: the class index, a Python ``int`` in ``[0, num_classes)``;
- ``attributes``: int64 tensor ``(A,)``; entry ``a`` is the code of protected attribute ``a``, an index into
  ``ImageData.attribute_values[a]``.

The splits are :class:`LabeledImages`, which keep every label in memory, so :meth:`ImageData.labels` returns
the labels of a split without decoding a single image. Images on disk are decoded lazily, one per item; a
file that cannot be decoded raises :class:`~constrained_fairness.errors.DataError` naming the file when its
item is loaded.

Splits are drawn with :func:`split_indices` (``numpy.random.default_rng(seed).permutation``); each split keeps
the original (sorted) order of its items.

The data root of a loader is its ``root`` argument or, when that is ``None``, the folder named after the
data set inside the environment variable ``CFAIR_DATA_ROOT`` (see :func:`resolve_data_root`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from constrained_fairness.data.splits import SPLITS, check_fraction, held_out_count
from constrained_fairness.errors import DataError

__all__ = [
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "DATA_ROOT_ENV",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageData",
    "LabeledImages",
    "check_names",
    "dataset_transforms",
    "decode_cifar_rows",
    "decode_image_file",
    "image_transforms",
    "reference_split_indices",
    "reference_transforms",
    "resolve_data_root",
    "split_indices",
]

PathLike = str | os.PathLike

DATA_ROOT_ENV = "CFAIR_DATA_ROOT"
"""Environment variable holding the folder that contains the data set folders (``UTKFace``, ...)."""

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
"""Per-channel (RGB) mean of ImageNet, used for the face data sets (models start from ImageNet weights)."""
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
"""Per-channel (RGB) standard deviation of ImageNet."""
CIFAR100_MEAN: tuple[float, float, float] = (0.5071, 0.4865, 0.4409)
"""Per-channel (RGB) mean of the CIFAR-100 training images."""
CIFAR100_STD: tuple[float, float, float] = (0.2673, 0.2564, 0.2762)
"""Per-channel (RGB) standard deviation of the CIFAR-100 training images."""

_FACE_DATASETS = ("utkface", "fairface")
_DATASETS = (*_FACE_DATASETS, "cifar100")


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

    Attributes:
        targets: int64 tensor ``(N,)``; attributes: int64 tensor ``(N, A)``; paths: the list of ``Path``
            (``None`` for in-memory images); transform: the transform.
    """

    def __init__(
        self,
        images: Sequence[PathLike] | np.ndarray,
        targets: Sequence[int] | np.ndarray | torch.Tensor,
        attributes: Sequence[Sequence[int]] | np.ndarray | torch.Tensor,
        transform: Any = None,
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


# --------------------------------------------------------------------------------------------------------
# Transforms.


def _check_image_size(image_size: int) -> int:
    """``image_size`` as a positive int, else DataError."""
    if isinstance(image_size, bool) or not isinstance(image_size, int | np.integer) or image_size < 1:
        raise DataError(f"image_size={image_size!r} must be a positive integer; use e.g. image_size=224")
    return int(image_size)


def image_transforms(dataset: str, image_size: int, train: bool) -> Any:
    """The ``torchvision.transforms.v2`` pipeline for a data set; input a uint8 ``(3, H, W)`` tensor or PIL.

    The output is a float32 ``(3, image_size, image_size)`` tensor.

    - ``"utkface"`` / ``"fairface"`` (faces, models pretrained on ImageNet):
      train = ``Resize((s, s))``, ``RandomHorizontalFlip()``, to float in ``[0, 1]``,
      ``Normalize(IMAGENET_MEAN, IMAGENET_STD)``; eval = the same without the flip. Faces are aligned
      crops, so no random crop is used: a horizontal flip is the only augmentation that keeps the face
      attributes intact.
    - ``"cifar100"``: train = ``Resize((s, s))`` (only if ``s != 32``), ``RandomCrop(s, padding=p)`` with
      ``p = round(4 * s / 32)`` (the standard 4 pixels at 32x32, scaled with the image),
      ``RandomHorizontalFlip()``, to float, ``Normalize(CIFAR100_MEAN, CIFAR100_STD)``; eval = the resize
      (only if ``s != 32``), to float and the normalization. Random crops and flips are the standard CIFAR
      augmentation; the mean / std are those of the CIFAR-100 training images.

    Args:
        dataset: ``"utkface"``, ``"fairface"`` or ``"cifar100"`` (case-insensitive).
        image_size: side ``s`` of the square output image.
        train: whether to return the augmenting train pipeline (else the deterministic eval pipeline).
    """
    from torchvision.transforms import v2

    name = str(dataset).lower()
    if name not in _DATASETS:
        raise DataError(
            f"no image transforms for data set {dataset!r}; choose one of: {', '.join(_DATASETS)}"
        )
    size = _check_image_size(image_size)
    steps: list[Any] = [v2.ToImage()]
    if name in _FACE_DATASETS:
        steps.append(v2.Resize((size, size), antialias=True))
        if train:
            steps.append(v2.RandomHorizontalFlip())
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:
        if size != 32:
            steps.append(v2.Resize((size, size), antialias=True))
        if train:
            steps.append(v2.RandomCrop(size, padding=max(1, round(4 * size / 32))))
            steps.append(v2.RandomHorizontalFlip())
        mean, std = CIFAR100_MEAN, CIFAR100_STD
    steps.append(v2.ToDtype(torch.float32, scale=True))
    steps.append(v2.Normalize(list(mean), list(std)))
    return v2.Compose(steps)


REFERENCE_CIFAR100_MEAN: tuple[float, float, float] = (0.507, 0.4865, 0.4409)
"""CIFAR-100 channel means as written in the paper code (``src/datasets/datasets.py``)."""
REFERENCE_CIFAR100_STD: tuple[float, float, float] = (0.2673, 0.2564, 0.2761)
"""CIFAR-100 channel standard deviations as written in the paper code."""


class ReferenceTransform:
    """The paper code's torchvision (v1) pipeline, applied to a PIL image as the reference does.

    ``steps`` is the ``torchvision.transforms.Compose`` itself; a uint8 ``(3, H, W)`` tensor (what
    :class:`LabeledImages` decodes) is first turned into the PIL image it came from, losslessly.
    """

    def __init__(self, steps: Any) -> None:
        self.steps = steps

    def __call__(self, image: Any) -> torch.Tensor:
        if isinstance(image, torch.Tensor):
            image = Image.fromarray(image.permute(1, 2, 0).contiguous().numpy())
        return self.steps(image)

    def __repr__(self) -> str:
        return f"ReferenceTransform({self.steps!r})"


def reference_transforms(dataset: str, image_size: int, train: bool) -> ReferenceTransform:
    """The transforms of ``merajhashemi/balancing-act`` (``src/datasets/datasets.py``), step by step.

    - ``"utkface"``: train ``ToTensor, RandomHorizontalFlip, Normalize(ImageNet)`` at the native size
      (``image_size`` is not used: the reference does not resize); eval without the flip;
    - ``"fairface"``: ``Resize(image_size)`` (an int: the shorter side, aspect kept; the paper uses 224),
      then the same steps;
    - ``"cifar100"``: ``ToTensor, Normalize(REFERENCE_CIFAR100_MEAN, REFERENCE_CIFAR100_STD)`` for train
      and eval alike: no augmentation at all, and no resize.
    """
    from torchvision import transforms as v1

    name = str(dataset).lower()
    if name not in _DATASETS:
        raise DataError(
            f"no image transforms for data set {dataset!r}; choose one of: {', '.join(_DATASETS)}"
        )
    steps: list[Any] = []
    if name == "fairface":
        steps.append(v1.Resize(_check_image_size(image_size)))
    steps.append(v1.ToTensor())
    if name in _FACE_DATASETS:
        if train:
            steps.append(v1.RandomHorizontalFlip())
        steps.append(v1.Normalize(list(IMAGENET_MEAN), list(IMAGENET_STD)))
    else:
        steps.append(v1.Normalize(list(REFERENCE_CIFAR100_MEAN), list(REFERENCE_CIFAR100_STD)))
    return ReferenceTransform(v1.Compose(steps))


def dataset_transforms(dataset: str, image_size: int, train: bool, style: str = "augmented") -> Any:
    """:func:`image_transforms` (``style="augmented"``) or :func:`reference_transforms` (``"reference"``)."""
    if style == "reference":
        return reference_transforms(dataset, image_size, train)
    if style != "augmented":
        raise DataError(f"transforms must be 'augmented' or 'reference', got {style!r}")
    return image_transforms(dataset, image_size, train)


# --------------------------------------------------------------------------------------------------------
# Data roots and splits.


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


def split_indices(
    n: int, *, seed: int, val_fraction: float, test_fraction: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded train / val / test indices into ``range(n)``, each sorted ascending.

    With ``perm = numpy.random.default_rng(seed).permutation(n)``: if ``test_fraction`` is given, test is
    the first ``round(test_fraction * n)`` entries of ``perm``; val is the first ``round(val_fraction * m)``
    of the ``m`` remaining entries and train the rest. Without ``test_fraction`` (a data set with its own
    test files) test is empty. Held-out sizes are rounded half up with at least one item;
    ``val_fraction = 0`` gives an empty val split (train on all the non-test items).
    """
    try:
        rng = np.random.default_rng(seed)
    except (TypeError, ValueError) as exc:
        raise DataError(f"seed={seed!r} is not a valid random seed; use a non-negative integer") from exc
    perm = rng.permutation(n)
    test = np.zeros(0, dtype=np.int64)
    if test_fraction is not None:
        n_test = held_out_count(check_fraction("test_fraction", test_fraction), n)
        test, perm = perm[:n_test], perm[n_test:]
    train, val = _carve_val(perm, val_fraction, n, test_fraction)
    return train, val, np.sort(test)


def reference_split_indices(
    n: int, *, test_fraction: float = 0.2, val_fraction: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The paper code's UTKFace split, then (optionally) a seeded validation split of its train part.

    ``perm = numpy.random.RandomState(1357).permutation(n)`` over the sorted valid files; test is
    ``perm[:int(test_fraction * n)]`` (truncated, not rounded) and train the rest, exactly as
    ``src/datasets/utkface.py`` of ``merajhashemi/balancing-act``. The reference trains on all of it
    (``val_fraction = 0``); a positive ``val_fraction`` (the honest NFT+ES option) takes val from the
    front of the rest of that permutation, so test stays the paper's. Each split is sorted ascending.
    """
    perm = np.random.RandomState(1357).permutation(n)
    n_test = int(check_fraction("test_fraction", test_fraction) * n)
    test, rest = perm[:n_test], perm[n_test:]
    train, val = _carve_val(rest, val_fraction, n, test_fraction)
    return train, val, np.sort(test)


def _carve_val(
    perm: np.ndarray, val_fraction: float, n: int, test_fraction: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``(train, val)`` of the permuted items ``perm``: val is the first ``val_fraction`` share
    (rounded half up, at least one item), none when ``val_fraction == 0``."""
    if val_fraction == 0:
        val, train = perm[:0], perm
    else:
        n_val = held_out_count(check_fraction("val_fraction", val_fraction), len(perm))
        val, train = perm[:n_val], perm[n_val:]
    if len(train) == 0:
        raise DataError(
            f"the train split is empty ({n} items, val_fraction={val_fraction}, "
            f"test_fraction={test_fraction}); supply more images or lower the fractions"
        )
    return np.sort(train), np.sort(val)


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
