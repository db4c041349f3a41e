"""The image cache's files: built once, validated, rebuilt when stale or corrupt (see :mod:`.cache`).

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
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from ..files import atomic_write_text, fsync_folder
from .images import PathLike, decode_image_file
from .transforms import ResizeSpec

__all__ = ["CACHE_FOLDER", "array_cache", "cache_name", "image_cache"]

CACHE_FOLDER = ".cfair_cache"
"""Name of the default cache folder inside the data root."""

_FORMAT = 1  # bump when the layout of the cache files changes


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


def array_cache(
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
