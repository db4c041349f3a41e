"""The UCI Adult (census income) data set, bundled with the package.

UCI Adult (Becker & Kohavi, 1996), CC BY 4.0, https://doi.org/10.24432/C5XW20.
The files ``adult.data.gz`` (32,561 rows) and ``adult.test.gz`` (16,281 rows) next to this module are the
verbatim UCI files, gzip-compressed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from constrained_fairness.data.tabular import TabularData, load_csv

__all__ = ["ADULT_CATEGORICAL", "ADULT_COLUMNS", "load_adult"]

ADULT_COLUMNS: tuple[str, ...] = (
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education-num",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital-gain",
    "capital-loss",
    "hours-per-week",
    "native-country",
    "income",
)
"""Column names of the UCI Adult files, in file order (the files have no header line)."""

ADULT_CATEGORICAL: tuple[str, ...] = (
    "workclass",
    "education",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "native-country",
)
"""The categorical columns of UCI Adult; the others except ``income`` are numeric."""

_DATA_DIR = Path(__file__).resolve().parent


def _bundled(name: str) -> Path:
    """Path of a bundled data file, with an actionable error if the installation lacks it."""
    path = _DATA_DIR / name
    if not path.is_file():
        raise FileNotFoundError(
            f"bundled Adult file '{path}' is missing; reinstall constrained_fairness with its package data"
        )
    return path


def load_adult(
    protected: Sequence[str] = ("race", "sex"),
    val_fraction: float = 0.2,
    seed: int = 0,
    drop_protected: bool = False,
) -> TabularData:
    """Load UCI Adult (Becker & Kohavi, 1996), CC BY 4.0, https://doi.org/10.24432/C5XW20.

    Train and val come from ``adult.data`` (val is a seeded ``val_fraction`` of its 32,561 rows); test is
    all 16,281 rows of ``adult.test``. The binary target is ``income`` with positive class ``">50K"``
    (class names ``["<=50K", ">50K"]``; the trailing ``"."`` of the test labels is stripped). Numeric
    columns are standardized and categorical ones one-hot encoded on the train split; missing values
    (``"?"``, in workclass, occupation and native-country) are kept as a category of their own.

    Args:
        protected: protected attribute columns (any of :data:`ADULT_COLUMNS` except ``income``).
        val_fraction: fraction of ``adult.data`` rows used for validation, strictly between 0 and 1.
        seed: seed of the train / val split.
        drop_protected: remove the protected columns from the features.

    Raises:
        DataError: for an unknown or unusable protected column or a bad fraction.
    """
    return load_csv(
        _bundled("adult.data.gz"),
        target="income",
        positive_value=">50K",
        protected=protected,
        categorical=ADULT_CATEGORICAL,
        test_path=_bundled("adult.test.gz"),
        val_fraction=val_fraction,
        seed=seed,
        drop_protected=drop_protected,
        header=False,
        column_names=ADULT_COLUMNS,
        delimiter=",",
    )
