"""Loading tabular data sets (CSV files or in-memory columns) into tensors for fair classification.

The pipeline is the same for :func:`load_csv` and :func:`from_records`:

1. Every cell is read as a whitespace-stripped string.
2. Rows are split into train / val / test with ``numpy.random.default_rng(seed).permutation``. Each split
   keeps the original row order.
3. The target becomes class indices. A single trailing ``"."`` is stripped from target values (and from
   ``positive_value``) only, because the UCI Adult test file writes labels as ``">50K."``.
4. Protected attributes become integer codes into the sorted unique values of ALL loaded rows, so that every
   split uses the same coding.
5. Categorical columns (including the protected ones, unless they are listed in ``numeric``) are one-hot
   encoded with categories fit on the train split only. A category that does not occur in the train split
   is encoded as an all-zero block in val / test. The missing-value marker (``"?"`` by default) is kept as
   a category of its own in categorical columns.
6. Numeric columns are standardized with the mean and (population) standard deviation of the train split;
   a constant column uses a standard deviation of 1. A missing marker in a numeric column is an error.

Every problem with the input is raised as :class:`~constrained_fairness.errors.DataError` (one-line message
naming the offending value and the fix), or ``FileNotFoundError`` for a missing file.
"""

from __future__ import annotations

import csv
import difflib
import gzip
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

from constrained_fairness.data.splits import check_fraction, held_out_count
from constrained_fairness.errors import DataError

__all__ = ["TabularData", "TabularSplit", "from_records", "load_csv"]

PathLike = str | os.PathLike


@dataclass
class TabularSplit:
    """One split (train, val or test) of a tabular data set.

    Attributes:
        features: float32 tensor of shape ``(N, D)``: standardized numerics and one-hot categoricals.
        targets: int64 tensor of shape ``(N,)`` with class indices in ``[0, C)``.
        attributes: int64 tensor of shape ``(N, A)``; column ``a`` holds the code of protected attribute
            ``a``, an index into ``TabularData.attribute_values[a]``.
    """

    features: torch.Tensor
    targets: torch.Tensor
    attributes: torch.Tensor

    def __post_init__(self) -> None:
        n = self.features.shape[0] if self.features.dim() > 0 else -1
        if self.features.dim() != 2 or self.targets.dim() != 1 or self.attributes.dim() != 2:
            raise DataError(
                f"TabularSplit needs features (N, D), targets (N,) and attributes (N, A); got shapes "
                f"{tuple(self.features.shape)}, {tuple(self.targets.shape)}, {tuple(self.attributes.shape)}"
            )
        if self.targets.shape[0] != n or self.attributes.shape[0] != n:
            raise DataError(
                f"TabularSplit row counts differ: features {n}, targets {self.targets.shape[0]}, "
                f"attributes {self.attributes.shape[0]}; pass tensors with the same first dimension"
            )

    def __len__(self) -> int:
        """Number of rows in the split."""
        return int(self.features.shape[0])


@dataclass
class TabularData:
    """A tabular data set split into train / val / test, plus the names needed to interpret it.

    Attributes:
        train, val, test: the three splits.
        feature_names: one name per feature column, e.g. ``"age"`` or ``"workclass=Private"``.
        class_names: one name per class; for a binary target index 1 is the positive value.
        attribute_names: names of the protected attributes, e.g. ``["race", "sex"]``.
        attribute_values: for each protected attribute its value names in code order (sorted strings).
    """

    train: TabularSplit
    val: TabularSplit
    test: TabularSplit
    feature_names: list[str]
    class_names: list[str]
    attribute_names: list[str]
    attribute_values: list[list[str]]

    @property
    def num_features(self) -> int:
        """Number of feature columns ``D``."""
        return len(self.feature_names)

    @property
    def num_classes(self) -> int:
        """Number of target classes ``C``."""
        return len(self.class_names)


# --------------------------------------------------------------------------------------------------------
# Internal representation of a raw (string) table.


@dataclass
class _Table:
    """Raw string cells of a table with enough bookkeeping to point at a row in error messages.

    ``values`` is an ``(N, C)`` numpy string array; ``origin[i]`` indexes ``labels`` (e.g.
    ``"adult.test line"``) and ``position[i]`` is the line number / record index of row ``i``.
    """

    name: str
    columns: list[str]
    values: np.ndarray
    labels: list[str]
    origin: np.ndarray
    position: np.ndarray

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def column(self, name: str) -> np.ndarray:
        """The cells of column ``name`` as a 1-D string array."""
        return self.values[:, self.columns.index(name)]

    def where(self, row: int) -> str:
        """Human-readable location of ``row``, e.g. ``"adult.test line 17"``."""
        return f"{self.labels[int(self.origin[row])]} {int(self.position[row])}"


@dataclass(frozen=True)
class _Spec:
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


def _as_names(value: str | Sequence[str] | None, what: str) -> tuple[str, ...] | None:
    """Normalize a column-name argument to a tuple; a bare string counts as one name."""
    if value is None:
        return None
    names = (value,) if isinstance(value, str) else tuple(value)
    for name in names:
        if not isinstance(name, str):
            raise DataError(f"{what} must be column names (strings); got {name!r}; pass e.g. {what}=['sex']")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        listed = ", ".join(map(repr, duplicates))
        raise DataError(f"{what} lists {listed} more than once; list each column once")
    return names


def _make_spec(
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
) -> _Spec:
    """Normalize the keyword arguments of the public loaders (column checks happen later)."""
    if not isinstance(target, str):
        raise DataError(f"target must be a column name (string); got {target!r}")
    if positive_value is not None:
        positive_value = _strip_dot(str(positive_value).strip())
    return _Spec(
        target=target,
        positive_value=positive_value,
        protected=_as_names(protected, "protected") or (),
        categorical=_as_names(categorical, "categorical") or (),
        numeric=_as_names(numeric, "numeric"),
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        drop_protected=drop_protected,
        missing=str(missing),
    )


# --------------------------------------------------------------------------------------------------------
# Reading.


def _open_text(path: Path) -> TextIO:
    """Open ``path`` for csv reading, decompressing ``.gz`` files transparently."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _check_file(path: PathLike, what: str) -> Path:
    """Return ``path`` as a Path, raising ``FileNotFoundError`` with a helpful message if it is not a file."""
    resolved = Path(path).expanduser()
    if not resolved.is_file():
        raise FileNotFoundError(
            f"{what} '{resolved}' does not exist or is not a file; check the path "
            f"(relative paths are resolved against {Path.cwd()})"
        )
    return resolved


def _read_rows(path: Path, delimiter: str) -> tuple[list[list[str]], list[int]]:
    """Parse ``path`` into stripped string rows, skipping blank lines and lines starting with ``|``."""
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        with _open_text(path) as handle:
            reader = csv.reader(handle, delimiter=delimiter, skipinitialspace=True)
            for row in reader:
                if not row or row[0].startswith("|") or all(not cell.strip() for cell in row):
                    continue
                rows.append([cell.strip() for cell in row])
                lines.append(reader.line_num)
    except (UnicodeDecodeError, OSError, csv.Error) as exc:
        message = str(exc).replace("\n", " ")
        raise DataError(f"cannot parse '{path}' as delimited text ({message}); fix the file format") from exc
    return rows, lines


def _read_csv(
    path: PathLike, header: bool, column_names: Sequence[str] | None, delimiter: str, what: str
) -> _Table:
    """Read one delimited file into a :class:`_Table`."""
    file = _check_file(path, what)
    rows, lines = _read_rows(file, delimiter)
    columns = _as_names(column_names, "column_names")
    if header:
        if not rows:
            raise DataError(f"{what} '{file}' is empty; it needs a header line and at least one data row")
        file_header = rows.pop(0)
        lines.pop(0)
        if columns is None:
            columns = _as_names(file_header, f"the header of '{file.name}'")
    elif columns is None:
        raise DataError(f"header=False needs column_names=[...] for '{file}'; pass the names of its columns")
    if not rows:
        raise DataError(f"{what} '{file}' has no data rows; point it at a file with at least one row")
    assert columns is not None
    label = f"{file.name} line"
    for row, line in zip(rows, lines, strict=True):
        if len(row) != len(columns):
            raise DataError(
                f"{label} {line} has {len(row)} fields but {len(columns)} columns are expected "
                f"({', '.join(columns)}); fix the row or pass the right delimiter= (now {delimiter!r})"
            )
    return _Table(
        name=file.name,
        columns=list(columns),
        values=np.array(rows, dtype=str),
        labels=[label],
        origin=np.zeros(len(rows), dtype=np.int64),
        position=np.asarray(lines, dtype=np.int64),
    )


def _cell(value: Any, missing: str) -> str:
    """Convert one in-memory value to the string a CSV cell would hold (``None``/NaN → missing marker)."""
    if value is None:
        return missing
    if isinstance(value, float) and math.isnan(value):
        return missing
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, np.generic) and np.issubdtype(type(value), np.floating) and np.isnan(value):
        return missing
    return str(value).strip()


def _records_columns(records: Any, what: str) -> list[tuple[str, list[Any]]]:
    """Extract ``(name, values)`` pairs from a mapping of sequences or a pandas-like data frame."""
    if isinstance(records, Mapping):
        return [(str(name), list(values)) for name, values in records.items()]
    if hasattr(records, "columns") and hasattr(records, "__getitem__"):
        pairs = []
        for name in list(records.columns):
            column = records[name]
            values = column.tolist() if hasattr(column, "tolist") else list(column)
            pairs.append((str(name), values))
        return pairs
    raise DataError(
        f"{what} must be a mapping of column name to values or a data frame; got {type(records).__name__}"
    )


def _records_table(records: Any, missing: str, what: str) -> _Table:
    """Convert in-memory columns into a :class:`_Table` of stripped strings."""
    pairs = _records_columns(records, what)
    if not pairs:
        raise DataError(f"{what} has no columns; pass e.g. {{'age': [...], 'income': [...]}}")
    _as_names([name for name, _ in pairs], f"the columns of {what}")
    lengths = {name: len(values) for name, values in pairs}
    if len(set(lengths.values())) != 1:
        detail = ", ".join(f"{name}={n}" for name, n in lengths.items())
        raise DataError(
            f"columns of {what} have different lengths ({detail}); give every column one value per row"
        )
    n_rows = len(pairs[0][1])
    if n_rows == 0:
        raise DataError(f"{what} has no rows; pass at least one row")
    cells = [[_cell(v, missing) for v in values] for _, values in pairs]
    return _Table(
        name=what,
        columns=[name for name, _ in pairs],
        values=np.array(cells, dtype=str).T.copy(),
        labels=[f"{what} index"],
        origin=np.zeros(n_rows, dtype=np.int64),
        position=np.arange(n_rows, dtype=np.int64),
    )


# --------------------------------------------------------------------------------------------------------
# Validation and splitting.


def _unknown_column(kind: str, name: str, table: _Table) -> DataError:
    """A DataError for a column name that ``table`` does not have."""
    close = difflib.get_close_matches(name, table.columns, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return DataError(
        f"{kind} '{name}' is not a column of {table.name}{hint}; choose one of: {', '.join(table.columns)}"
    )


def _check_columns(spec: _Spec, table: _Table) -> None:
    """Check that every named column exists and that no column has two roles."""
    roles = [("target", (spec.target,)), ("protected attribute", spec.protected)]
    roles += [("categorical column", spec.categorical), ("numeric column", spec.numeric or ())]
    for kind, names in roles:
        for name in names:
            if name not in table.columns:
                raise _unknown_column(kind, name, table)
    if not spec.protected:
        raise DataError("protected is empty; name at least one protected attribute column, e.g. ['sex']")
    for kind, names in roles[1:]:
        if spec.target in names:
            raise DataError(f"target '{spec.target}' is also listed as a {kind}; remove it from that list")
    both = sorted(set(spec.categorical) & set(spec.numeric or ()))
    if both:
        raise DataError(f"{', '.join(map(repr, both))} listed as both categorical and numeric; keep one")


def _align(test: _Table, main: _Table) -> _Table:
    """Reorder the columns of ``test`` to those of ``main`` (same set of columns required)."""
    if sorted(test.columns) != sorted(main.columns):
        missing = sorted(set(main.columns) - set(test.columns))
        extra = sorted(set(test.columns) - set(main.columns))
        raise DataError(
            f"{test.name} has different columns than {main.name} (missing: {', '.join(missing) or '-'}; "
            f"extra: {', '.join(extra) or '-'}); give both the same columns"
        )
    order = [test.columns.index(name) for name in main.columns]
    values = test.values[:, order]
    return _Table(test.name, list(main.columns), values, test.labels, test.origin, test.position)


def _concat(main: _Table, test: _Table) -> _Table:
    """Stack the rows of ``main`` and (aligned) ``test``."""
    return _Table(
        name=main.name,
        columns=list(main.columns),
        values=np.concatenate([main.values, test.values]),
        labels=main.labels + test.labels,
        origin=np.concatenate([main.origin, test.origin + len(main.labels)]),
        position=np.concatenate([main.position, test.position]),
    )


def _split_indices(n_main: int, n_test: int, spec: _Spec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices (into main rows followed by test rows) of the train, val and test splits, each sorted."""
    try:
        rng = np.random.default_rng(spec.seed)
    except (TypeError, ValueError) as exc:
        raise DataError(f"seed={spec.seed!r} is not a valid random seed; use a non-negative integer") from exc
    perm = rng.permutation(n_main)
    if n_test > 0:
        test = np.arange(n_main, n_main + n_test)
    else:
        n_held = held_out_count(check_fraction("test_fraction", spec.test_fraction), n_main)
        test, perm = perm[:n_held], perm[n_held:]
    n_val = held_out_count(check_fraction("val_fraction", spec.val_fraction), len(perm))
    val, train = perm[:n_val], perm[n_val:]
    if len(train) == 0:
        raise DataError(
            f"the train split is empty ({n_main} rows, val_fraction={spec.val_fraction}, "
            f"test_fraction={spec.test_fraction}); load more rows or lower the fractions"
        )
    return np.sort(train), np.sort(val), np.sort(test)


# --------------------------------------------------------------------------------------------------------
# Encoding.


def _strip_dot(value: str) -> str:
    """Remove one trailing ``"."`` (UCI Adult test labels are written ``">50K."``)."""
    return value[:-1] if value.endswith(".") else value


def _target_values(table: _Table, spec: _Spec) -> np.ndarray:
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


def _encode_targets(
    table: _Table, spec: _Spec, train: np.ndarray, held_out: np.ndarray
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


def _encode_attributes(table: _Table, spec: _Spec) -> tuple[np.ndarray, list[list[str]]]:
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


def _parse_numeric(table: _Table, name: str, missing: str) -> np.ndarray:
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


def _feature_roles(table: _Table, spec: _Spec) -> list[tuple[str, str]]:
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


def _encode_features(table: _Table, spec: _Spec, train: np.ndarray) -> tuple[np.ndarray, list[str]]:
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


def _make_split(
    features: np.ndarray, targets: np.ndarray, attributes: np.ndarray, rows: np.ndarray
) -> TabularSplit:
    """Tensors of the given rows."""
    return TabularSplit(
        features=torch.from_numpy(np.ascontiguousarray(features[rows])),
        targets=torch.from_numpy(np.ascontiguousarray(targets[rows])),
        attributes=torch.from_numpy(np.ascontiguousarray(attributes[rows])),
    )


def _build(main: _Table, test: _Table | None, spec: _Spec) -> TabularData:
    """Validate, split and encode ``main`` (and the optional separate ``test`` table)."""
    _check_columns(spec, main)
    table = main if test is None else _concat(main, _align(test, main))
    train, val, test_rows = _split_indices(len(main), 0 if test is None else len(test), spec)
    held_out = np.concatenate([val, test_rows])
    targets, class_names = _encode_targets(table, spec, train, held_out)
    attributes, attribute_values = _encode_attributes(table, spec)
    features, feature_names = _encode_features(table, spec, train)
    return TabularData(
        train=_make_split(features, targets, attributes, train),
        val=_make_split(features, targets, attributes, val),
        test=_make_split(features, targets, attributes, test_rows),
        feature_names=feature_names,
        class_names=class_names,
        attribute_names=list(spec.protected),
        attribute_values=attribute_values,
    )


# --------------------------------------------------------------------------------------------------------
# Public loaders.


def load_csv(
    path: PathLike,
    *,
    target: str,
    positive_value: str | None,
    protected: Sequence[str],
    categorical: Sequence[str] = (),
    numeric: Sequence[str] | None = None,
    test_path: PathLike | None = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    drop_protected: bool = False,
    missing: str = "?",
    header: bool = True,
    column_names: Sequence[str] | None = None,
    delimiter: str = ",",
) -> TabularData:
    """Load a delimited text file (optionally gzip-compressed, ``.gz``) as a :class:`TabularData`.

    Parsing uses the csv module with ``skipinitialspace=True``; every field is stripped of whitespace.
    Blank lines and lines starting with ``"|"`` (comments, as in the UCI Adult test file) are skipped.

    Args:
        path: the data file; train and val rows (and test rows unless ``test_path`` is given).
        target: name of the target column.
        positive_value: for a binary task, the target value of class 1 (every other value is class 0; the
            class names are ``[other, positive_value]`` if exactly one other value occurs in the train rows,
            else ``["not <positive_value>", positive_value]``). ``None`` for a multi-class task whose
            classes are the sorted unique target values of the train rows. One trailing ``"."`` is stripped
            from target values only (the UCI Adult test file writes ``">50K."``).
        protected: protected attribute columns; coded by the sorted unique values over all loaded rows.
            They are also one-hot features unless ``drop_protected`` is set (or listed in ``numeric``).
        categorical: columns to one-hot encode (categories fit on the train split; values unseen there give
            all-zero rows; the missing marker is kept as a category of its own).
        numeric: columns to standardize. ``None`` means every column that is not the target, not
            categorical and not protected. When given, columns in no list are ignored.
        test_path: optional file with the test rows (same columns). Then val is a ``val_fraction`` of the
            rows of ``path`` and ``test_fraction`` is ignored; otherwise test is a ``test_fraction`` of the
            rows of ``path`` and val a ``val_fraction`` of the remaining rows. Held-out sizes are rounded
            half up with at least one row; rows keep their file order within each split.
        val_fraction, test_fraction: fractions strictly between 0 and 1.
        seed: seed of ``numpy.random.default_rng(seed).permutation`` used for the splits.
        drop_protected: remove the protected columns from the features (they stay in ``attributes``).
        missing: the missing-value marker.
        header: whether the first (non-comment) line holds the column names. If ``column_names`` is also
            given, it replaces the names of the header line.
        column_names: column names; required when ``header=False``.
        delimiter: the one-character field separator.

    Raises:
        FileNotFoundError: if ``path`` or ``test_path`` is not a file.
        DataError: for an unusable file, argument or value (the message says which and how to fix it).
    """
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise DataError(f"delimiter={delimiter!r} must be a single character; use e.g. delimiter=','")
    spec = _make_spec(
        target,
        positive_value,
        protected,
        categorical,
        numeric,
        val_fraction,
        test_fraction,
        seed,
        drop_protected,
        missing,
    )
    main = _read_csv(path, header, column_names, delimiter, "data file")
    test = None if test_path is None else _read_csv(test_path, header, column_names, delimiter, "test file")
    return _build(main, test, spec)


def from_records(
    records: Mapping[str, Sequence[Any]] | Any,
    *,
    target: str,
    positive_value: str | None,
    protected: Sequence[str],
    categorical: Sequence[str] = (),
    numeric: Sequence[str] | None = None,
    test: Mapping[str, Sequence[Any]] | Any | None = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    drop_protected: bool = False,
    missing: str = "?",
) -> TabularData:
    """Build a :class:`TabularData` from in-memory columns, with the same rules as :func:`load_csv`.

    ``records`` (and ``test``) is a mapping of column name to a sequence of values, or a pandas-like data
    frame (anything with ``.columns`` whose ``frame[name].tolist()`` gives the values). Each value is
    converted with ``str(value).strip()``; ``None`` and float NaN become the ``missing`` marker. Passing
    the string cells of a CSV file therefore gives the same result as :func:`load_csv` on that file.

    ``test`` plays the role of ``test_path``; see :func:`load_csv` for all other arguments.
    """
    spec = _make_spec(
        target,
        positive_value,
        protected,
        categorical,
        numeric,
        val_fraction,
        test_fraction,
        seed,
        drop_protected,
        missing,
    )
    main = _records_table(records, spec.missing, "records")
    test_table = None if test is None else _records_table(test, spec.missing, "test records")
    return _build(main, test_table, spec)
