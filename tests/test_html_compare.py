"""The HTML report (one self-contained file) and ``cfair compare`` on a tiny sweep."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from constrained_fairness.cli import main

from .helpers import tiny_config, write_synthetic_csv

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
    from constrained_fairness.compare import curves

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
