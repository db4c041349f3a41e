"""From a raw table to arrays: which columns play which role (:class:`TableSpec`), the split
of the rows, and the encodings of targets, protected attributes and features (steps 2-6 of
:mod:`.tabular`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import DataError
from .splits import check_fraction, split_indices
from .table import Table, as_names, unknown_column


@dataclass(frozen=True)
class TableSpec:
    """Validated column roles and split settings shared by :func:`load_csv` and :func:`from_records`."""

    target: str
    positive_value: str | None
    protected: tuple[str, ...]
    categorical: tuple[str, ...]
    numeric: tuple[str, ...] | None
    val_fraction: float
    test_fraction: float
    seed: int
    drop_protected: bool
    missing: str


def make_spec(
    target: str,
    positive_value: str | None,
    protected: str | Sequence[str],
    categorical: str | Sequence[str],
    numeric: str | Sequence[str] | None,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    drop_protected: bool,
    missing: str,
) -> TableSpec:
    """Normalize the keyword arguments of the public loaders (column checks happen later)."""
    if not isinstance(target, str):
        raise DataError(f"target must be a column name (string); got {target!r}")
    if positive_value is not None:
        positive_value = _strip_dot(str(positive_value).strip())
    return TableSpec(
        target=target,
        positive_value=positive_value,
        protected=as_names(protected, "protected") or (),
        categorical=as_names(categorical, "categorical") or (),
        numeric=as_names(numeric, "numeric"),
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        drop_protected=drop_protected,
        missing=str(missing),
    )


def check_columns(spec: TableSpec, table: Table) -> None:
    """Check that every named column exists and that no column has two roles."""
    roles = [("target", (spec.target,)), ("protected attribute", spec.protected)]
    roles += [("categorical column", spec.categorical), ("numeric column", spec.numeric or ())]
    for kind, names in roles:
        for name in names:
            if name not in table.columns:
                raise unknown_column(kind, name, table)
    if not spec.protected:
        raise DataError("protected is empty; name at least one protected attribute column, e.g. ['sex']")
    for kind, names in roles[1:]:
        if spec.target in names:
            raise DataError(f"target '{spec.target}' is also listed as a {kind}; remove it from that list")
    both = sorted(set(spec.categorical) & set(spec.numeric or ()))
    if both:
        raise DataError(f"{', '.join(map(repr, both))} listed as both categorical and numeric; keep one")


def tabular_split_indices(
    n_main: int, n_test: int, spec: TableSpec
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices (into main rows followed by test rows) of the train, val and test splits, each sorted:
    :func:`~.splits.split_indices` of the main rows (the ``n_test`` rows of a separate test table
    are the test split), with a validation split always held out (``val_fraction`` in (0, 1))."""
    train, val, test = split_indices(
        n_main,
        seed=spec.seed,
        val_fraction=spec.val_fraction,
        test_fraction=None if n_test > 0 else spec.test_fraction,
    )
    check_fraction("val_fraction", spec.val_fraction)  # a table's run always has a validation split
    if n_test > 0:
        test = np.arange(n_main, n_main + n_test)
    return train, val, test


def _strip_dot(value: str) -> str:
    """Remove one trailing ``"."`` (UCI Adult test labels are written ``">50K."``)."""
    return value[:-1] if value.endswith(".") else value


def _target_values(table: Table, spec: TableSpec) -> np.ndarray:
    """The target column with one trailing dot stripped per value; the missing marker is an error."""
    raw = table.column(spec.target)
    is_missing = np.flatnonzero(raw == spec.missing)
    if len(is_missing):
        raise DataError(
            f"target '{spec.target}' has the missing marker {spec.missing!r} at "
            f"{table.where(is_missing[0])}; drop rows without a label"
        )
    unique, inverse = np.unique(raw, return_inverse=True)
    stripped = np.array([_strip_dot(str(v)) for v in unique.tolist()], dtype=str)
    return stripped[inverse.reshape(-1)]


def encode_targets(
    table: Table, spec: TableSpec, train: np.ndarray, held_out: np.ndarray
) -> tuple[np.ndarray, list[str]]:
    """Class index per row and the class names (see module docstring for the binary / multi-class rules)."""
    values = _target_values(table, spec)
    seen = np.unique(values[train])
    unseen = held_out[~np.isin(values[held_out], seen)]
    if spec.positive_value is not None and spec.positive_value not in set(np.unique(values).tolist()):
        raise DataError(
            f"positive_value {spec.positive_value!r} does not occur in target '{spec.target}'; "
            f"choose one of: {', '.join(np.unique(values).tolist())}"
        )
    if len(unseen):
        row = int(unseen[0])
        raise DataError(
            f"target value {str(values[row])!r} at {table.where(row)} does not occur in the train rows "
            f"(seen: {', '.join(seen.tolist())}); fix the label or use matching train data"
        )
    if len(seen) < 2:
        raise DataError(
            f"target '{spec.target}' has the single value {str(seen[0])!r} in the train rows; "
            f"a classifier needs at least two classes"
        )
    if spec.positive_value is None:
        return np.searchsorted(seen, values).astype(np.int64), seen.tolist()
    others = [v for v in seen.tolist() if v != spec.positive_value]
    negative = others[0] if len(others) == 1 else f"not {spec.positive_value}"
    return (values == spec.positive_value).astype(np.int64), [negative, spec.positive_value]


def encode_attributes(table: Table, spec: TableSpec) -> tuple[np.ndarray, list[list[str]]]:
    """Codes ``(N, A)`` of the protected attributes over all rows, and their sorted value names."""
    codes, names = [], []
    for name in spec.protected:
        unique, inverse = np.unique(table.column(name), return_inverse=True)
        if len(unique) < 2:
            raise DataError(
                f"protected attribute '{name}' has the single value {str(unique[0])!r} in all rows; "
                f"choose a column with at least two groups"
            )
        codes.append(inverse.reshape(-1).astype(np.int64))
        names.append(unique.tolist())
    return np.stack(codes, axis=1), names


def _parse_numeric(table: Table, name: str, missing: str) -> np.ndarray:
    """Column ``name`` as float64, raising DataError on the missing marker or non-numbers."""
    raw = table.column(name)
    hint = f"add '{name}' to categorical=[...] to treat it as a category"
    is_missing = np.flatnonzero(raw == missing)
    if len(is_missing):
        raise DataError(
            f"numeric column '{name}' has the missing marker {missing!r} at {table.where(is_missing[0])}; "
            f"impute or drop those rows, or {hint}"
        )
    try:
        values = raw.astype(np.float64)
    except ValueError:
        row = next(i for i, v in enumerate(raw.tolist()) if not _is_float(v))
        raise DataError(
            f"column '{name}' is treated as numeric but {str(raw[row])!r} at {table.where(row)} "
            f"is not a number; {hint}"
        ) from None
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        raise DataError(
            f"numeric column '{name}' has the non-finite value {str(raw[bad[0]])!r} at "
            f"{table.where(bad[0])}; replace it with a finite number"
        )
    return values


def _is_float(text: str) -> bool:
    """Whether ``float(text)`` succeeds."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def _standardize(values: np.ndarray, train: np.ndarray) -> np.ndarray:
    """``(x - mean) / std`` with train-split statistics; a (numerically) constant column uses std 1."""
    mean = float(values[train].mean())
    std = float(values[train].std())
    if std <= 1e-12 * max(1.0, abs(mean)):
        std = 1.0
    return (values - mean) / std


def _one_hot(raw: np.ndarray, train: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """One-hot block with the sorted train categories; values unseen in train give all-zero rows."""
    categories = np.unique(raw[train])
    codes = np.clip(np.searchsorted(categories, raw), 0, len(categories) - 1)
    known = categories[codes] == raw
    block = (codes[:, None] == np.arange(len(categories))[None, :]) & known[:, None]
    return block.astype(np.float64), categories.tolist()


def _feature_roles(table: Table, spec: TableSpec) -> list[tuple[str, str]]:
    """``(column, "numeric" | "categorical")`` for every feature column, in table order."""
    categorical = set(spec.categorical)
    numeric = set(spec.numeric) if spec.numeric is not None else None
    roles = []
    for name in table.columns:
        if name == spec.target or (spec.drop_protected and name in spec.protected):
            continue
        if numeric is not None and name in numeric:
            roles.append((name, "numeric"))
        elif name in categorical or name in spec.protected:
            roles.append((name, "categorical"))
        elif numeric is None:
            roles.append((name, "numeric"))
    return roles


def encode_features(table: Table, spec: TableSpec, train: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Feature matrix ``(N, D)`` (float32) and feature names, fit on the train rows."""
    blocks: list[np.ndarray] = []
    names: list[str] = []
    for name, role in _feature_roles(table, spec):
        if role == "numeric":
            blocks.append(_standardize(_parse_numeric(table, name, spec.missing), train)[:, None])
            names.append(name)
        else:
            block, categories = _one_hot(table.column(name), train)
            blocks.append(block)
            names.extend(f"{name}={category}" for category in categories)
    if not blocks:
        raise DataError(
            f"no feature columns remain besides target '{spec.target}'; add columns to numeric= or "
            f"categorical=, or set drop_protected=False"
        )
    return np.concatenate(blocks, axis=1).astype(np.float32), names
