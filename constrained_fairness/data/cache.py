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

**Files.** For images on disk the array is a ``.npy`` file (:func:`numpy.lib.format.open_memmap`) next to
a JSON manifest, in ``cache_dir`` (default ``<data root>/.cfair_cache``). Both are named
``images-<sha256 of (format, prefix, file list)>``, so two splits over the same files with the same prefix
(train and train_eval) share one cache. The manifest also holds each file's size and ``mtime`` (ns) and
the versions of the libraries that computed the prefix; any change rebuilds the cache in place. A corrupt
cache (an unreadable or truncated ``.npy``, a manifest that is not JSON, a shape that does not match) is
rebuilt with a warning naming the file. A build writes a temporary file and renames it (:func:`os.replace`)
over the old one; the manifest is written last, so a crash leaves no cache that looks valid. Concurrent
builders of one cache (DDP ranks) take turns through a lock file, so only the first one decodes.

**Decoding** runs on ``os.cpu_count()`` threads: PIL and torch release the GIL while decoding and resizing,
and threads write straight into the memory map. Measured on 2 cores (best of 3, JPEG decode + v2 resize):
200x200 files kept at 200: one thread 0.85 s / 1000 files, 2 threads 0.61 s, 2 processes 1.30 s; 448x448
resized to 224: 2.07 s / 400 files, 1.03 s, 1.23 s. Processes are no faster, as every image must be
shipped back, so threads suffice. In-memory CIFAR-100 arrays need no file: the array itself is the cache
(resized in memory when ``image_size != 32``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from ..files import atomic_write_text, fsync_folder
from .images import ImageData, LabeledImages, PathLike, decode_image_file
from .transforms import Augmentation, BatchTransform, ResizeSpec, apply_batch_transform

__all__ = [
    "CACHE_FOLDER",
    "CACHE_MODES",
    "CachedImages",
    "cache_image_data",
    "cached_source",
    "image_cache",
    "with_image_cache",
]

CACHE_FOLDER = ".cfair_cache"
"""Name of the default cache folder inside the data root."""

CACHE_MODES = ("memory", "device")
"""The values of ``data.cache`` that build a cache (``"none"`` does not)."""

_FORMAT = 1  # bump when the layout of the cache files changes

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]

_DEVICE_COPIES: weakref.WeakValueDictionary[tuple[str, int, str], torch.Tensor] = (
    weakref.WeakValueDictionary()
)  # (npy file, its mtime, device) -> the array on that device, shared by train and train_eval


# --------------------------------------------------------------------------------------------------------
# Building and validating the cache files.


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _file_stats(paths: Sequence[Path]) -> tuple[list[int], list[int]]:
    """Size (bytes) and ``st_mtime_ns`` of every file; DataError naming the first missing one."""
    sizes, mtimes = [], []
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError as exc:
            raise DataError(
                f"cannot read image file '{path}' ({_reason(exc)}); restore it or reload the data set"
            ) from exc
        sizes.append(int(stat.st_size))
        mtimes.append(int(stat.st_mtime_ns))
    return sizes, mtimes


def _versions(resize: ResizeSpec | None) -> dict[str, str]:
    """The library versions the cached pixels depend on (the decoder always, the resize if any)."""
    import PIL

    out = {"PIL": PIL.__version__}
    if resize is not None:
        import torchvision

        out["torch"] = torch.__version__
        out["torchvision"] = torchvision.__version__
    return out


def cache_name(files: Sequence[str], prefix: str) -> str:
    """``images-<h>`` with ``h`` the first 24 hex digits of the sha256 of ``(format, prefix, files)``."""
    key = json.dumps({"format": _FORMAT, "prefix": prefix, "files": list(files)}, separators=(",", ":"))
    return "images-" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:24]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (``fcntl.flock``; a no-op where that does not exist)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _read_valid(npy: Path, manifest_path: Path, expected: dict[str, Any]) -> np.ndarray | None:
    """The cached array if the files exist and match ``expected``, else ``None`` (with a warning naming
    the file when the cache is corrupt rather than missing or out of date)."""
    if not manifest_path.exists():
        return None  # never built, or a build that did not finish (the manifest is written last)
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if not isinstance(manifest, dict):
            raise ValueError(f"a JSON {type(manifest).__name__}, not an object")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        warnings.warn(
            f"image cache manifest '{manifest_path}' is unreadable ({_reason(exc)}); rebuilding the cache",
            UserWarning,
            stacklevel=4,
        )
        return None
    if any(manifest.get(key) != value for key, value in expected.items()):
        return None  # a file changed, or the libraries that computed the pixels did
    shape = manifest.get("shape")
    try:
        array = np.load(npy, mmap_mode="c")
    except (OSError, ValueError, EOFError) as exc:
        warnings.warn(
            f"image cache '{npy}' is unreadable ({_reason(exc)}); rebuilding it", UserWarning, stacklevel=4
        )
        return None
    if array.dtype != np.uint8 or list(array.shape) != shape or array.shape[0] != len(expected["files"]):
        warnings.warn(
            f"image cache '{npy}' holds {array.dtype} {tuple(array.shape)}, not the uint8 {shape} of its "
            f"manifest; rebuilding it",
            UserWarning,
            stacklevel=4,
        )
        return None
    return array


def _shape_error(
    name: str, shape: tuple[int, ...], first: str, expected: tuple[int, ...], prefix: str
) -> str:
    return (
        f"image '{name}' is {shape[1]}x{shape[2]} after the cache prefix ({prefix}) but '{first}' is "
        f"{expected[1]}x{expected[2]}; a cache holds images of one size: make every image one size (the "
        f"reference UTKFace and CIFAR-100 pipelines do not resize), or set data.cache: none"
    )


def _fill(
    out: np.ndarray,
    load: Callable[[int], torch.Tensor],
    names: Callable[[int], str],
    prefix: str,
    progress: bool | None,
    workers: int | None,
) -> None:
    """``out[i] = load(i)`` for ``i >= 1`` on a thread pool (``out[0]`` is filled by the caller), with a
    progress bar; DataError naming the image whose shape differs from ``out[0]``'s."""
    from tqdm.auto import tqdm

    n = len(out)
    expected = tuple(out.shape[1:])

    def one(i: int) -> None:
        image = load(i)
        if tuple(image.shape) != expected:
            raise DataError(_shape_error(names(i), tuple(image.shape), names(0), expected, prefix))
        out[i] = image.numpy()

    show = sys.stderr.isatty() if progress is None else bool(progress)
    pool = ThreadPoolExecutor(max_workers=max(1, min(workers or os.cpu_count() or 1, n)))
    try:
        with tqdm(total=n, initial=1, desc="caching images", unit="img", disable=not show) as bar:
            for _ in pool.map(one, range(1, n)):
                bar.update(1)
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _prefixed(image: torch.Tensor, resize: ResizeSpec | None) -> torch.Tensor:
    return image if resize is None else resize(image)


def image_cache(
    paths: Sequence[PathLike],
    resize: ResizeSpec | None,
    cache_dir: PathLike,
    *,
    progress: bool | None = None,
    workers: int | None = None,
) -> tuple[np.ndarray, Path]:
    """The uint8 array ``(N, 3, H, W)`` of ``resize(decode_image_file(paths[i]))``, memory-mapped from
    ``cache_dir`` (built there, or reused when its manifest matches the files), and the ``.npy`` path.

    Args:
        paths: the image files, in item order (``N >= 1``).
        resize: the cache-time prefix; ``None`` keeps the decoded size (every image must then have one).
        cache_dir: the folder of the cache files (created if missing).
        progress: show a progress bar while decoding (``None``: when stderr is a terminal).
        workers: decoding threads (``None``: ``os.cpu_count()``).

    Raises:
        DataError: a missing or undecodable image, images of different sizes after the prefix, or a cache
            folder that cannot be written; each names the file and the fix.
    """
    files = [os.path.abspath(p) for p in paths]
    if not files:
        raise DataError("cannot cache an empty list of image files; pass at least one path")
    prefix = "none" if resize is None else resize.describe()
    folder = Path(cache_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"cannot create the image cache folder '{folder}' ({_reason(exc)}); set data.cache_dir "
            f"(cache_dir=) to a writable folder"
        ) from exc
    name = cache_name(files, prefix)
    npy, manifest_path = folder / f"{name}.npy", folder / f"{name}.json"
    with _locked(folder / f"{name}.lock"):
        sizes, mtimes = _file_stats([Path(f) for f in files])
        expected = {
            "format": _FORMAT,
            "prefix": prefix,
            "versions": _versions(resize),
            "files": files,
            "sizes": sizes,
            "mtimes_ns": mtimes,
        }
        array = _read_valid(npy, manifest_path, expected)
        if array is not None:
            return array, npy
        first = _prefixed(decode_image_file(files[0]), resize)
        shape = (len(files), *first.shape)
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{npy.name}.", suffix=".tmp", dir=folder)
        except OSError as exc:
            raise DataError(
                f"cannot write the image cache in '{folder}' ({_reason(exc)}); set data.cache_dir "
                f"(cache_dir=) to a writable folder"
            ) from exc
        os.close(fd)
        try:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
            out[0] = first.numpy()
            _fill(
                out,
                lambda i: _prefixed(decode_image_file(files[i]), resize),
                files.__getitem__,
                prefix,
                progress,
                workers,
            )
            out.flush()
            del out
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o644)
            manifest_path.unlink(missing_ok=True)  # no manifest until the new array is in place
            os.replace(tmp, npy)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        fsync_folder(folder)
        manifest = {**expected, "shape": list(shape), "dtype": "uint8"}
        atomic_write_text(manifest_path, json.dumps(manifest, separators=(",", ":")))
        return np.load(npy, mmap_mode="c"), npy


def _array_cache(
    array: np.ndarray, resize: ResizeSpec | None, progress: bool | None, workers: int | None
) -> np.ndarray:
    """In-memory images after the prefix: the array itself without a resize, else a resized copy."""
    if resize is None or len(array) == 0:
        return array
    first = resize(torch.from_numpy(np.array(array[0])))
    out = np.empty((len(array), *first.shape), dtype=np.uint8)
    out[0] = first.numpy()

    def load(i: int) -> torch.Tensor:
        return resize(torch.from_numpy(np.array(array[i])))

    _fill(out, load, lambda i: f"image #{i}", resize.describe(), progress, workers)
    return out


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
        images = _array_cache(dataset.array, pipeline.resize, progress, workers)
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
