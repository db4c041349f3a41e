"""The FairFace data set (about 108k face images, "padding 0.25" version), read from its original files.

The user supplies the data (it cannot be downloaded here): a folder with the label files
``fairface_label_train.csv`` and ``fairface_label_val.csv`` (columns ``file,age,gender,race,service_test``)
and the image folders ``train/`` and ``val/``. ``file`` is relative to that folder, e.g. ``train/1.jpg``.

As in the paper, the official val files are the test split; val is a seeded fraction of the train files.
gender is ``Male`` / ``Female`` and race one of the 7 names of :data:`FAIRFACE_RACES`; class and attribute
codes follow those fixed orders.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np

from constrained_fairness.data.images import (
    ImageData,
    LabeledImages,
    PathLike,
    check_names,
    dataset_split,
    resolve_data_root,
)
from constrained_fairness.data.splits import split_indices
from constrained_fairness.errors import DataError

__all__ = ["FAIRFACE_GENDERS", "FAIRFACE_RACES", "load_fairface"]

FAIRFACE_GENDERS: tuple[str, ...] = ("Male", "Female")
"""FairFace gender values in code order."""
FAIRFACE_RACES: tuple[str, ...] = (
    "White",
    "Black",
    "Latino_Hispanic",
    "East Asian",
    "Southeast Asian",
    "Indian",
    "Middle Eastern",
)
"""FairFace race values in code order (the order of the FairFace paper and ``DATA.md``)."""

_VALUES = {"gender": FAIRFACE_GENDERS, "race": FAIRFACE_RACES}
_TRAIN_CSV = "fairface_label_train.csv"
_VAL_CSV = "fairface_label_val.csv"
_HEADER = "file,age,gender,race,service_test"


def _read_labels(path: Path, columns: Sequence[str]) -> tuple[list[str], dict[str, np.ndarray]]:
    """The ``file`` column and the codes of ``columns`` of one FairFace label CSV."""
    if not path.is_file():
        raise DataError(
            f"FairFace label file '{path}' is missing; put {_TRAIN_CSV} and {_VAL_CSV} (columns {_HEADER}) "
            f"in the data folder"
        )
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            header = [cell.strip() for cell in next(reader, [])]
            rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except (UnicodeDecodeError, OSError, csv.Error) as exc:
        reason = " ".join(str(exc).split())
        raise DataError(f"cannot read '{path}' as CSV ({reason}); fix the file (columns {_HEADER})") from exc
    for name in ("file", *columns):
        if name not in header:
            raise DataError(
                f"'{path}' has no column '{name}' (columns: {', '.join(header) or 'none'}); "
                f"FairFace label files need the columns {_HEADER}"
            )
    if not rows:
        raise DataError(f"'{path}' has no data rows; use the complete FairFace label file")
    index = {name: header.index(name) for name in ("file", *columns)}
    files: list[str] = []
    codes = {name: np.empty(len(rows), dtype=np.int64) for name in columns}
    lookup = {name: {value: code for code, value in enumerate(_VALUES[name])} for name in columns}
    for i, (line, row) in enumerate(rows):
        if len(row) != len(header):
            raise DataError(
                f"{path.name} line {line} has {len(row)} fields but the header has {len(header)}; fix the row"
            )
        files.append(row[index["file"]].strip())
        for name in columns:
            value = row[index[name]].strip()
            code = lookup[name].get(value)
            if code is None:
                raise DataError(
                    f"{path.name} line {line}: {name} {value!r} is not a FairFace value; use one of: "
                    f"{', '.join(_VALUES[name])}"
                )
            codes[name][i] = code
    return files, codes


def _check_files_exist(folder: Path, files: list[str], csv_name: str) -> list[Path]:
    """Absolute paths of ``files`` (relative to ``folder``); DataError naming the first one that is missing.

    Each image folder is listed once (instead of one ``stat`` per file).
    """
    listings: dict[PurePosixPath, set[str]] = {}
    missing: list[str] = []
    for file in files:
        relative = PurePosixPath(file.replace("\\", "/"))
        parent = relative.parent
        if parent not in listings:
            directory = folder / parent
            listings[parent] = set(os.listdir(directory)) if directory.is_dir() else set()
        if not file or relative.name not in listings[parent]:
            missing.append(file)
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(
            f"image '{folder / missing[0]}' listed in {csv_name} does not exist{more}; extract the FairFace "
            f"images (train/, val/) into '{folder}'"
        )
    return [folder / file for file in files]


def load_fairface(
    root: PathLike | None = None,
    *,
    target: str = "gender",
    protected: str | Sequence[str] = ("race",),
    image_size: int = 224,
    seed: int = 0,
    val_fraction: float = 0.1,
    transforms: str = "augmented",
) -> ImageData:
    """Load FairFace from its label CSVs and image folders.

    Args:
        root: folder holding ``fairface_label_train.csv``, ``fairface_label_val.csv``, ``train/`` and
            ``val/``. ``None`` uses ``$CFAIR_DATA_ROOT/fairface``.
        target: ``"gender"`` (classes ``Male``, ``Female``) or ``"race"`` (the 7 :data:`FAIRFACE_RACES`).
        protected: protected attributes, a subset of ``{"race", "gender"}``, in column order; it may include
            the target.
        image_size: side of the square images (the paper uses 224).
        seed: seed of the train / val permutation.
        val_fraction: fraction of the rows of ``fairface_label_train.csv`` held out for validation (0:
            none, the paper code's choice).
        transforms: ``"augmented"`` (:func:`~constrained_fairness.data.transforms.image_transforms`) or
            ``"reference"`` (:func:`~constrained_fairness.data.transforms.reference_transforms`).

    Rows of ``fairface_label_train.csv`` form train and val (seeded, see
    :func:`~constrained_fairness.data.splits.split_indices`); rows of ``fairface_label_val.csv`` form the
    test split. Every listed image must exist (checked at load time); images are decoded per item.

    Raises:
        DataError: no root, a missing folder / CSV / image, a CSV without a needed column or with an unknown
            value, bad arguments, or (when an item is loaded) an image that cannot be decoded.
    """
    if not isinstance(target, str) or target not in _VALUES:
        raise DataError(f"FairFace target {target!r} is not available; choose 'gender' or 'race'")
    protected_names = check_names(protected, tuple(_VALUES), "FairFace protected attribute")
    folder = resolve_data_root(root, "fairface", "FairFace")
    columns = list(dict.fromkeys([target, *protected_names]))
    parts = []
    for csv_name in (_TRAIN_CSV, _VAL_CSV):
        files, codes = _read_labels(folder / csv_name, columns)
        paths = _check_files_exist(folder, files, csv_name)
        targets = codes[target]
        attributes = np.stack([codes[name] for name in protected_names], axis=1)
        parts.append((paths, targets, attributes))
    (train_paths, train_targets, train_attributes), (test_paths, test_targets, test_attributes) = parts
    train, val, _ = split_indices(len(train_paths), seed=seed, val_fraction=val_fraction)

    def subset(rows: np.ndarray, augment: bool) -> LabeledImages:
        images = [train_paths[i] for i in rows]
        return dataset_split(
            "fairface",
            image_size,
            transforms,
            augment,
            images,
            train_targets[rows],
            train_attributes[rows],
            folder,
        )

    return ImageData(
        train=subset(train, True),
        train_eval=subset(train, False),
        val=subset(val, False),
        test=dataset_split(
            "fairface", image_size, transforms, False, test_paths, test_targets, test_attributes, folder
        ),
        class_names=list(_VALUES[target]),
        attribute_names=list(protected_names),
        attribute_values=[list(_VALUES[name]) for name in protected_names],
    )
