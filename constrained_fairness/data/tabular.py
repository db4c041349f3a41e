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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from .table import PathLike, Table, align_columns, concat_tables, read_csv, records_table
from .tabular_encoding import (
    TableSpec,
    check_columns,
    encode_attributes,
    encode_features,
    encode_targets,
    make_spec,
    tabular_split_indices,
)

__all__ = ["TabularData", "TabularSplit", "from_records", "load_csv"]


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


def _make_split(
    features: np.ndarray, targets: np.ndarray, attributes: np.ndarray, rows: np.ndarray
) -> TabularSplit:
    """Tensors of the given rows."""
    return TabularSplit(
        features=torch.from_numpy(np.ascontiguousarray(features[rows])),
        targets=torch.from_numpy(np.ascontiguousarray(targets[rows])),
        attributes=torch.from_numpy(np.ascontiguousarray(attributes[rows])),
    )


def _build(main: Table, test: Table | None, spec: TableSpec) -> TabularData:
    """Validate, split and encode ``main`` (and the optional separate ``test`` table)."""
    check_columns(spec, main)
    table = main if test is None else concat_tables(main, align_columns(test, main))
    train, val, test_rows = tabular_split_indices(len(main), 0 if test is None else len(test), spec)
    held_out = np.concatenate([val, test_rows])
    targets, class_names = encode_targets(table, spec, train, held_out)
    attributes, attribute_values = encode_attributes(table, spec)
    features, feature_names = encode_features(table, spec, train)
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
    spec = make_spec(
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
    main = read_csv(path, header, column_names, delimiter, "data file")
    test = None if test_path is None else read_csv(test_path, header, column_names, delimiter, "test file")
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
    spec = make_spec(
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
    main = records_table(records, spec.missing, "records")
    test_table = None if test is None else records_table(test, spec.missing, "test records")
    return _build(main, test_table, spec)
