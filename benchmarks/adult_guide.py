"""UCI Adult prepared as in the ``fairness_training`` guide's example (``example_usage.py``).

The guide's ``load_and_preprocess_adult_data`` reads ``adult.data`` with pandas; this does the
same with numpy, from the copy bundled with the package:

* rows with a missing value (``?``) are dropped: 32,561 → 30,162 rows;
* the target is ``income == '>50K'``; the protected columns are ``sex == 'Male'`` (column 0)
  and ``race == 'White'`` (column 1), as 0/1 floats;
* ``workclass, marital-status, occupation, relationship, native-country`` are one-hot encoded
  with the first category (in sorted order) dropped, as ``pd.get_dummies(drop_first=True)``;
  ``education`` (a duplicate of ``education-num``), ``sex`` and ``race`` are left out;
* the features are standardized on all rows (as the guide does, before the split);
* the split is the guide's: 60 % train, then the rest halved into validation and test, each
  stratified on the label (our seeded split; the guide calls scikit-learn's with
  ``random_state=42``).
"""

from __future__ import annotations

import csv
import gzip
from dataclasses import dataclass

import numpy as np

from constrained_fairness.data.adult import ADULT_COLUMNS, _bundled

ONE_HOT = ("workclass", "marital-status", "occupation", "relationship", "native-country")
NUMERIC = ("age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week")


@dataclass(frozen=True)
class AdultSplits:
    """Float32 arrays; columns 0 and 1 of ``X_*`` are sex (1 = Male) and race (1 = White)."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray


def adult_guide_arrays() -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)`` of all complete rows of ``adult.data``, prepared as the guide does."""
    with gzip.open(_bundled("adult.data.gz"), "rt", newline="") as handle:
        rows = [[v.strip() for v in row] for row in csv.reader(handle) if len(row) == len(ADULT_COLUMNS)]
    table = np.array([row for row in rows if "?" not in row])
    column = {name: table[:, i] for i, name in enumerate(ADULT_COLUMNS)}
    numeric = np.stack([column[name].astype(np.float64) for name in NUMERIC], axis=1)
    dummies = []
    for name in ONE_HOT:
        categories = np.unique(column[name])[1:]  # drop_first
        dummies.append((column[name][:, None] == categories[None, :]).astype(np.float64))
    features = np.concatenate([numeric, *dummies], axis=1)
    std = features.std(axis=0)
    features = (features - features.mean(axis=0)) / np.where(std > 0, std, 1.0)
    sex = (column["sex"] == "Male").astype(np.float64)[:, None]
    race = (column["race"] == "White").astype(np.float64)[:, None]
    X = np.concatenate([sex, race, features], axis=1).astype(np.float32)
    y = (column["income"] == ">50K").astype(np.float32)
    return X, y


def _stratified_split(
    y: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, split off): ``fraction`` of each label's rows split off, at random."""
    kept, taken = [], []
    for label in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == label))
        n = round(fraction * len(rows))
        taken.append(rows[:n])
        kept.append(rows[n:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(taken))


def adult_guide_splits(seed: int) -> AdultSplits:
    """The guide's 60/20/20 split, stratified on the label, drawn with ``seed``."""
    X, y = adult_guide_arrays()
    rng = np.random.default_rng(seed)
    train, rest = _stratified_split(y, 0.4, rng)
    val_pos, test_pos = _stratified_split(y[rest], 0.5, rng)
    val, test = rest[val_pos], rest[test_pos]
    return AdultSplits(X[train], y[train], X[val], y[val], X[test], y[test])
