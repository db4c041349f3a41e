"""Raw tables: CSV files (plain or gzipped) and in-memory records read into columns of
whitespace-stripped strings, before any encoding (steps 1 of :mod:`.tabular`)."""

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

from ..errors import DataError

PathLike = str | os.PathLike


@dataclass
class Table:
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


def open_text(path: Path) -> TextIO:
    """Open ``path`` for csv reading, decompressing ``.gz`` files transparently."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def check_file(path: PathLike, what: str) -> Path:
    """Return ``path`` as a Path, raising ``FileNotFoundError`` with a helpful message if it is not a file."""
    resolved = Path(path).expanduser()
    if not resolved.is_file():
        raise FileNotFoundError(
            f"{what} '{resolved}' does not exist or is not a file; check the path "
            f"(relative paths are resolved against {Path.cwd()})"
        )
    return resolved


def read_rows(path: Path, delimiter: str) -> tuple[list[list[str]], list[int]]:
    """Parse ``path`` into stripped string rows, skipping blank lines and lines starting with ``|``."""
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        with open_text(path) as handle:
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


def read_csv(
    path: PathLike, header: bool, column_names: Sequence[str] | None, delimiter: str, what: str
) -> Table:
    """Read one delimited file into a :class:`Table`."""
    file = check_file(path, what)
    rows, lines = read_rows(file, delimiter)
    columns = as_names(column_names, "column_names")
    if header:
        if not rows:
            raise DataError(f"{what} '{file}' is empty; it needs a header line and at least one data row")
        file_header = rows.pop(0)
        lines.pop(0)
        if columns is None:
            columns = as_names(file_header, f"the header of '{file.name}'")
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
    return Table(
        name=file.name,
        columns=list(columns),
        values=np.array(rows, dtype=str),
        labels=[label],
        origin=np.zeros(len(rows), dtype=np.int64),
        position=np.asarray(lines, dtype=np.int64),
    )


def cell_text(value: Any, missing: str) -> str:
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


def records_columns(records: Any, what: str) -> list[tuple[str, list[Any]]]:
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


def records_table(records: Any, missing: str, what: str) -> Table:
    """Convert in-memory columns into a :class:`Table` of stripped strings."""
    pairs = records_columns(records, what)
    if not pairs:
        raise DataError(f"{what} has no columns; pass e.g. {{'age': [...], 'income': [...]}}")
    as_names([name for name, _ in pairs], f"the columns of {what}")
    lengths = {name: len(values) for name, values in pairs}
    if len(set(lengths.values())) != 1:
        detail = ", ".join(f"{name}={n}" for name, n in lengths.items())
        raise DataError(
            f"columns of {what} have different lengths ({detail}); give every column one value per row"
        )
    n_rows = len(pairs[0][1])
    if n_rows == 0:
        raise DataError(f"{what} has no rows; pass at least one row")
    cells = [[cell_text(v, missing) for v in values] for _, values in pairs]
    return Table(
        name=what,
        columns=[name for name, _ in pairs],
        values=np.array(cells, dtype=str).T.copy(),
        labels=[f"{what} index"],
        origin=np.zeros(n_rows, dtype=np.int64),
        position=np.arange(n_rows, dtype=np.int64),
    )


def unknown_column(kind: str, name: str, table: Table) -> DataError:
    """A DataError for a column name that ``table`` does not have."""
    close = difflib.get_close_matches(name, table.columns, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return DataError(
        f"{kind} '{name}' is not a column of {table.name}{hint}; choose one of: {', '.join(table.columns)}"
    )


def align_columns(test: Table, main: Table) -> Table:
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
    return Table(test.name, list(main.columns), values, test.labels, test.origin, test.position)


def concat_tables(main: Table, test: Table) -> Table:
    """Stack the rows of ``main`` and (aligned) ``test``."""
    return Table(
        name=main.name,
        columns=list(main.columns),
        values=np.concatenate([main.values, test.values]),
        labels=main.labels + test.labels,
        origin=np.concatenate([main.origin, test.origin + len(main.labels)]),
        position=np.concatenate([main.position, test.position]),
    )


def as_names(value: str | Sequence[str] | None, what: str) -> tuple[str, ...] | None:
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
