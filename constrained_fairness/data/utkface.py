"""The UTKFace data set (aligned and cropped faces, about 23.7k images), read from its original files.

The user supplies the images (they cannot be downloaded here): one flat folder of files named
``[age]_[gender]_[race]_[date&time].jpg.chip.jpg`` with gender ``0`` male, ``1`` female and race ``0`` White,
``1`` Black, ``2`` Asian, ``3`` Indian, ``4`` Others. The labels come from the file names only.

Image files (``.jpg``, ``.jpeg``, ``.png``) whose names do not follow that pattern (a missing field, a
non-integer field, a gender or race code out of range; a few exist in the public release) are skipped with
ONE warning that counts them. Other files (and sub-folders) are ignored.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from constrained_fairness.config.choices import DATA_SPLITS
from constrained_fairness.data.images import (
    ImageData,
    LabeledImages,
    PathLike,
    check_names,
    dataset_split,
    resolve_data_root,
)
from constrained_fairness.data.splits import reference_split_indices, split_indices
from constrained_fairness.errors import DataError

__all__ = ["UTKFACE_GENDERS", "UTKFACE_RACES", "load_utkface", "parse_utkface_name"]

UTKFACE_GENDERS: tuple[str, ...] = ("Male", "Female")
"""UTKFace gender names in code order (the second field of a file name)."""
UTKFACE_RACES: tuple[str, ...] = ("White", "Black", "Asian", "Indian", "Others")
"""UTKFace race names in code order (the third field of a file name)."""

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_PATTERN = "[age]_[gender]_[race]_[date&time].jpg.chip.jpg"


def parse_utkface_name(name: str) -> tuple[int, int, int] | None:
    """``(age, gender, race)`` codes of a UTKFace file name, or ``None`` if the name is malformed.

    A name is valid if it has at least four ``_``-separated fields, the first three are non-negative
    integers, the fourth (date & time plus extension) is not empty, gender is 0 or 1 and race is 0 to 4.
    """
    fields = name.split("_", 3)
    if len(fields) != 4 or not all(f.isascii() and f.isdigit() for f in fields[:3]):
        return None
    if not fields[3].split(".", 1)[0]:
        return None
    age, gender, race = (int(f) for f in fields[:3])
    if gender >= len(UTKFACE_GENDERS) or race >= len(UTKFACE_RACES):
        return None
    return age, gender, race


def _image_files(folder: Path, suffixes: tuple[str, ...] = _IMAGE_SUFFIXES) -> list[str]:
    """Names of the (non-hidden) image files directly inside ``folder``, sorted by code point.

    ``suffixes`` in lower case match any case, except ``(".jpg",)`` alone, which matches exactly (as the
    reference's ``glob("*.jpg")`` does on Linux)."""
    exact = suffixes == (".jpg",)
    with os.scandir(folder) as entries:
        return sorted(
            entry.name
            for entry in entries
            if not entry.name.startswith(".")
            and (entry.name if exact else entry.name.lower()).endswith(suffixes)
            and entry.is_file()
        )


def load_utkface(
    root: PathLike | None = None,
    *,
    target: str = "race",
    protected: str | Sequence[str] = ("race",),
    image_size: int = 200,
    seed: int = 0,
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    transforms: str = "augmented",
    split: str = "seeded",
) -> ImageData:
    """Load UTKFace from a folder of ``[age]_[gender]_[race]_[date&time].jpg.chip.jpg`` files.

    Args:
        root: the folder of images (or a folder holding ``UTKFace/``). ``None`` uses
            ``$CFAIR_DATA_ROOT/UTKFace``.
        target: ``"race"`` (5 classes, names :data:`UTKFACE_RACES`) or ``"gender"`` (``Male``, ``Female``).
        protected: protected attributes, a subset of ``{"race", "gender"}``; the attribute columns follow
            this order (an intersectional race x gender grouping is built by the caller from both columns).
            It may include the target.
        image_size: side of the square images (the paper uses 200).
        seed: seed of the split permutation.
        test_fraction: fraction of the valid images in the test split (the paper's 80/20 split).
        val_fraction: fraction of the remaining (non-test) images held out for validation (0: none).
        transforms: ``"augmented"`` (:func:`~constrained_fairness.data.transforms.image_transforms`) or
            ``"reference"`` (:func:`~constrained_fairness.data.transforms.reference_transforms`).
        split: ``"seeded"``: the valid files sorted by name, ``numpy.random.default_rng(seed).permutation``
            over them gives test first, then val out of the rest
            (:func:`~constrained_fairness.data.splits.split_indices`). ``"reference"``: the paper code's rule
            (:func:`~constrained_fairness.data.splits.reference_split_indices`): the sorted ``*.jpg`` files
            with valid names, ``RandomState(1357).permutation(N)``, the first ``int(test_fraction N)`` are
            test; ``seed`` is not used. (The reference removes its three known malformed files by name; here
            every malformed name is dropped, which is the same set on the public release.)

    Train images use the train transform and val / test the eval transform.

    Raises:
        DataError: no root, a missing folder, no valid images, bad arguments, or (when an item is loaded) an
            image file that cannot be decoded.
    """
    columns = {"gender": 1, "race": 2}
    values = {"gender": list(UTKFACE_GENDERS), "race": list(UTKFACE_RACES)}
    if not isinstance(target, str) or target not in columns:
        raise DataError(f"UTKFace target {target!r} is not available; choose 'race' or 'gender'")
    protected_names = check_names(protected, tuple(columns), "UTKFace protected attribute")
    if split not in DATA_SPLITS:
        raise DataError(f"UTKFace split must be 'seeded' or 'reference', got {split!r}")
    folder = resolve_data_root(root, "UTKFace", "UTKFace")
    suffixes = (".jpg",) if split == "reference" else _IMAGE_SUFFIXES  # the reference globs *.jpg
    names = _image_files(folder, suffixes)
    if not names and (folder / "UTKFace").is_dir():
        folder = folder / "UTKFace"
        names = _image_files(folder, suffixes)
    if not names:
        raise DataError(
            f"no UTKFace images in '{folder}'; point data.root (root=) at the folder of {_PATTERN} files"
        )
    parsed = [parse_utkface_name(name) for name in names]
    valid = [i for i, codes in enumerate(parsed) if codes is not None]
    skipped = [names[i] for i, codes in enumerate(parsed) if codes is None]
    if not valid:
        raise DataError(
            f"none of the {len(names)} image files in '{folder}' is named {_PATTERN} with gender 0-1 and "
            f"race 0-4 (e.g. '{names[0]}'); point data.root (root=) at the UTKFace images"
        )
    if skipped:
        examples = ", ".join(f"'{name}'" for name in skipped[:3])
        warnings.warn(
            f"skipped {len(skipped)} of {len(names)} UTKFace image files in '{folder}' whose names are not "
            f"{_PATTERN} with gender 0-1 and race 0-4 (e.g. {examples}); rename or remove them to silence "
            f"this warning",
            UserWarning,
            stacklevel=2,
        )
    codes = np.array([parsed[i] for i in valid], dtype=np.int64)
    paths = [folder / names[i] for i in valid]
    targets = codes[:, columns[target]]
    attributes = codes[:, [columns[name] for name in protected_names]]
    if split == "reference":
        train, val, test = reference_split_indices(
            len(paths), test_fraction=test_fraction, val_fraction=val_fraction
        )
    else:
        train, val, test = split_indices(
            len(paths), seed=seed, val_fraction=val_fraction, test_fraction=test_fraction
        )

    def subset(rows: np.ndarray, augment: bool) -> LabeledImages:
        images = [paths[i] for i in rows]
        return dataset_split(
            "utkface", image_size, transforms, augment, images, targets[rows], attributes[rows], folder
        )

    return ImageData(
        train=subset(train, True),
        train_eval=subset(train, False),
        val=subset(val, False),
        test=subset(test, False),
        class_names=list(values[target]),
        attribute_names=list(protected_names),
        attribute_values=[list(values[name]) for name in protected_names],
    )
