"""The HTML report (one self-contained file) and ``cfair compare`` on a tiny sweep."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from constrained_fairness.cli import main

from ..helpers import tiny_config, write_synthetic_csv
from .test_report import LEAK_NOTE

VOID = {"meta", "img", "br", "hr", "link", "input"}


class Checker(HTMLParser):
    """Well-formedness (every non-void tag closed in order) and external references."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.images: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("src", "href"):
            if attrs.get(key) and not str(attrs[key]).startswith(("data:", "#")):
                self.external.append(attrs[key])
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(f"unexpected </{tag}>")


def check_html(path: Path) -> Checker:
    checker = Checker()
    checker.feed(path.read_text())
    checker.close()
    assert not checker.errors and not checker.stack, (checker.errors, checker.stack)
    assert not checker.external, checker.external
    assert "http://" not in path.read_text() and "https://" not in path.read_text()
    return checker


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """Three tiny runs: seeds 0 and 1 at sparsity 0.9, seed 0 at 0.5."""
    root = tmp_path_factory.mktemp("sweep")
    csv = write_synthetic_csv(root / "data.csv")
    config = tiny_config(root, csv=csv, methods="[nft, ceag]", evaluation="{bootstrap_resamples: 60}")
    for seed, sparsity in ((0, 0.9), (1, 0.9), (0, 0.5)):
        out = root / "runs" / f"s{seed}-p{sparsity}"
        args = ["run", str(config), "--output", str(out), "--quiet", "--set", f"seed={seed}"]
        assert main([*args, "--set", f"pruning.sparsity={sparsity}"]) == 0
    return root / "runs"


def test_metrics_hold_intervals_aggregates_and_verdicts(sweep):
    metrics = json.loads((sweep / "s0-p0.9" / "metrics.json").read_text())
    test = metrics["methods"]["ceag"]["test"]
    low, high = test["max_eag_ci"]
    assert low <= high
    group = next(g for g in test["groups"].values() if g["n"])
    assert group["accuracy_ci"][0] <= group["accuracy"] <= group["accuracy_ci"][1]
    assert {"positive_rate", "tpr", "fpr", "loss", "eag_ci"} <= set(group)
    assert set(test["aggregates"]["accuracy"]) == {"group_min", "group_max", "difference", "ratio"}
    verdict = test["verdicts"]["eag"]
    assert sum(verdict["counts"].values()) == sum(1 for g in test["groups"].values() if g["n"])
    assert verdict["tolerance"] == metrics["tolerance"]
    report = (sweep / "s0-p0.9" / "report.md").read_text()
    assert "## Generalization verdicts" in report and "| ceag | test | eag |" in report


def test_html_report_is_one_offline_file_with_every_plot(sweep):
    run = sweep / "s0-p0.9"
    checker = check_html(run / "report.html")
    pngs = sorted((run / "plots").glob("*.png"))
    names = {p.name for p in pngs}
    expected = {
        "eag_ci_train.png",
        "eag_ci_test.png",
        "accuracy_vs_max_eag.png",
        "eag_train_vs_test.png",
        "multipliers.png",
    }
    assert expected <= names
    assert len(checker.images) == len(pngs)
    assert all(src.startswith("data:image/png;base64,") for src in checker.images)
    text = (run / "report.html").read_text()
    assert "Verdicts" in text and "Configuration" in text and "ceag — test" in text


def test_compare_builds_a_table_and_curves_from_a_sweep_folder(sweep, tmp_path):
    out = tmp_path / "cmp"
    assert main(["compare", str(sweep), "--output", str(out)]) == 0
    table = (out / "compare.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| s")]
    assert len(rows) == 6  # 3 runs x 2 methods
    assert (out / "plots" / "sparsity_vs_max_eag.png").is_file() and (
        out / "plots" / "sparsity_vs_accuracy.png"
    ).is_file()
    checker = check_html(out / "compare.html")
    assert len(checker.images) == 2
    # a glob works too
    assert main(["compare", str(sweep / "s0-*"), "--output", str(tmp_path / "cmp2")]) == 0
    assert (
        len(
            [ln for ln in (tmp_path / "cmp2" / "compare.md").read_text().splitlines() if ln.startswith("| s")]
        )
        == 4
    )


def test_compare_curves_aggregate_seeds():
    from constrained_fairness.reporting.compare import curves

    rows = [
        {"method": "ceag", "sparsity": 0.9, "test_max_eag": 0.1},
        {"method": "ceag", "sparsity": 0.9, "test_max_eag": 0.3},
        {"method": "ceag", "sparsity": 0.5, "test_max_eag": 0.05},
    ]
    (low, mean_lo, std_lo, n_lo), (high, mean_hi, std_hi, n_hi) = curves(rows, "test_max_eag")["ceag"]
    assert (low, mean_lo, std_lo, n_lo) == (0.5, 0.05, 0.0, 1)
    assert (
        high == 0.9 and mean_hi == pytest.approx(0.2) and std_hi == pytest.approx(0.1414213562) and n_hi == 2
    )


def test_compare_bad_input_is_one_line(sweep, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["compare", str(empty)]) == 2
    err = capsys.readouterr().err.strip()
    assert "has no metrics.json" in err and len(err.splitlines()) == 1
    other = tmp_path / "other"
    shutil.copytree(sweep / "s0-p0.5", other)
    metrics = json.loads((other / "metrics.json").read_text())
    metrics["groups"] = ["x", "y"]
    (other / "metrics.json").write_text(json.dumps(metrics))
    assert main(["compare", str(sweep / "s0-p0.9"), str(other), "--output", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip()
    assert "incompatible metrics" in err and len(err.splitlines()) == 1


def test_bootstrap_resamples_below_one_is_a_config_error(tmp_path, capsys):
    config = tiny_config(tmp_path)
    assert main(["run", str(config), "--quiet", "--set", "evaluation.bootstrap_resamples=0"]) == 2
    assert "evaluation.bootstrap_resamples must be >= 1" in capsys.readouterr().err


# -- runs without a validation split ("paper mode": data.val_fraction = 0) ----------------------

LEAK_NOTE_HTML = (
    '<p class="note">† <code>nft_es_test</code>: the best NFT epoch by <em>test</em> accuracy, '
    "as in the reference code; its test numbers are optimistic (test-set leak).</p>"
)


def _no_val_word(text: str) -> bool:
    """No ``val`` word outside the embedded PNGs (base64 may hold any letters)."""
    import re

    return re.search(r"\bval\b", re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", text)) is None


def _paper_mode_run(source: Path, target: Path) -> dict:
    """A copy of a finished run rewritten as a run without a validation split: an ``nft_es``
    entry (the NFT entry, selected on val) becomes ``nft_es_test`` selected on test, every
    ``"val"`` key goes, ``"splits": ["train", "test"]``; reports rewritten from scratch."""
    import yaml

    from constrained_fairness.reporting.html import write_html_report
    from constrained_fairness.reporting.markdown import write_report

    from .test_report import to_paper_mode, without_val

    shutil.copytree(source, target)
    shutil.rmtree(target / "plots")
    metrics = json.loads((target / "metrics.json").read_text())
    nft_es = json.loads(json.dumps(metrics["methods"]["nft"]))
    nft_es["selected_on"] = "val"
    nft_es["test"]["accuracy"] = 0.98765  # recognisable in the tables
    metrics["methods"]["nft_es"] = nft_es
    metrics = to_paper_mode(metrics)
    assert '"val"' not in json.dumps(metrics)  # the rewrite left no val key
    (target / "metrics.json").write_text(json.dumps(metrics))
    history = [json.loads(line) for line in (target / "history.jsonl").read_text().splitlines() if line]
    history = without_val(history)
    (target / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    config = yaml.safe_load((target / "config.yaml").read_text())
    write_report(target, metrics, history, metrics["groups"])
    write_html_report(target, metrics, config)
    return metrics


@pytest.fixture(scope="module")
def paper_runs(sweep, tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("paper")
    runs = [root / "runs" / name for name in ("p0-p0.9", "p1-p0.9")]
    for source, target in zip((sweep / "s0-p0.9", sweep / "s1-p0.9"), runs, strict=True):
        _paper_mode_run(source, target)
    return runs


def test_html_report_without_val_split(paper_runs):
    import re

    run = paper_runs[0]
    metrics = json.loads((run / "metrics.json").read_text())
    assert list(metrics["methods"]) == ["nft", "ceag", "nft_es_test"]
    checker = check_html(run / "report.html")
    text = (run / "report.html").read_text()
    assert _no_val_word(text), "a val column, table or plot in report.html"
    names = {p.name for p in (run / "plots").glob("*.png")}
    assert {"eag_ci_train.png", "eag_ci_test.png", "eag_train.png", "eag_test.png"} <= names
    assert not any("val" in n for n in names)
    assert len(checker.images) == len(names)
    # the method table: train and test columns, nft_es_test marked, the note right below it
    caption = "<caption>Accuracy and max EAG per split (bootstrap interval)</caption>"
    table = text[text.index(caption) : text.index("</table>", text.index(caption)) + len("</table>")]
    header = re.findall(r"<th>(.*?)</th>", table)
    assert header == [
        "method",
        "train acc",
        "train max EAG [CI]",
        "test acc",
        "test max EAG [CI]",
        "feasible (train)",
    ]
    assert "<tr><td>nft_es_test †</td>" in table and "0.9877" in table
    assert text[text.index(caption) + len(table) :].startswith(LEAK_NOTE_HTML + "<h2>Verdicts</h2>")
    assert text.count(LEAK_NOTE_HTML) == 1
    # per-group tables and verdicts on train and test only, the method marked
    assert re.findall(r"<caption>nft_es_test † — (\w+)</caption>", text) == ["train", "test"]
    assert "<td>nft_es_test †</td><td>test</td><td>eag</td>" in text
    assert "<td>splits</td><td>train, test (no validation split)</td>" in text
    # report.md of the same run
    md = (run / "report.md").read_text()
    assert re.search(r"\bval\b", md) is None and md.count(LEAK_NOTE) == 1
    assert "| nft_es_test † | 0." in md


def test_compare_runs_without_val_split(paper_runs, sweep, tmp_path):
    out = tmp_path / "cmp"
    assert main(["compare", *map(str, paper_runs), "--output", str(out)]) == 0
    table = (out / "compare.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| p")]
    assert len(rows) == 2 * 3  # 2 runs x (nft, ceag, nft_es_test)
    marked = [line for line in rows if "| nft_es_test † |" in line]
    assert len(marked) == 2 and all("| 0.9877 |" in line for line in marked)
    assert not any("| nft_es_test |" in line for line in rows)
    lines = table.splitlines()
    last_row = max(i for i, line in enumerate(lines) if line.startswith("| p"))
    assert lines[last_row + 1 : last_row + 3] == ["", LEAK_NOTE] and table.count(LEAK_NOTE) == 1
    assert _no_val_word(table)
    html = (out / "compare.html").read_text()
    check_html(out / "compare.html")
    assert "<td>nft_es_test †</td>" in html and html.count(LEAK_NOTE_HTML) == 1
    # a run without and one with a validation split compare alike; only the leaky method is marked
    mixed = tmp_path / "mixed"
    assert main(["compare", str(paper_runs[0]), str(sweep / "s0-p0.5"), "--output", str(mixed)]) == 0
    mixed_table = (mixed / "compare.md").read_text()
    assert len([line for line in mixed_table.splitlines() if line.startswith("| ")]) == 2 + 3 + 2
    assert mixed_table.count("†") == 2  # the nft_es_test row and its note


def test_compare_of_three_split_runs_has_no_leak_note(sweep, tmp_path):
    out = tmp_path / "cmp"
    assert main(["compare", str(sweep), "--output", str(out)]) == 0
    assert (
        "†" not in (out / "compare.md").read_text()
        and "test-set leak" not in (out / "compare.html").read_text()
    )


def test_aggregate_table_without_val_split_marks_the_leak(paper_runs, sweep, tmp_path):
    from constrained_fairness.reporting.aggregate import write_table

    text = write_table(paper_runs, tmp_path / "table.md")
    lines = text.splitlines()
    row = next(line for line in lines if line.startswith("| 0.9 | nft_es_test † | 2 |"))
    assert "0.9877 ± 0.0000" in row
    assert lines[-2:] == ["", LEAK_NOTE]
    normal = write_table([sweep / "s0-p0.9", sweep / "s1-p0.9"], tmp_path / "normal.md")
    assert "†" not in normal and len(normal.splitlines()) == 2 + 2
