"""A single, self-contained HTML report of a run: tables, verdicts and every plot inline.

``report.html`` sits beside ``report.md``. It needs no network: the CSS is inline and each
PNG of ``plots/`` is embedded as a base64 ``data:`` URI. Besides the plots of ``report.md``
it draws, per split, the EAG of every group with its bootstrap interval against ε
(``eag_ci_<split>.png``), the accuracy-vs-max-EAG scatter of the methods
(``accuracy_vs_max_eag.png``) and each group's train-vs-test EAG (``eag_train_vs_test.png``).

Like ``report.md`` it covers the evaluated splits only (:attr:`~.results.RunResults.splits`), and marks a
method selected on the test split ``†`` with a footnote (its test numbers are optimistic).
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..data.splits import SPLITS
from ..files import atomic_write_text
from .group_evaluation import VERDICTS
from .markdown import VERDICT_HEADER, fmt
from .plots import plot_accuracy_vs_violation, plot_eag_intervals, plot_train_vs_test
from .results import Interval, ResultsLike, RunResults
from .results_view import (
    is_feasible,
    max_eag_rows,
    method_label,
    min_group_size_of,
    selection_note,
    verdict_entries,
)

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
caption { text-align: left; font-weight: bold; margin-bottom: 0.3em; }
.violated { color: #b00020; } .satisfied { color: #1b5e20; } .uncertain { color: #8d6e00; }
figure { margin: 1em 0; } img { max-width: 100%; } figcaption { font-size: 0.85em; color: #555; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""


def html_escape(value: Any) -> str:
    return html.escape(str(value))


def html_table(caption: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html_escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    caption = f"<caption>{html_escape(caption)}</caption>"
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html_escape(title)}</title><style>{CSS}</style></head><body>{body}</body></html>\n"
    )


def _ci(interval: Interval | None) -> str:
    if interval is None or not interval.complete:
        return "–"
    return f"[{fmt(interval.low)}, {fmt(interval.high)}]"


# -- the page ----------------------------------------------------------------------------------


def _method_rows(results: RunResults) -> list[list[str]]:
    rows = []
    for name, method in results.items():
        row = [html_escape(method_label(name, method))]
        for split in results.splits:
            s = method.split(split)
            row += [fmt(s.accuracy), f"{fmt(s.max_eag)} {_ci(s.max_eag_ci)}"]
        ok = is_feasible(method.split("train").max_eag, results.tolerance)
        row.append("–" if ok is None else ("yes" if ok else "no"))
        rows.append(row)
    return rows


def _max_eag_section(results: RunResults) -> str:
    rows = max_eag_rows(results, fmt)
    if not rows:
        return ""
    size = min_group_size_of(results)
    header = ["method", "split", "max EAG (all groups)", f"max EAG (n ≥ {size})"]
    caption = "Where each max EAG is: the group and its size"
    return html_table(caption, header, [[html_escape(c) for c in r] for r in rows])


def _verdict_section(results: RunResults) -> str:
    rows = []
    for method, split, constraint, groups in verdict_entries(results):
        cells = [
            html_escape(method_label(method, results.methods.get(method))),
            html_escape(split),
            html_escape(constraint),
        ]
        for kind in VERDICTS:
            members = groups.get(kind, [])
            cells.append(
                f'<span class="{kind}" title="{html_escape(", ".join(members))}">{len(members)}</span>'
            )
        cells.append(html_escape(", ".join(groups.get("violated", [])) or "–"))
        rows.append(cells)
    if not rows:
        return "<p>No verdicts (no bootstrap evaluation in this run).</p>"
    return html_table("Verdicts per group: CI upper ≤ ε, CI lower > ε, or neither", VERDICT_HEADER, rows)


def _group_tables(results: RunResults) -> str:
    out = []
    for name, method in results.items():
        for split in results.splits:
            rows = [
                [
                    html_escape(group),
                    str(row.n),
                    fmt(row.accuracy),
                    _ci(row.interval("accuracy")),
                    fmt(row.dense_accuracy),
                    fmt(row.eag),
                    _ci(row.interval("eag")),
                    fmt(row.value("positive_rate")),
                    fmt(row.value("tpr")),
                    fmt(row.value("fpr")),
                ]
                for group, row in method.split(split).groups.items()
                if row.n
            ]
            header = [
                "group",
                "n",
                "accuracy",
                "acc CI",
                "dense acc",
                "EAG",
                "EAG CI",
                "pos. rate",
                "TPR",
                "FPR",
            ]
            out.append(html_table(f"{method_label(name, method)} — {split}", header, rows))
    return "\n".join(out)


def embedded_figures(plots: Path) -> str:
    out = []
    for png in sorted(plots.glob("*.png")):
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        out.append(
            f'<figure><img alt="{html_escape(png.stem)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html_escape(png.name)}</figcaption></figure>"
        )
    return "\n".join(out)


def selection_note_html(name: str) -> str:
    """The footnote of a method selected on the test split, as a ``<p class="note">``."""
    note = selection_note(
        name, code=lambda s: f"<code>{html_escape(s)}</code>", em=lambda s: f"<em>{html_escape(s)}</em>"
    )
    return f'<p class="note">{note}</p>'


def failure_note_html(name: str, error: str) -> str:
    """The note of a method whose training failed (it has no results)."""
    what = f"<strong>{html_escape(name)} failed</strong>"
    return f'<p class="note">{what} (no results): {html_escape(error)}</p>'


def selection_notes_html(results: RunResults) -> str:
    """One footnote per method selected on the test split ("" in a normal run)."""
    return "".join(selection_note_html(name) for name in results.methods_selected_on_test)


def format_html(metrics: ResultsLike, config: Mapping | None, plots: Path) -> str:
    results = RunResults.from_json(metrics)
    config = config or {}
    splits = results.splits
    methods = results.methods
    summary = [
        ("run", config.get("name", "–")),
        ("data", (config.get("data") or {}).get("name", "–")),
        ("model", (config.get("model") or {}).get("name", "–")),
    ]
    if splits != SPLITS:  # a row only where the splits differ from the usual train/val/test
        summary.append(
            ("splits", ", ".join(splits) + (" (no validation split)" if "val" not in splits else ""))
        )
    summary += [
        ("sparsity", results.sparsity),
        ("tolerance ε", results.tolerance),
        ("methods", ", ".join(method_label(name, entry) for name, entry in methods.items())),
        ("seed", config.get("seed", "–")),
    ]
    config_rows = [[html_escape(k), html_escape(v)] for k, v in summary]
    method_header = (
        ["method"] + [f"{s} {k}" for s in splits for k in ("acc", "max EAG [CI]")] + ["feasible (train)"]
    )
    body = [
        "<h1>constrained_fairness run report</h1>",
        html_table("Configuration", ["key", "value"], config_rows),
        "<h2>Methods</h2>",
        html_table(
            "Accuracy and max EAG per split (bootstrap interval)", method_header, _method_rows(results)
        ),
        selection_notes_html(results),
        "".join(failure_note_html(name, error) for name, error in results.failed.items()),
        "<h2>Verdicts</h2>",
        _verdict_section(results),
        _max_eag_section(results),
        "<h2>Plots</h2>",
        embedded_figures(plots),
        "<h2>Per-group tables</h2>",
        _group_tables(results),
    ]
    return html_page(f"{config.get('name', 'run')} report", "".join(body))


def write_html_report(run_dir: str | Path, metrics: ResultsLike, config: Mapping | None = None) -> Path:
    """Draw the interval plots into ``plots/`` and write ``report.html`` (atomically)."""
    results = RunResults.from_json(metrics)
    run_dir = Path(run_dir)
    plots = run_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    if results.methods:
        for split in results.splits:
            plot_eag_intervals(results, split, plots / f"eag_ci_{split}.png")
        plot_accuracy_vs_violation(results, plots / "accuracy_vs_max_eag.png")
        plot_train_vs_test(results, plots / "eag_train_vs_test.png")
    return atomic_write_text(run_dir / "report.html", format_html(results, config, plots))
