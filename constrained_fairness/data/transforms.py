"""The image transforms of each data set: ``augmented`` (torchvision v2 on uint8 tensors:
resize, crop and flip for training, ImageNet or CIFAR normalisation) and ``reference`` (the
paper code's torchvision v1 steps on PIL images, :class:`ReferenceTransform`).

Each pipeline also exists as a :class:`BatchTransform` (:func:`batch_pipeline`): its resize, done once per
image by the image cache (:mod:`.cache`), and the rest as operations on uint8 batches on any device
(:func:`apply_batch_transform`), with random crops and flips drawn from a generator seeded by
``(seed, epoch, batch)`` (:func:`augmentation_generator`, :func:`draw_augmentation`)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, NamedTuple

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


# --------------------------------------------------------------------------------------------------------
# The same pipelines on whole uint8 batches (the image cache, data/cache.py).

_TO_FLOAT = ("mul", "div")


@dataclass(frozen=True)
class ResizeSpec:
    """The deterministic spatial prefix of a pipeline, applied once per image when a cache is built.

    Attributes:
        size: ``(h, w)`` for ``backend="tensor"`` (``torchvision.transforms.v2.Resize((h, w),
            antialias=True)`` on the uint8 tensor, bilinear); an int ``s`` for ``backend="pil"``
            (``torchvision.transforms.Resize(s)`` on the PIL image: the shorter side becomes ``s``, the
            longer one ``int(s * long / short)``, bilinear with PIL's antialiasing).
        backend: ``"tensor"`` (the augmented pipelines) or ``"pil"`` (the reference FairFace pipeline).
    """

    size: tuple[int, int] | int
    backend: str = "tensor"

    def __post_init__(self) -> None:
        if self.backend not in ("tensor", "pil"):
            raise DataError(f"ResizeSpec backend {self.backend!r} is unknown; use 'tensor' or 'pil'")

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """The resized uint8 image ``(3, H', W')`` of a uint8 image ``(3, H, W)``, computed by the very
        torchvision transform the per-item pipeline runs, so the pixels are the same bit for bit."""
        if self.backend == "tensor":
            from torchvision.transforms import v2

            return v2.Resize(tuple(self.size), antialias=True)(image).as_subclass(torch.Tensor)
        from torchvision import transforms as v1

        pil = Image.fromarray(image.permute(1, 2, 0).contiguous().numpy())
        resized = np.asarray(v1.Resize(int(self.size))(pil).convert("RGB"), dtype=np.uint8)
        return torch.from_numpy(resized.copy()).permute(2, 0, 1).contiguous()

    def describe(self) -> str:
        """A stable text of the operation (and of the library that computes it), for cache manifests."""
        import PIL
        import torchvision

        if self.backend == "tensor":
            h, w = self.size  # type: ignore[misc]
            return f"torchvision {torchvision.__version__} v2.Resize(({h}, {w}), bilinear, antialias=True)"
        return f"torchvision {torchvision.__version__} PIL {PIL.__version__} v1.Resize({self.size}, bilinear)"


@dataclass(frozen=True)
class BatchTransform:
    """A data set's pipeline (:func:`dataset_transforms`) as steps on uint8 batches ``(B, 3, H, W)``.

    With ``x`` the uint8 image after ``resize`` (done once, at cache time), a batch goes through:

    1. ``crop_padding = p`` (else skipped): zero-pad ``p`` pixels on every side, then take the ``H x W``
       window at offsets ``(top, left)``, each uniform on ``{0, ..., 2p}`` per sample
       (``v2.RandomCrop(size, padding=p)``);
    2. ``flip``: mirror the columns of each sample with probability 1/2 (``RandomHorizontalFlip()``), after
       the crop;
    3. float conversion: ``to_float="mul"``: ``y = float32(x) * (1.0 / 255)`` (``v2.ToDtype(float32,
       scale=True)``); ``"div"``: ``y = float32(x) / 255`` (``v1.ToTensor``); the two differ in the last bit;
    4. ``z[c] = (y[c] - mean[c]) / std[c]``, a subtraction then a true division in float32 (``Normalize``
       of v1 and v2 alike).

    Steps 3 and 4 copy torchvision's operation order, so a deterministic pipeline gives, on the CPU, the
    very bits of the per-item pipeline. Steps 1 and 2 draw from an :class:`Augmentation`: the same
    distribution as torchvision, other draws.
    """

    dataset: str
    style: str
    train: bool
    resize: ResizeSpec | None
    crop_padding: int | None
    flip: bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    to_float: str

    def __post_init__(self) -> None:
        if self.to_float not in _TO_FLOAT:
            raise DataError(f"BatchTransform to_float={self.to_float!r} is unknown; use 'mul' or 'div'")
        if self.crop_padding is not None and self.crop_padding < 1:
            raise DataError(f"BatchTransform crop_padding={self.crop_padding} must be >= 1 or None")

    @property
    def random(self) -> bool:
        """Whether the batch steps draw random numbers (a crop or a flip)."""
        return self.flip or self.crop_padding is not None

    def prefix(self) -> str:
        """The text of the cache-time prefix (``"none"`` without a resize)."""
        return "none" if self.resize is None else self.resize.describe()


def batch_pipeline(dataset: str, image_size: int, train: bool, style: str = "augmented") -> BatchTransform:
    """The :class:`BatchTransform` of ``dataset_transforms(dataset, image_size, train, style)``.

    - augmented faces: resize ``(s, s)`` (tensor), flip for train, ``mul``, ImageNet statistics;
    - augmented CIFAR-100: resize ``(s, s)`` only if ``s != 32``; train: crop padding ``max(1,
      round(4 s / 32))`` and flip; ``mul``, CIFAR-100 statistics;
    - reference UTKFace: no resize, flip for train, ``div``, ImageNet; reference FairFace: PIL resize of
      the shorter side to ``s`` first; reference CIFAR-100: no resize, no augmentation, ``div``,
      the reference statistics.
    """
    name = str(dataset).lower()
    if name not in _DATASETS:
        raise DataError(
            f"no image transforms for data set {dataset!r}; choose one of: {', '.join(_DATASETS)}"
        )
    if style not in ("augmented", "reference"):
        raise DataError(f"transforms must be 'augmented' or 'reference', got {style!r}")
    faces = name in _FACE_DATASETS
    if style == "reference":
        resize = ResizeSpec(_check_image_size(image_size), "pil") if name == "fairface" else None
        mean, std = (
            (IMAGENET_MEAN, IMAGENET_STD) if faces else (REFERENCE_CIFAR100_MEAN, REFERENCE_CIFAR100_STD)
        )
        return BatchTransform(name, style, bool(train), resize, None, bool(train) and faces, mean, std, "div")
    size = _check_image_size(image_size)
    resize = ResizeSpec((size, size)) if faces or size != 32 else None
    padding = max(1, round(4 * size / 32)) if train and not faces else None
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if faces else (CIFAR100_MEAN, CIFAR100_STD)
    return BatchTransform(name, style, bool(train), resize, padding, bool(train), mean, std, "mul")


class Augmentation(NamedTuple):
    """The random draws of one batch: ``flip`` bool ``(B,)``; ``top``, ``left`` int64 ``(B,)`` crop offsets
    into the padded image (``None`` without a crop)."""

    flip: torch.Tensor
    top: torch.Tensor | None = None
    left: torch.Tensor | None = None

    def shard(self, rank: int, world: int) -> Augmentation:
        """Rank ``rank``'s contiguous share of a global batch's draws (as ``training.batches.shard``)."""
        per_rank = -(-len(self.flip) // world)
        part = slice(rank * per_rank, (rank + 1) * per_rank)
        return Augmentation(*(None if t is None else t[part] for t in self))

    def to(self, device: torch.device | str) -> Augmentation:
        """The draws on ``device``."""
        return Augmentation(*(None if t is None else t.to(device, non_blocking=True) for t in self))


_AUGMENTATION_TAG = 0x5EED_C0DE  # keeps these streams apart from any other use of (seed, epoch, batch)


def augmentation_generator(seed: int, epoch: int, batch: int) -> torch.Generator:
    """A CPU generator for batch ``batch`` of epoch ``epoch``, seeded by
    ``SeedSequence([seed mod 2^64, epoch, batch, tag])``: independent of what ran before, so a run
    resumed mid-epoch draws the same flips and crops."""
    entropy = [int(seed) & (2**64 - 1), int(epoch), int(batch), _AUGMENTATION_TAG]
    state = np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def draw_augmentation(pipeline: BatchTransform, size: int, generator: torch.Generator) -> Augmentation | None:
    """The draws of a batch of ``size`` samples on the CPU (``None`` for a deterministic pipeline):
    ``top``, ``left`` ``~ U{0, ..., 2p}`` then ``flip = u < 1/2`` with ``u ~ U[0, 1)``, per sample."""
    if not pipeline.random:
        return None
    top = left = None
    if pipeline.crop_padding is not None:
        span = 2 * pipeline.crop_padding + 1
        top = torch.randint(0, span, (size,), generator=generator)
        left = torch.randint(0, span, (size,), generator=generator)
    if pipeline.flip:
        flip = torch.rand(size, generator=generator) < 0.5
    else:
        flip = torch.zeros(size, dtype=torch.bool)
    return Augmentation(flip, top, left)


def apply_batch_transform(
    pipeline: BatchTransform, images: torch.Tensor, augmentation: Augmentation | None = None
) -> torch.Tensor:
    """Steps 1-4 of :class:`BatchTransform` on a uint8 batch ``(B, 3, H, W)``, on its device.

    The crop and the flip are two gathers: with ``i`` the output row and ``j`` the output column,
    ``out[b, c, i, j] = pad(x)[b, c, top[b] + i, left[b] + (W - 1 - j if flip[b] else j)]``.
    ``augmentation=None`` applies the deterministic steps only (3 and 4). The input is not modified.
    """
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise DataError(
            f"a cached batch must be uint8 (B, 3, H, W); got {images.dtype} {tuple(images.shape)}; "
            f"rebuild the image cache"
        )
    x = images
    if augmentation is not None:
        aug = augmentation.to(x.device)
        b, c, h, w = x.shape
        columns = torch.arange(w, device=x.device)
        columns = torch.where(aug.flip[:, None], w - 1 - columns, columns)  # (B, W)
        if pipeline.crop_padding is not None and aug.top is not None and aug.left is not None:
            p = pipeline.crop_padding
            x = torch.nn.functional.pad(x, (p, p, p, p))  # zeros, as RandomCrop's fill=0
            rows = aug.top[:, None] + torch.arange(h, device=x.device)  # (B, H)
            x = x.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * p))
            columns = columns + aug.left[:, None]
        if pipeline.flip or pipeline.crop_padding is not None:
            x = x.gather(3, columns[:, None, None, :].expand(b, c, h, w))
    y = x.to(torch.float32)
    y = y.mul_(1.0 / 255) if pipeline.to_float == "mul" else y.div_(255)
    return y.sub_(_channel_values(pipeline.mean, y.device)).div_(_channel_values(pipeline.std, y.device))


@functools.lru_cache(maxsize=64)
def _channel_values(values: tuple[float, ...], device: torch.device) -> torch.Tensor:
    """``values`` as float32 ``(C, 1, 1)`` on ``device`` (as ``Normalize`` builds them), kept so a batch
    does not copy them to the device again."""
    return torch.as_tensor(list(values), dtype=torch.float32, device=device).view(-1, 1, 1)
