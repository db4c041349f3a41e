"""The image transforms of each data set: ``augmented`` (torchvision v2 on uint8 tensors:
resize, crop and flip for training, ImageNet or CIFAR normalisation) and ``reference`` (the
paper code's torchvision v1 steps on PIL images, :class:`ReferenceTransform`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import DataError

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
