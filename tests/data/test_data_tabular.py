"""Tests of constrained_fairness.data (CSV / in-memory tabular loaders and the bundled UCI Adult data)."""

from __future__ import annotations

import gzip
import math
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch

from constrained_fairness.data import TabularData, TabularSplit, from_records, load_adult, load_csv
from constrained_fairness.errors import DataError

# A small table in CSV form: numeric x, categorical color, protected sex, binary target y.
SMALL_HEADER = ["x", "color", "sex", "y"]
SMALL_ROWS = [
    ["1.0", "red", "F", "yes"],
    ["2.0", "blue", "M", "no"],
    ["4.0", "red", "M", "yes"],
    ["8.0", "blue", "F", "no"],
    ["16.0", "red", "F", "no"],
    ["32.0", "blue", "M", "yes"],
    ["64.0", "red", "M", "no"],
    ["128.0", "blue", "F", "yes"],
    ["256.0", "red", "M", "no"],
    ["512.0", "blue", "F", "no"],
]
SMALL_TEST_ROWS = [
    ["3.0", "red", "F", "yes"],
    ["5.0", "green", "M", "no"],
    ["7.0", "blue", "M", "no"],
]


def write_csv(path: Path, rows: list[list[str]], header: list[str] | None = None, sep: str = ",") -> Path:
    """Write rows (and an optional header) as delimited text; gzip-compress if the name ends in .gz."""
    lines = ([sep.join(header)] if header else []) + [sep.join(row) for row in rows]
    text = "\n".join(lines) + "\n"
    if path.suffix == ".gz":
        with gzip.open(path, "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return path


@pytest.fixture
def small(tmp_path: Path) -> tuple[Path, Path]:
    """The small train file and its separate test file (with an unseen color 'green')."""
    train = write_csv(tmp_path / "small.csv", SMALL_ROWS, SMALL_HEADER)
    test = write_csv(tmp_path / "small_test.csv", SMALL_TEST_ROWS, SMALL_HEADER)
    return train, test


def load_small(paths: tuple[Path, Path], **kwargs) -> TabularData:
    """load_csv on the small fixture with its default roles, overridable by kwargs."""
    args = dict(
        target="y",
        positive_value="yes",
        protected=["sex"],
        categorical=["color"],
        test_path=paths[1],
        val_fraction=0.2,
        seed=0,
    )
    args.update(kwargs)
    return load_csv(paths[0], **args)


def expected_split(n_rows: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Train and val row numbers under the documented rule (seeded permutation, val first, file order)."""
    perm = np.random.default_rng(seed).permutation(n_rows)
    n_val = max(1, math.floor(val_fraction * n_rows + 0.5))
    return sorted(perm[n_val:].tolist()), sorted(perm[:n_val].tolist())


# --------------------------------------------------------------------------------------------------------
# Encoding.


def test_standardization_uses_train_statistics(small: tuple[Path, Path]) -> None:
    data = load_small(small)
    train_rows, val_rows = expected_split(len(SMALL_ROWS), 0.2, seed=0)
    assert len(data.train) == 8 and len(data.val) == 2 and len(data.test) == 3

    train_x = [float(SMALL_ROWS[i][0]) for i in train_rows]
    mean, std = statistics.fmean(train_x), statistics.pstdev(train_x)
    col = data.feature_names.index("x")

    def standardized(rows: list[list[str]], indices: list[int]) -> torch.Tensor:
        return torch.tensor([(float(rows[i][0]) - mean) / std for i in indices], dtype=torch.float32)

    torch.testing.assert_close(data.train.features[:, col], standardized(SMALL_ROWS, train_rows))
    torch.testing.assert_close(data.val.features[:, col], standardized(SMALL_ROWS, val_rows))
    torch.testing.assert_close(data.test.features[:, col], standardized(SMALL_TEST_ROWS, [0, 1, 2]))
    # Statistics over all rows would differ: the val rows must not have leaked into them.
    all_x = [float(r[0]) for r in SMALL_ROWS]
    assert abs(statistics.fmean(all_x) - mean) > 1e-3


def test_constant_numeric_column_uses_unit_std(tmp_path: Path) -> None:
    rows = [[r[0], "7", r[2], r[3]] for r in SMALL_ROWS]
    path = write_csv(tmp_path / "const.csv", rows, ["x", "c", "sex", "y"])
    data = load_csv(path, target="y", positive_value="yes", protected=["sex"], seed=1)
    col = data.feature_names.index("c")
    for split in (data.train, data.val, data.test):
        assert torch.equal(split.features[:, col], torch.zeros(len(split)))


def test_one_hot_layout_and_unseen_category(small: tuple[Path, Path]) -> None:
    data = load_small(small)
    assert data.feature_names == ["x", "color=blue", "color=red", "sex=F", "sex=M"]
    assert data.num_features == 5
    assert data.train.features.dtype == torch.float32 and data.train.features.shape == (8, 5)
    expected_test = torch.tensor([[0, 1, 1, 0], [0, 0, 0, 1], [1, 0, 0, 1]], dtype=torch.float32)
    assert torch.equal(data.test.features[:, 1:], expected_test)  # 'green' (unseen) -> all-zero color block
    train_rows, _ = expected_split(len(SMALL_ROWS), 0.2, seed=0)
    expected_train = torch.tensor(
        [
            [r[1] == "blue", r[1] == "red", r[2] == "F", r[2] == "M"]
            for r in (SMALL_ROWS[i] for i in train_rows)
        ],
        dtype=torch.float32,
    )
    assert torch.equal(data.train.features[:, 1:], expected_train)


def test_protected_attributes_and_drop_protected(small: tuple[Path, Path]) -> None:
    data = load_small(small, drop_protected=True)
    assert data.feature_names == ["x", "color=blue", "color=red"]
    assert data.attribute_names == ["sex"] and data.attribute_values == [["F", "M"]]
    assert data.test.attributes.dtype == torch.int64
    assert data.test.attributes.tolist() == [[0], [1], [1]]
    train_rows, _ = expected_split(len(SMALL_ROWS), 0.2, seed=0)
    assert data.train.attributes[:, 0].tolist() == [int(SMALL_ROWS[i][2] == "M") for i in train_rows]


def test_protected_codes_cover_values_only_in_test(tmp_path: Path) -> None:
    rows = [[str(i), "a" if i % 2 else "b", "yes" if i % 3 else "no"] for i in range(10)]
    test_rows = [["1", "c", "yes"], ["2", "a", "no"]]
    path = write_csv(tmp_path / "tr.csv", rows, ["x", "g", "y"])
    test = write_csv(tmp_path / "te.csv", test_rows, ["x", "g", "y"])
    data = load_csv(path, target="y", positive_value="yes", protected=["g"], test_path=test)
    assert data.attribute_values == [["a", "b", "c"]]
    assert data.test.attributes[:, 0].tolist() == [2, 0]
    assert "g=c" not in data.feature_names  # one-hot categories come from the train split only


def test_missing_marker_is_a_category(tmp_path: Path) -> None:
    rows = [list(r) for r in SMALL_ROWS]
    rows[0][1] = rows[5][1] = "?"
    path = write_csv(tmp_path / "missing.csv", rows, SMALL_HEADER)
    data = load_csv(path, target="y", positive_value="yes", protected=["sex"], categorical=["color"], seed=3)
    assert data.feature_names[1:4] == ["color=?", "color=blue", "color=red"]


# --------------------------------------------------------------------------------------------------------
# Targets.

ADULT_LIKE_COLUMNS = ["age", "workclass", "sex", "hours", "income"]
ADULT_LIKE_TRAIN = """\
39, State-gov, Male, 40, <=50K
50, Self-emp-not-inc, Male, 13, <=50K
38, Private, Male, 40, <=50K
53, Private, Male, 40, >50K
28, Private, Female, 40, <=50K
37, ?, Female, 40, >50K

49, Private, Female, 16, <=50K
52, Self-emp-not-inc, Male, 45, >50K
"""
ADULT_LIKE_TEST = """\
|1x3 Cross validator
25, Private, Male, 40, <=50K.
38, Private, Female, 50, >50K.
28, Local-gov, Male, 40, >50K.
"""


@pytest.fixture
def adult_like(tmp_path: Path) -> tuple[Path, Path]:
    """Headerless ', '-separated files in the UCI Adult format (comment line, '.' label suffix, gzip test)."""
    train = tmp_path / "mini.data"
    train.write_text(ADULT_LIKE_TRAIN)
    test = tmp_path / "mini.test.gz"
    with gzip.open(test, "wt") as handle:
        handle.write(ADULT_LIKE_TEST)
    return train, test


def load_adult_like(paths: tuple[Path, Path], **kwargs) -> TabularData:
    args = dict(
        target="income",
        positive_value=">50K",
        protected=["sex"],
        categorical=["workclass", "sex"],
        test_path=paths[1],
        header=False,
        column_names=ADULT_LIKE_COLUMNS,
        val_fraction=0.25,
    )
    args.update(kwargs)
    return load_csv(paths[0], **args)


def test_adult_format_binary_target_with_trailing_dot(adult_like: tuple[Path, Path]) -> None:
    data = load_adult_like(adult_like)
    assert data.class_names == ["<=50K", ">50K"] and data.num_classes == 2
    assert len(data.train) == 6 and len(data.val) == 2 and len(data.test) == 3
    assert data.test.targets.dtype == torch.int64
    assert data.test.targets.tolist() == [0, 1, 1]
    assert data.test.attributes[:, 0].tolist() == [1, 0, 1]  # Female=0, Male=1
    train_rows, val_rows = expected_split(8, 0.25, seed=0)
    fields = [line.split(", ") for line in ADULT_LIKE_TRAIN.splitlines() if line]
    assert data.train.targets.tolist() == [int(fields[i][-1] == ">50K") for i in train_rows]
    assert data.val.targets.tolist() == [int(fields[i][-1] == ">50K") for i in val_rows]
    workclasses = sorted({fields[i][1] for i in train_rows})
    expected_names = ["age"] + [f"workclass={w}" for w in workclasses] + ["sex=Female", "sex=Male", "hours"]
    assert data.feature_names == expected_names
    block = [j for j, name in enumerate(data.feature_names) if name.startswith("workclass=")]
    private = data.feature_names.index("workclass=Private")
    assert data.test.features[:2, block].tolist() == [[float(j == private) for j in block]] * 2
    assert torch.equal(data.test.features[2, block], torch.zeros(len(block)))  # Local-gov unseen in train


def test_multiclass_target(tmp_path: Path) -> None:
    names = ["cat", "ant", "bee"]
    rows = [[str(i), "ab"[i % 2], names[i % 3]] for i in range(12)]
    path = write_csv(tmp_path / "multi.csv", rows, ["x", "g", "y"])
    data = load_csv(path, target="y", positive_value=None, protected=["g"], seed=2)
    assert data.class_names == ["ant", "bee", "cat"] and data.num_classes == 3
    perm = np.random.default_rng(2).permutation(12)  # no test_path: test first (2 rows), then val (2 rows)
    train_rows = sorted(perm[4:].tolist())
    assert data.train.targets.tolist() == [data.class_names.index(rows[i][2]) for i in train_rows]
    assert data.test.targets.tolist() == [data.class_names.index(rows[i][2]) for i in sorted(perm[:2])]


def test_binary_class_names_with_several_negative_values(tmp_path: Path) -> None:
    rows = [[str(i), "ab"[i % 2], ["cat", "ant", "bee"][i % 3]] for i in range(12)]
    path = write_csv(tmp_path / "multi.csv", rows, ["x", "g", "y"])
    data = load_csv(path, target="y", positive_value="cat", protected=["g"])
    assert data.class_names == ["not cat", "cat"]


# --------------------------------------------------------------------------------------------------------
# Splits.


def id_table(tmp_path: Path, n_rows: int = 50) -> Path:
    """A table whose protected column 'id' identifies each row (codes are consistent over all splits)."""
    rows = [[str(i), f"{i:03d}", "ab"[i % 2], "yes" if i % 3 else "no"] for i in range(n_rows)]
    return write_csv(tmp_path / "ids.csv", rows, ["x", "id", "g", "y"])


def split_ids(data: TabularData, split: TabularSplit) -> list[int]:
    return [int(data.attribute_values[0][code]) for code in split.attributes[:, 0].tolist()]


def test_seeded_split_is_deterministic_disjoint_and_covering(tmp_path: Path) -> None:
    path = id_table(tmp_path)
    args = dict(target="y", positive_value="yes", protected=["id", "g"], drop_protected=True)
    first = load_csv(path, val_fraction=0.25, test_fraction=0.2, seed=7, **args)
    again = load_csv(path, val_fraction=0.25, test_fraction=0.2, seed=7, **args)
    other = load_csv(path, val_fraction=0.25, test_fraction=0.2, seed=8, **args)

    train, val, test = (split_ids(first, s) for s in (first.train, first.val, first.test))
    assert (len(train), len(val), len(test)) == (30, 10, 10)
    assert sorted(train + val + test) == list(range(50))
    for ids in (train, val, test):
        assert ids == sorted(ids)  # file order is kept within a split
    for name in ("train", "val", "test"):
        a, b = getattr(first, name), getattr(again, name)
        assert torch.equal(a.features, b.features)
        assert torch.equal(a.targets, b.targets)
        assert torch.equal(a.attributes, b.attributes)
    assert split_ids(other, other.test) != test
    # The features really belong to the rows: x equals the id, standardized with train statistics.
    raw = torch.tensor(train, dtype=torch.float64)
    expected = ((raw - raw.mean()) / raw.std(unbiased=False)).float()
    torch.testing.assert_close(first.train.features[:, 0], expected)


def test_from_records_matches_load_csv(small: tuple[Path, Path]) -> None:
    columns = {name: [row[j] for row in SMALL_ROWS] for j, name in enumerate(SMALL_HEADER)}
    test_columns = {name: [row[j] for row in SMALL_TEST_ROWS] for j, name in enumerate(SMALL_HEADER)}
    expected = load_small(small, seed=4)
    roles = dict(target="y", positive_value="yes", protected=["sex"], categorical=["color"], seed=4)
    got = from_records(columns, test=test_columns, **roles)
    assert_same(got, expected)
    # Native Python values (floats) give the same numbers.
    columns["x"] = [float(v) for v in columns["x"]]
    assert_same(from_records(columns, test=test_columns, **roles), expected)


def test_from_records_accepts_a_data_frame(small: tuple[Path, Path]) -> None:
    class Column:
        def __init__(self, values: list) -> None:
            self.values = values

        def tolist(self) -> list:
            return list(self.values)

    class Frame:
        def __init__(self, rows: list[list[str]]) -> None:
            self.columns = list(SMALL_HEADER)
            self.rows = rows

        def __getitem__(self, name: str) -> Column:
            j = SMALL_HEADER.index(name)
            return Column([row[j] for row in self.rows])

    roles = dict(target="y", positive_value="yes", protected=["sex"], categorical=["color"])
    assert_same(from_records(Frame(SMALL_ROWS), test=Frame(SMALL_TEST_ROWS), **roles), load_small(small))


def assert_same(got: TabularData, expected: TabularData) -> None:
    for name in ("train", "val", "test"):
        a, b = getattr(got, name), getattr(expected, name)
        assert torch.equal(a.features, b.features)
        assert torch.equal(a.targets, b.targets)
        assert torch.equal(a.attributes, b.attributes)
    assert got.feature_names == expected.feature_names
    assert got.class_names == expected.class_names
    assert got.attribute_names == expected.attribute_names
    assert got.attribute_values == expected.attribute_values


# --------------------------------------------------------------------------------------------------------
# Errors.


def raises_one_line(error: type[Exception], match: str, call, *args, **kwargs) -> str:
    with pytest.raises(error, match=match) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_protected_column(small: tuple[Path, Path]) -> None:
    message = raises_one_line(
        DataError, "protected attribute 'gender'", load_small, small, protected=["gender"]
    )
    assert "small.csv" in message and "x, color, sex, y" in message


def test_missing_target_column(small: tuple[Path, Path]) -> None:
    raises_one_line(DataError, "target 'label' is not a column", load_small, small, target="label")


def test_missing_file(tmp_path: Path, small: tuple[Path, Path]) -> None:
    raises_one_line(
        FileNotFoundError,
        "nope.csv",
        load_csv,
        tmp_path / "nope.csv",
        target="y",
        positive_value="yes",
        protected=["sex"],
    )
    raises_one_line(
        FileNotFoundError, "nope_test.csv", load_small, small, test_path=tmp_path / "nope_test.csv"
    )


def test_single_valued_protected(tmp_path: Path) -> None:
    rows = [[r[0], r[1], "F", r[3]] for r in SMALL_ROWS]
    path = write_csv(tmp_path / "one_sex.csv", rows, SMALL_HEADER)
    raises_one_line(
        DataError,
        "protected attribute 'sex' has the single value 'F'",
        load_csv,
        path,
        target="y",
        positive_value="yes",
        protected=["sex"],
        categorical=["color"],
    )


def test_bad_numeric_value(small: tuple[Path, Path], tmp_path: Path) -> None:
    message = raises_one_line(
        DataError, "column 'color' .*'red'.* is not a number", load_small, small, categorical=[]
    )
    assert "categorical" in message
    rows = [list(r) for r in SMALL_ROWS]
    rows[3][0] = "?"
    path = write_csv(tmp_path / "missing_x.csv", rows, SMALL_HEADER)
    raises_one_line(
        DataError,
        "numeric column 'x' has the missing marker '\\?' at missing_x.csv line 5",
        load_csv,
        path,
        target="y",
        positive_value="yes",
        protected=["sex"],
        categorical=["color"],
    )


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_bad_fraction(small: tuple[Path, Path], fraction: float) -> None:
    raises_one_line(DataError, "val_fraction=", load_small, small, val_fraction=fraction)
    raises_one_line(DataError, "test_fraction=", load_small, small, test_path=None, test_fraction=fraction)


def test_unknown_target_value_in_test(small: tuple[Path, Path], tmp_path: Path) -> None:
    rows = [list(r) for r in SMALL_TEST_ROWS]
    rows[1][3] = "maybe"
    test = write_csv(tmp_path / "bad_test.csv", rows, SMALL_HEADER)
    raises_one_line(
        DataError, "target value 'maybe' at bad_test.csv line 3", load_small, small, test_path=test
    )


def test_positive_value_absent(small: tuple[Path, Path]) -> None:
    raises_one_line(DataError, "positive_value 'Yes' does not occur", load_small, small, positive_value="Yes")


def test_other_input_errors(small: tuple[Path, Path], tmp_path: Path) -> None:
    raises_one_line(DataError, "header=False needs column_names", load_small, small, header=False)
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("x,color,sex,y\n1,red,F,yes\n2,blue,M\n")
    raises_one_line(DataError, "ragged.csv line 3 has 3 fields", load_small, (ragged, small[1]))
    raises_one_line(DataError, "target 'y' is also listed", load_small, small, categorical=["color", "y"])
    raises_one_line(
        DataError,
        "train split is empty",
        load_small,
        (write_csv(tmp_path / "one.csv", SMALL_ROWS[:1], SMALL_HEADER), small[1]),
    )


# --------------------------------------------------------------------------------------------------------
# The bundled UCI Adult data.


@pytest.fixture(scope="module")
def adult() -> TabularData:
    return load_adult()


def test_adult_sizes_and_attributes(adult: TabularData) -> None:
    assert len(adult.train) + len(adult.val) == 32561
    assert len(adult.val) == round(0.2 * 32561)
    assert len(adult.test) == 16281
    assert adult.attribute_names == ["race", "sex"]
    assert len(adult.attribute_values[0]) == 5 and adult.attribute_values[1] == ["Female", "Male"]
    assert adult.class_names == ["<=50K", ">50K"]


def test_adult_targets_and_features(adult: TabularData) -> None:
    for split in (adult.train, adult.val, adult.test):
        assert set(split.targets.unique().tolist()) == {0, 1}
        assert split.features.shape[1] == adult.num_features
        assert torch.isfinite(split.features).all()
        assert split.attributes.shape == (len(split), 2)
    assert abs(adult.train.targets.float().mean().item() - 0.24) < 0.01
    assert abs(adult.test.targets.float().mean().item() - 0.236) < 0.01
    age = adult.feature_names.index("age")
    assert abs(adult.train.features[:, age].mean().item()) < 1e-4
    assert abs(adult.train.features[:, age].std().item() - 1.0) < 1e-3
