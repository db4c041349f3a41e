r"""``cfair compare``: one table and one set of curves across finished runs.

Runs are named by their folders (a run folder holds ``metrics.json``), by glob patterns,
or by a folder that contains runs (a sweep folder: searched up to three levels down).
Every run must report the same groups; the table lists each (run, method) pair, and the
curves aggregate the runs of each (method, sparsity) over seeds as mean ± sample std

    x̄ = Σ x_i / n,   s = sqrt(Σ (x_i − x̄)² / (n − 1))   (0 for one seed),

for the test max EAG and the test accuracy against the sparsity. The output folder gets
``compare.md``, ``compare.html`` (self-contained) and the two plots.

Only the train and test splits are compared, so runs with and without a validation split
(``metrics["splits"]``, :attr:`~.results.RunResults.splits`) compare alike; a value of a split a run did
not evaluate is ``–``. A method selected on the test split (``"selected_on": "test"``, e.g.
``nft_es_test``) is marked ``†`` in the table and the curves, with a footnote.
"""

from __future__ import annotations

import glob
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import DataError
from ..files import atomic_write_text
from .aggregate import mean_std
from .html import embedded_figures, html_escape, html_page, html_table, selection_note_html
from .markdown import fmt, md_escape, md_table
from .plots import new_figure, save_figure
from .results import RunResults
from .results_view import marked_label, methods_selected_on_test, selection_note


def find_runs(paths: Sequence[str]) -> list[Path]:
    """Run folders named by ``paths`` (folders, globs, or folders of runs), deduplicated, sorted."""
    found: list[Path] = []
    for spec in paths:
        matches = [Path(p) for p in sorted(glob.glob(spec))] or [Path(spec)]
        for path in matches:
            if (path / "metrics.json").is_file():
                found.append(path)
                continue
            if not path.exists():
                raise DataError(f"{path} does not exist; pass run folders, a glob, or a sweep folder")
            inner = sorted(
                {p.parent for depth in ("*", "*/*", "*/*/*") for p in path.glob(f"{depth}/metrics.json")}
            )
            if not inner:
                raise DataError(
                    f"{path} has no metrics.json (not a finished run) and holds no finished runs; "
                    "pass run folders, a glob, or a sweep folder"
                )
            found += inner
    return sorted(set(found))


@dataclass
class LoadedRun:
    """A finished run: its folder, its results and its config (``{}`` without config.yaml)."""

    path: Path
    results: RunResults
    config: dict[str, Any]


def load_run(path: Path) -> LoadedRun:
    try:
        metrics = json.loads((path / "metrics.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(
            f"cannot read {path / 'metrics.json'} ({type(exc).__name__}); re-run or remove that run"
        ) from None
    if (
        not isinstance(metrics, dict)
        or not isinstance(metrics.get("methods"), dict)
        or "groups" not in metrics
    ):
        raise DataError(
            f"{path / 'metrics.json'} is not a cfair metrics file (no methods/groups); remove that run"
        )
    try:
        results = RunResults.from_json(metrics)
    except TypeError as exc:  # e.g. metrics['splits'] must be a list of split names, got ...
        raise DataError(f"{path / 'metrics.json'} is malformed ({exc}); re-run or remove that run") from None
    config: dict[str, Any] = {}
    if (path / "config.yaml").is_file():
        config = yaml.safe_load((path / "config.yaml").read_text()) or {}
    return LoadedRun(path, results, config)


def load_runs(paths: Sequence[str]) -> list[LoadedRun]:
    runs = []
    for run in map(load_run, find_runs(paths)):
        if run.results.finished:
            runs.append(run)
        else:  # a run still going (or one that crashed): its metrics.json lists what is pending
            pending = ", ".join(run.results.pending or [])
            warnings.warn(f"{run.path} is not finished (pending: {pending}); left out", stacklevel=2)
    if not runs:
        raise DataError(
            "none of the runs has finished; compare finished runs (their metrics.json has no pending)"
        )
    first = runs[0]
    for run in runs[1:]:
        if run.results.groups != first.results.groups:
            ours, theirs = run.results.groups[:3], first.results.groups[:3]
            raise DataError(
                f"runs have incompatible metrics: {run.path} reports groups {ours}... but "
                f"{first.path} reports {theirs}...; compare runs of one dataset and grouping"
            )
    return runs


def table_rows(runs: Sequence[LoadedRun]) -> list[dict[str, Any]]:
    """One row per (run, method); ``selected_on_test`` is true for a method selected on test.
    A split the run did not evaluate reads as missing."""
    rows = []
    for run in runs:
        r = run.results
        for name, method in r.items():
            train, test = method.split("train"), method.split("test")
            eag_verdict = test.verdicts.get("eag")
            rows.append(
                {
                    "run": run.path.name,
                    "seed": run.config.get("seed"),
                    "sparsity": r.sparsity,
                    "tolerance": r.tolerance,
                    "method": name,
                    "selected_on_test": method.selected_on_test,
                    "train_accuracy": train.accuracy,
                    "train_max_eag": train.max_eag,
                    "test_accuracy": test.accuracy,
                    "test_max_eag": test.max_eag,
                    "test_violated_groups": None
                    if eag_verdict is None
                    else eag_verdict.counts.get("violated"),
                }
            )
    return rows


def curves(rows: Sequence[dict[str, Any]], key: str) -> dict[str, list[tuple[float, float, float, int]]]:
    """``{method: [(sparsity, mean, std, seeds), ...]}`` of ``key`` over the runs."""
    cells: dict[tuple[str, float], list[float]] = {}
    for row in rows:
        if row[key] is not None and row["sparsity"] is not None:
            cells.setdefault((row["method"], float(row["sparsity"])), []).append(float(row[key]))
    out: dict[str, list[tuple[float, float, float, int]]] = {}
    for (method, sparsity), values in sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        out.setdefault(method, []).append((sparsity, *mean_std(values), len(values)))
    return out


def plot_curves(
    rows: Sequence[dict[str, Any]], key: str, label: str, path: Path, tolerance: float | None
) -> Path:
    fig = new_figure(6.5, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    marked = {row["method"] for row in rows if row["selected_on_test"]}
    for i, (method, points) in enumerate(curves(rows, key).items()):
        xs, means, stds, _ = zip(*points, strict=True)
        shown = marked_label(method, method in marked)
        ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, color=f"C{i % 10}", label=shown)
    if tolerance is not None and key.endswith("max_eag"):
        ax.axhline(tolerance, color="k", linestyle="--", linewidth=1, label="ε")
    ax.set_xlabel("sparsity")
    ax.set_ylabel(label + " (mean ± std over seeds)")
    ax.set_title(f"sparsity vs {label}")
    ax.legend(fontsize="small")
    return save_figure(fig, path)


COLUMNS = (
    ("run", "run"),
    ("seed", "seed"),
    ("sparsity", "sparsity"),
    ("method", "method"),
    ("train_accuracy", "train acc"),
    ("train_max_eag", "train max EAG"),
    ("test_accuracy", "test acc"),
    ("test_max_eag", "test max EAG"),
    ("test_violated_groups", "test violated groups"),
)


def _cell(value: Any) -> str:
    return fmt(value) if isinstance(value, float) else ("–" if value is None else str(value))


def _shown(row: dict[str, Any], key: str) -> str:
    return marked_label(row["method"], row["selected_on_test"]) if key == "method" else _cell(row[key])


def write_comparison(paths: Sequence[str], output: str | Path) -> Path:
    """Compare the runs named by ``paths``; write the files into ``output``; return compare.md."""
    runs = load_runs(paths)
    rows = table_rows(runs)
    output = Path(output)
    plots = output / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    tolerance = runs[0].results.tolerance
    plot_curves(rows, "test_max_eag", "test max EAG", plots / "sparsity_vs_max_eag.png", tolerance)
    plot_curves(rows, "test_accuracy", "test accuracy", plots / "sparsity_vs_accuracy.png", tolerance)
    header = [title for _, title in COLUMNS]
    lines = ["# Comparison of runs", "", f"{len(runs)} runs: " + ", ".join(str(r.path) for r in runs), ""]
    cells = [[md_escape(_shown(row, key)) for key, _ in COLUMNS] for row in rows]
    lines.append(md_table(header, cells, ["l", "r", "r", "l", "r", "r", "r", "r", "r"]))
    marked = methods_selected_on_test(r.results for r in runs)
    for method in marked:
        lines += ["", selection_note(method)]
    lines += [
        "",
        "![sparsity vs max EAG](plots/sparsity_vs_max_eag.png)",
        "",
        "![sparsity vs accuracy](plots/sparsity_vs_accuracy.png)",
        "",
    ]
    report = atomic_write_text(output / "compare.md", "\n".join(lines))
    html_rows = [[html_escape(_shown(row, key)) for key, _ in COLUMNS] for row in rows]
    notes = "".join(selection_note_html(m) for m in marked)
    page = html_page(
        "cfair compare",
        f"<h1>Comparison of {len(runs)} runs</h1>"
        f"{html_table('Runs and methods', header, html_rows)}{notes}<h2>Curves</h2>{embedded_figures(plots)}",
    )
    atomic_write_text(output / "compare.html", page)
    return report
