"""CIFAR-100, read directly from the pickles of the original ``cifar-100-python`` release.

The folder ``cifar-100-python/`` holds the pickles ``train``, ``test`` and ``meta`` (read with latin1
encoding). ``data`` is uint8 ``(N, 3072)``: the R plane, then G, then B, each 32x32 row-major; the dicts also
hold ``fine_labels`` (and ``coarse_labels``), and ``meta`` holds ``fine_label_names``.

The pickles are read without an MD5 check (``torchvision.datasets.CIFAR100`` insists on the MD5s of the
real files), and with a restricted unpickler that only builds dicts, lists, strings, numbers and numpy
arrays, so a tampered file cannot run code.

The target is the fine label (100 classes) and each class is also a protected group: the single protected
attribute ``"class"`` equals the target.
"""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from constrained_fairness.data.images import (
    ImageData,
    LabeledImages,
    PathLike,
    dataset_split,
    decode_cifar_rows,
    resolve_data_root,
)
from constrained_fairness.data.splits import split_indices
from constrained_fairness.errors import DataError

__all__ = ["load_cifar100", "read_cifar_pickle"]

_FOLDER = "cifar-100-python"
_SETUP = f"extract cifar-100-python.tar.gz so that the data root contains {_FOLDER}/{{train,test,meta}}"


def _numpy_global(module: str, name: str) -> Any:
    """``name`` from the numpy >= 2 module (``numpy._core...``) or the numpy 1 one (``numpy.core...``)."""
    for candidate in (
        module.replace("numpy.core", "numpy._core"),
        module.replace("numpy._core", "numpy.core"),
    ):
        try:
            return getattr(importlib.import_module(candidate), name)
        except (ImportError, AttributeError):
            continue
    raise AttributeError(f"{module}.{name}")


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals needed for numpy arrays (and protocol-2 bytes)."""

    _ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy.core.numeric", "_frombuffer"),
            ("numpy._core.numeric", "_frombuffer"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load the global {module}.{name}")
        if module == "numpy":
            return getattr(np, name)
        if module == "_codecs":
            return super().find_class(module, name)
        return _numpy_global(module, name)


def _text(value: Any) -> Any:
    """``value`` decoded from latin1 if it is bytes (pickles re-saved with ``encoding='bytes'``)."""
    return value.decode("latin1") if isinstance(value, bytes) else value


def read_cifar_pickle(path: PathLike) -> dict[str, Any]:
    """Read one CIFAR pickle (latin1 encoding, restricted unpickler) into a dict with ``str`` keys.

    Raises:
        DataError: naming the file if it is missing, not a pickle, or not a dict.
    """
    file = Path(path)
    if not file.is_file():
        raise DataError(f"CIFAR-100 pickle '{file}' is missing; {_SETUP}")
    try:
        with open(file, "rb") as handle:
            content = _RestrictedUnpickler(handle, encoding="latin1").load()
    except Exception as exc:  # unpickling can raise nearly anything on a corrupt file
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(
            f"cannot read CIFAR-100 pickle '{file}' ({reason}); re-extract the original file"
        ) from exc
    if not isinstance(content, dict):
        raise DataError(
            f"CIFAR-100 pickle '{file}' holds a {type(content).__name__}, not a dict; "
            f"re-extract the original file"
        )
    return {_text(key): value for key, value in content.items()}


def _field(content: dict[str, Any], key: str, path: Path) -> Any:
    """``content[key]``, or DataError naming the file."""
    if key not in content:
        raise DataError(
            f"CIFAR-100 pickle '{path}' has no '{key}' entry (keys: {', '.join(map(str, content))}); "
            f"re-extract the original file"
        )
    return content[key]


def _read_split(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 3, 32, 32)`` uint8 and fine labels ``(N,)`` of the ``train`` or ``test`` pickle."""
    content = read_cifar_pickle(path)
    data = np.asarray(_field(content, "data", path))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(
            f"'data' in CIFAR-100 pickle '{path}' is {data.dtype} {tuple(data.shape)}, not uint8 (N, 3072); "
            f"re-extract the original file"
        )
    labels = np.asarray(_field(content, "fine_labels", path))
    if labels.ndim != 1 or len(labels) != len(data) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"'fine_labels' in CIFAR-100 pickle '{path}' must be {len(data)} integers (one per image); "
            f"re-extract the original file"
        )
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if len(bad):
        raise DataError(
            f"fine label {int(labels[bad[0]])} of image {int(bad[0])} in '{path}' is outside "
            f"[0, {num_classes}); re-extract the original file"
        )
    return decode_cifar_rows(data), labels.astype(np.int64)


def _cifar_folder(root: PathLike | None) -> Path:
    """The folder holding the pickles: ``root/cifar-100-python`` if it exists, else ``root`` itself."""
    folder = resolve_data_root(root, "cifar100", "CIFAR-100")
    nested = folder / _FOLDER
    return nested if nested.is_dir() else folder


def load_cifar100(
    root: PathLike | None = None,
    *,
    image_size: int = 32,
    seed: int = 0,
    val_fraction: float = 0.1,
    transforms: str = "augmented",
) -> ImageData:
    """Load CIFAR-100 from the ``cifar-100-python`` pickles.

    Args:
        root: folder containing ``cifar-100-python/``, or that folder itself. ``None`` uses
            ``$CFAIR_DATA_ROOT/cifar100``.
        image_size: side of the square images fed to the model (32 keeps the native size).
        seed: seed of the train / val permutation.
        val_fraction: fraction of the ``train`` pickle held out for validation (0: none, the paper code's
            choice); ``test`` is the test split.
        transforms: ``"augmented"`` (random crops and flips) or ``"reference"`` (the paper code's: no
            augmentation; see :func:`~constrained_fairness.data.transforms.reference_transforms`).

    Targets are the fine labels; the one protected attribute ``"class"`` has the same codes, with
    ``attribute_values[0] == class_names == meta['fine_label_names']``. All images are held in memory as
    uint8 (about 180 MB).

    Raises:
        DataError: no root, a missing folder or pickle, an unexpected pickle content (naming the file), or
            bad arguments.
    """
    folder = _cifar_folder(root)
    meta_path = folder / "meta"
    meta = read_cifar_pickle(meta_path)
    names = [str(_text(name)) for name in _field(meta, "fine_label_names", meta_path)]
    if len(names) < 2:
        raise DataError(
            f"'fine_label_names' in '{meta_path}' has {len(names)} names; re-extract the original file"
        )
    train_images, train_labels = _read_split(folder / "train", len(names))
    test_images, test_labels = _read_split(folder / "test", len(names))
    train, val, _ = split_indices(len(train_labels), seed=seed, val_fraction=val_fraction)

    def subset(images: np.ndarray, labels: np.ndarray, augment: bool) -> LabeledImages:
        images = np.ascontiguousarray(images)
        return dataset_split(
            "cifar100", image_size, transforms, augment, images, labels, labels[:, None], folder
        )

    return ImageData(
        train=subset(train_images[train], train_labels[train], True),
        train_eval=subset(train_images[train], train_labels[train], False),
        val=subset(train_images[val], train_labels[val], False),
        test=subset(test_images, test_labels, False),
        class_names=names,
        attribute_names=["class"],
        attribute_values=[list(names)],
    )
