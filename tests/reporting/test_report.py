"""Tests of :mod:`constrained_fairness.report` on small hand-built metrics and history."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

from constrained_fairness import files
from constrained_fairness.reporting import markdown, plots
from constrained_fairness.reporting.markdown import format_group_table, format_method_table, write_report
from constrained_fairness.reporting.results import RunResults

GROUPS = ["White|Male", "White|Female", "Black|Female"]  # "Black|Female" has no sample anywhere
EMPTY = "Black|Female"
TOL = 0.01
SPLITS = ("train", "val", "test")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# dense accuracies: overall and per present group, per split
DENSE = {
    "train": (0.90, {"White|Male": 0.92, "White|Female": 0.85}),
    "val": (0.88, {"White|Male": 0.90, "White|Female": 0.83}),
    "test": (0.87, {"White|Male": 0.89, "White|Female": 0.81}),
}
COUNTS = {
    "train": {"White|Male": 700, "White|Female": 300},
    "val": {"White|Male": 70, "White|Female": 30},
    "test": {"White|Male": 140, "White|Female": 61},
}
# sparse accuracies per method: split -> (overall, {group: acc})
SPARSE = {
    "nft": {  # loses much more on White|Female -> infeasible
        "train": (0.86, {"White|Male": 0.895, "White|Female": 0.775}),
        "val": (0.84, {"White|Male": 0.87, "White|Female": 0.77}),
        "test": (0.83, {"White|Male": 0.865, "White|Female": 0.745}),
    },
    "ceag": {  # nearly uniform loss -> feasible
        "train": (0.87, {"White|Male": 0.891, "White|Female": 0.8155}),
        "val": (0.855, {"White|Male": 0.874, "White|Female": 0.8015}),
        "test": (0.845, {"White|Male": 0.864, "White|Female": 0.7913}),
    },
    "el": {
        "train": (0.865, {"White|Male": 0.8851, "White|Female": 0.8123}),
        "val": (0.85, {"White|Male": 0.8701, "White|Female": 0.7911}),
        "test": (0.84, {"White|Male": 0.8577, "White|Female": 0.7802}),
    },
}
MULTIPLIERS = [[0.0, 0.0, 0.0], [0.0, 0.012, 0.0], [0.001, 0.03, 0.0]]


def _eag(dense_g: float, dense: float, sparse_g: float, sparse: float) -> float:
    """ψ[g] = (acc_d[g] − acc_s[g]) − (acc_d − acc_s)."""
    return (dense_g - sparse_g) - (dense - sparse)


def make_metrics(methods: tuple[str, ...] = ("nft", "ceag", "el")) -> dict:
    dense = {}
    for split, (acc, per_group) in DENSE.items():
        groups = {g: {"n": COUNTS[split][g], "accuracy": per_group[g]} for g in per_group}
        groups[EMPTY] = {"n": 0, "accuracy": None}
        dense[split] = {"accuracy": acc, "groups": groups}
    out_methods = {}
    for name in methods:
        entry: dict = {"epoch": 4}
        for split, (acc, per_group) in SPARSE[name].items():
            d_acc, d_groups = DENSE[split]
            groups = {
                g: {
                    "n": COUNTS[split][g],
                    "accuracy": per_group[g],
                    "dense_accuracy": d_groups[g],
                    "eag": _eag(d_groups[g], d_acc, per_group[g], acc),
                }
                for g in per_group
            }
            groups[EMPTY] = {"n": 0, "accuracy": None, "dense_accuracy": None, "eag": None}
            max_eag = max(v["eag"] for v in groups.values() if v["eag"] is not None)
            entry[split] = {"accuracy": acc, "max_eag": max_eag, "loss": 0.3, "groups": groups}
        if name == "ceag":
            entry["multipliers"] = {"ceag": MULTIPLIERS[-1]}
        out_methods[name] = entry
    return {"tolerance": TOL, "sparsity": 0.95, "wall_seconds": 81.2, "dense": dense, "methods": out_methods}


def make_history(with_multipliers: bool = True) -> list[dict]:
    recs: list[dict] = [
        {
            "stage": "dense",
            "epoch": 0,
            "step": 10,
            "lr": 0.1,
            "train_loss": 0.4,
            "splits": {},
            "multipliers": {"bogus": [5.0, 5.0, 5.0]},
        },
        {
            "stage": "gmp",
            "epoch": 0,
            "step": 20,
            "lr": 0.1,
            "train_loss": 0.4,
            "splits": {},
            "multipliers": {"bogus": [5.0, 5.0, 5.0]},
        },
    ]
    for epoch, mult in enumerate(MULTIPLIERS):
        step = 100 * (epoch + 1)
        recs.append(
            {
                "stage": "nft",
                "epoch": epoch,
                "step": step,
                "lr": 0.01,
                "train_loss": 0.3,
                "splits": {},
            }
        )
        ceag = {
            "stage": "ceag",
            "epoch": epoch,
            "step": step,
            "lr": 0.01,
            "train_loss": 0.3,
            "splits": {},
        }
        if with_multipliers:
            ceag["multipliers"] = {"ceag": mult}
        else:
            ceag["multipliers"] = {}
        recs.append(ceag)
    return recs


def split_row(line: str) -> list[str]:
    """Cells of a markdown table row, honouring ``\\|`` escapes."""
    inner = line.strip()
    assert inner.startswith("|") and inner.endswith("|"), line
    cells = re.split(r"(?<!\\)\|", inner[1:-1])
    return [c.strip().replace("\\|", "|") for c in cells]


def table_rows(markdown: str, first_header: str) -> tuple[list[str], dict[str, list[str]]]:
    """Header and ``{first cell: cells}`` of the first table whose header starts with ``first_header``."""
    lines = markdown.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and split_row(line)[0] == first_header:
            header = split_row(line)
            rows = {}
            for body in lines[i + 2 :]:
                if not body.startswith("|"):
                    break
                cells = split_row(body)
                assert len(cells) == len(header), body
                rows[cells[0]] = cells
            return header, rows
    raise AssertionError(f"no table with header {first_header!r}")


def test_method_table_numbers_and_feasibility() -> None:
    metrics = make_metrics()
    header, rows = table_rows(format_method_table(metrics), "method")
    assert header[-1] == "feasible (train)"
    assert list(rows) == ["nft", "ceag", "el"]
    for name, cells in rows.items():
        entry = metrics["methods"][name]
        for split in SPLITS:
            acc = float(cells[header.index(f"{split} acc")])
            max_eag = float(cells[header.index(f"{split} max EAG")])
            assert acc == pytest.approx(entry[split]["accuracy"], abs=5e-5)
            assert max_eag == pytest.approx(entry[split]["max_eag"], abs=5e-5)
            assert cells[header.index(f"{split} acc")] == f"{entry[split]['accuracy']:.4f}"
    # nft: max EAG on train = (0.85 − 0.775) − (0.90 − 0.86) = 0.035 > ε
    assert float(rows["nft"][header.index("train max EAG")]) == pytest.approx(0.035, abs=5e-5)
    assert rows["nft"][-1] == "✗"
    # ceag: (0.85 − 0.8155) − 0.03 = 0.0045 ≤ ε
    assert float(rows["ceag"][header.index("train max EAG")]) == pytest.approx(0.0045, abs=5e-5)
    assert rows["ceag"][-1] == "✓"


def test_feasible_is_inclusive_and_missing_is_dash() -> None:
    metrics = make_metrics(("nft", "ceag"))
    metrics["methods"]["ceag"]["train"]["max_eag"] = TOL  # exactly at the tolerance: feasible
    metrics["methods"]["nft"]["train"]["max_eag"] = None
    del metrics["methods"]["nft"]["val"]
    header, rows = table_rows(format_method_table(metrics), "method")
    assert rows["ceag"][-1] == "✓"
    assert rows["nft"][-1] == "–"
    assert rows["nft"][header.index("val acc")] == "–"
    assert rows["nft"][header.index("train max EAG")] == "–"


@pytest.mark.parametrize("split", SPLITS)
def test_group_table_rows(split: str) -> None:
    metrics = make_metrics()
    text = format_group_table(metrics, split, GROUPS)
    header, rows = table_rows(text, "group")
    assert header[:3] == ["group", "n", "dense acc"]
    assert header[3:] == ["nft acc", "nft EAG", "ceag acc", "ceag EAG", "el acc", "el EAG"]
    # one row per non-empty group, in the given order; the empty one has no row
    assert list(rows) == ["White|Male", "White|Female"]
    assert EMPTY not in rows
    assert re.search(rf"without samples in {split}.*–.*{re.escape(EMPTY)}", text)
    for g, cells in rows.items():
        assert int(cells[1]) == COUNTS[split][g]
        assert float(cells[2]) == pytest.approx(DENSE[split][1][g], abs=5e-5)
        for name in ("nft", "ceag", "el"):
            cell = metrics["methods"][name][split]["groups"][g]
            assert float(cells[header.index(f"{name} acc")]) == pytest.approx(cell["accuracy"], abs=5e-5)
            assert float(cells[header.index(f"{name} EAG")]) == pytest.approx(cell["eag"], abs=5e-5)
            assert cells[header.index(f"{name} EAG")] == f"{cell['eag']:.4f}"


def test_group_table_missing_cell_shows_dash() -> None:
    metrics = make_metrics(("nft",))
    metrics["methods"]["nft"]["test"]["groups"]["White|Female"]["eag"] = None
    header, rows = table_rows(format_group_table(metrics, "test", GROUPS), "group")
    assert rows["White|Female"][header.index("nft EAG")] == "–"


def _check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 2000, (path, len(data))


def test_write_report_files(tmp_path: Path) -> None:
    metrics = make_metrics()
    paths = write_report(tmp_path / "run", metrics, make_history(), GROUPS)
    run = tmp_path / "run"
    expected = {run / "report.md"} | {
        run / "plots" / name
        for name in (
            "eag_train.png",
            "eag_val.png",
            "eag_test.png",
            "multipliers.png",
            "dense_vs_sparse_accuracy.png",
        )
    }
    assert len(paths) == len(expected) == 6
    assert {Path(p) for p in paths} == expected
    for p in expected:
        assert p.is_file()
        if p.suffix == ".png":
            _check_png(p)
    # no temporary file left behind
    assert sorted(f.name for f in run.rglob("*") if f.is_file()) == sorted(p.name for p in expected)

    text = (run / "report.md").read_text(encoding="utf-8")
    assert "0.01" in text and "0.95" in text and "81.2" in text
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert {run / link for link in links} == expected - {run / "report.md"}
    assert all(link.startswith("plots/") for link in links)
    # the method table in the report carries the same numbers
    header, rows = table_rows(text, "method")
    assert rows["nft"][-1] == "✗" and rows["ceag"][-1] == "✓"
    assert rows["el"][header.index("test acc")] == f"{metrics['methods']['el']['test']['accuracy']:.4f}"
    # one per-group table per split, without a row for the empty group
    group_tables = [line for line in text.splitlines() if line.startswith("| group |")]
    assert len(group_tables) == 3
    assert f"| {EMPTY.replace('|', chr(92) + '|')} |" not in text


def test_multipliers_plot_without_constrained_method(tmp_path: Path) -> None:
    metrics = make_metrics(("nft", "el"))
    history = make_history(with_multipliers=False)
    assert plots.multiplier_traces(history) == {}
    paths = write_report(tmp_path, metrics, history, GROUPS)
    mult = tmp_path / "plots" / "multipliers.png"
    assert mult in paths
    _check_png(mult)
    # also with no history at all
    paths = write_report(tmp_path / "empty", metrics, [], GROUPS)
    _check_png(tmp_path / "empty" / "plots" / "multipliers.png")
    assert all(Path(p).is_file() for p in paths)


def test_multiplier_traces_ignore_dense_and_gmp() -> None:
    history = make_history()
    history.reverse()  # records out of order: traces are sorted by step
    traces = plots.multiplier_traces(history)
    assert list(traces) == ["ceag"]
    steps, values = traces["ceag"]["ceag"]
    assert steps == [100, 200, 300]
    assert values == MULTIPLIERS
    # history files written before 2026-12-02 name the stage under "method"
    old = [{("method" if k == "stage" else k): v for k, v in r.items()} for r in history]
    assert plots.multiplier_traces(old) == traces


def test_many_groups_and_rewrite(tmp_path: Path) -> None:
    """> 10 groups (legend outside) and a second write over an existing report."""
    names = [f"g{i}|x" for i in range(12)]
    metrics = make_metrics(("ceag",))
    for split in SPLITS:
        for entry in (metrics["dense"][split], metrics["methods"]["ceag"][split]):
            for i, g in enumerate(names):
                entry["groups"][g] = {
                    "n": 10 + i,
                    "accuracy": 0.8 + 0.01 * i,
                    "dense_accuracy": 0.85,
                    "eag": 0.001 * i,
                }
    history = [
        {
            "stage": "ceag",
            "epoch": e,
            "step": e * 10,
            "multipliers": {"ceag": [0.01 * e * i for i in range(15)]},
        }
        for e in range(3)
    ]
    all_names = GROUPS + names
    write_report(tmp_path, metrics, history, all_names)
    first = (tmp_path / "report.md").read_text(encoding="utf-8")
    metrics2 = copy.deepcopy(metrics)
    metrics2["methods"]["ceag"]["train"]["accuracy"] = 0.5
    write_report(tmp_path, metrics2, history, all_names)
    second = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert first != second and "0.5000" in second
    _, rows = table_rows(format_group_table(metrics, "train", all_names), "group")
    assert len(rows) == 2 + 12
    for p in (tmp_path / "plots").iterdir():
        _check_png(p)


def test_groups_only_in_metrics_are_reported() -> None:
    """A group present in metrics but missing from ``group_names`` still gets a row."""
    metrics = make_metrics(("nft",))
    _, rows = table_rows(format_group_table(metrics, "val", ["White|Female"]), "group")
    assert list(rows) == ["White|Female", "White|Male"]


def test_atomic_write_keeps_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "report.md"
    files.atomic_write_text(target, "old")

    def boom(f: object) -> None:
        f.write("half")  # type: ignore[attr-defined]
        raise RuntimeError("crash while writing")

    with pytest.raises(RuntimeError):
        files.atomic_write(target, boom, mode="w")
    assert target.read_text(encoding="utf-8") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


# --------------------------------------------------------------------------------------------
# runs without a validation split ("paper mode": data.val_fraction = 0)
# --------------------------------------------------------------------------------------------

LEAK_NOTE = (
    "† `nft_es_test`: the best NFT epoch by *test* accuracy, as in the reference code; "
    "its test numbers are optimistic (test-set leak)."
)


def without_val(obj):
    """``obj`` with every ``"val"`` key removed, at any depth."""
    if isinstance(obj, dict):
        return {k: without_val(v) for k, v in obj.items() if k != "val"}
    if isinstance(obj, list):
        return [without_val(v) for v in obj]
    return obj


def to_paper_mode(metrics: dict) -> dict:
    """A metrics dict as a run without a validation split writes it: no ``"val"`` anywhere,
    ``"splits": ["train", "test"]``, and ``nft_es`` selected on test (``nft_es_test``)."""
    out = without_val(copy.deepcopy(metrics))
    out["splits"] = ["train", "test"]
    methods = {}
    for name, entry in out["methods"].items():
        if name == "nft_es":
            name, entry = "nft_es_test", {**entry, "selected_on": "test"}
        methods[name] = entry
    out["methods"] = methods
    return out


def make_full_metrics() -> dict:
    """:func:`make_metrics` plus an ``nft_es`` entry (selected on val), a declared constraint
    ``dp`` reported for every method and EAG verdicts, on all three splits."""
    metrics = make_metrics()
    nft_es = copy.deepcopy(metrics["methods"]["nft"])
    nft_es["epoch"] = 2
    nft_es["selected_on"] = "val"
    for split in SPLITS:
        nft_es[split]["accuracy"] += 0.0123
    metrics["methods"]["nft_es"] = nft_es
    for i, entry in enumerate(metrics["methods"].values()):
        entry["constraints"] = {
            "dp": {
                split: {"max_violation": 0.01 * (i + 1) + 0.001 * j, "violations": {"sex=F": 0.002 * (i + 1)}}
                for j, split in enumerate(SPLITS)
            }
        }
        for split in SPLITS:
            entry[split]["verdicts"] = {
                "eag": {"groups": {"satisfied": ["White|Male"], "violated": ["White|Female"]}}
            }
    return metrics


def test_splits_read_the_key_and_default_to_three_splits() -> None:
    def splits(metrics: dict) -> tuple[str, ...]:
        return RunResults.from_json(metrics).splits

    assert splits({"methods": {}}) == ("train", "val", "test")
    assert splits({"splits": ["train", "test"]}) == ("train", "test")
    assert splits({"splits": ("train", "val", "test")}) == ("train", "val", "test")
    for bad in ("train", [1, 2], {"train": 1}):
        with pytest.raises(TypeError, match="metrics\\['splits'\\]"):
            splits({"splits": bad})


def test_three_split_run_has_no_leak_note_and_all_splits() -> None:
    text = markdown.format_report(make_full_metrics(), GROUPS)
    assert "†" not in text and "test-set leak" not in text and "Evaluated splits" not in text
    header, rows = table_rows(text, "method")
    assert "val acc" in header and "nft_es" in rows
    assert "## Per-group results (val)" in text and "![dp (val)](plots/constraint_dp_val.png)" in text


def test_method_table_without_val_split() -> None:
    full = make_full_metrics()
    metrics = to_paper_mode(full)
    header, rows = table_rows(format_method_table(metrics), "method")
    assert header == ["method", "train acc", "train max EAG", "test acc", "test max EAG", "feasible (train)"]
    assert list(rows) == ["nft", "ceag", "el", "nft_es_test †"]
    row = rows["nft_es_test †"]
    for split in ("train", "test"):
        expected = full["methods"]["nft_es"][split]["accuracy"]
        assert row[header.index(f"{split} acc")] == f"{expected:.4f}"
    assert rows["nft"][-1] == "✗" and rows["ceag"][-1] == "✓"


def test_write_report_without_val_split(tmp_path: Path) -> None:
    metrics = to_paper_mode(make_full_metrics())
    history = without_val(make_history())
    paths = write_report(tmp_path / "run", metrics, history, GROUPS)
    run = tmp_path / "run"
    names = {
        "eag_train.png",
        "eag_test.png",
        "multipliers.png",
        "dense_vs_sparse_accuracy.png",
        "constraint_dp_train.png",
        "constraint_dp_test.png",
    }
    assert {Path(p) for p in paths} == {run / "report.md"} | {run / "plots" / n for n in names}
    assert sorted(p.name for p in (run / "plots").iterdir()) == sorted(names)  # no val plot
    for p in (run / "plots").iterdir():
        _check_png(p)

    text = (run / "report.md").read_text(encoding="utf-8")
    assert re.search(r"\bval\b", text) is None, "a val column, section or plot in report.md"
    assert "Evaluated splits: train, test (this run has no validation split)." in text
    assert "Dense model accuracy: train 0.9000 · test 0.8700" in text
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert {run / link for link in links} == {run / "plots" / n for n in names}
    # one section per evaluated split
    assert re.findall(r"^## Per-group results \((\w+)\)$", text, re.M) == ["train", "test"]
    assert len([ln for ln in text.splitlines() if ln.startswith("| group |")]) == 2
    # the leak note sits right below the method table, and the method is marked wherever listed
    lines = text.splitlines()
    start = lines.index("## Method comparison")
    table_end = next(i for i in range(start + 2, len(lines)) if not lines[i].startswith("|")) - 1
    assert lines[table_end].startswith("| nft_es_test † |")
    assert lines[table_end + 1] == "" and lines[table_end + 2] == LEAK_NOTE
    assert text.count(LEAK_NOTE) == 1
    assert "nft_es_test † 2" in text  # fine-tuning epoch line
    header, _ = table_rows(text, "group")
    assert header[-2:] == ["nft_es_test † acc", "nft_es_test † EAG"]
    # verdicts on train and test only, the method marked
    verdict_lines = [ln for ln in lines if ln.startswith("| nft_es_test † |") and "| eag |" in ln]
    assert [split_row(ln)[1] for ln in verdict_lines] == ["train", "test"]
    assert not any(split_row(ln)[1] == "val" for ln in lines if "| eag |" in ln)
    # the constraint table: train and test columns only
    section = text[text.index("## Constraint `dp`") :]
    header, rows = table_rows(section, "method")
    assert header == ["method", "train max violation", "test max violation", "satisfied (train)"]
    assert rows["nft_es_test †"][1:3] == ["0.0400", "0.0420"]


def test_report_with_only_a_train_split_has_no_test_section(tmp_path: Path) -> None:
    """Any subset of splits: with train alone, no test column and the dense-vs-sparse plot on train."""
    metrics = to_paper_mode(make_full_metrics())
    metrics = {**metrics, "splits": ["train"]}
    write_report(tmp_path, metrics, [], GROUPS)
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    header, _ = table_rows(text, "method")
    assert header == ["method", "train acc", "train max EAG", "feasible (train)"]
    assert "## Dense vs sparse accuracy per group (train)" in text
    assert "(test)" not in text and not (tmp_path / "plots" / "eag_test.png").exists()
