"""Tabular data loading: generic CSV / in-memory loaders and the bundled UCI Adult data set."""

from __future__ import annotations

from constrained_fairness.data.adult import load_adult
from constrained_fairness.data.tabular import TabularData, TabularSplit, from_records, load_csv

__all__ = ["TabularData", "TabularSplit", "from_records", "load_adult", "load_csv"]
