"""A single, self-contained HTML report of a run: tables, verdicts and every plot inline.

``report.html`` sits beside ``report.md``. It needs no network: the CSS is inline and each
PNG of ``plots/`` is embedded as a base64 ``data:`` URI. Besides the plots of ``report.md``
it draws, per split, the EAG of every group with its bootstrap interval against ε
(``eag_ci_<split>.png``), the accuracy-vs-max-EAG scatter of the methods
(``accuracy_vs_max_eag.png``) and each group's train-vs-test EAG (``eag_train_vs_test.png``).

Like ``report.md`` it covers the evaluated splits only (:func:`~.report.splits_of`), and marks a
method selected on the test split ``†`` with a footnote (its test numbers are optimistic).
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .group_report import VERDICTS
from .report import (
    SPLITS,
    VERDICT_HEADER,
    _methods,
    _new_figure,
    _save_figure,
    atomic_write_text,
    fmt,
    is_feasible,
    method_label,
    methods_selected_on_test,
    selection_note,
    splits_of,
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


def _e(value: Any) -> str:
    return html.escape(str(value))


def _table(caption: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return (
        f"<table><caption>{_e(caption)}</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>{body}</body></html>\n"
    )


def _ci(values: Any) -> str:
    if not isinstance(values, Sequence) or len(values) != 2 or None in values:
        return "–"
    return f"[{fmt(values[0])}, {fmt(values[1])}]"


# -- plots -------------------------------------------------------------------------------------


def plot_eag_intervals(metrics: Mapping, split: str, path: Path) -> Path:
    """Per-group EAG with its bootstrap interval (whiskers), one series per method, against ε."""
    import numpy as np

    fig = _new_figure(9, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    methods = _methods(metrics)
    groups = list(metrics.get("groups") or [])
    x = np.arange(len(groups), dtype=float)
    width = 0.8 / max(len(methods), 1)
    for i, (name, entry) in enumerate(methods.items()):
        table = entry.get(split, {}).get("groups", {})
        xs, ys, lo, hi = [], [], [], []
        for j, group in enumerate(groups):
            row = table.get(group, {})
            if row.get("eag") is None:
                continue
            ci = row.get("eag_ci") or [row["eag"], row["eag"]]
            xs.append(x[j] - 0.4 + width * (i + 0.5))
            ys.append(row["eag"])
            lo.append(max(0.0, row["eag"] - (ci[0] if ci[0] is not None else row["eag"])))
            hi.append(max(0.0, (ci[1] if ci[1] is not None else row["eag"]) - row["eag"]))
        ax.bar(
            xs, ys, width=width, label=method_label(name, entry), color=f"C{i % 10}", yerr=[lo, hi], capsize=2
        )
    tolerance = metrics.get("tolerance")
    if tolerance is not None:
        ax.axhline(tolerance, color="k", linestyle="--", linewidth=1, label=f"ε = {tolerance:g}")
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels(
        groups, rotation=45 if len(groups) > 4 else 0, ha="right" if len(groups) > 4 else "center"
    )
    ax.set_ylabel("EAG ψ[g] (bootstrap interval)")
    ax.set_title(f"Excess accuracy gap per group with intervals ({split})")
    if methods:
        ax.legend(fontsize="small")
    return _save_figure(fig, path)


def plot_accuracy_vs_violation(metrics: Mapping, path: Path) -> Path:
    """Test accuracy against test max EAG (with its interval) per method."""
    fig = _new_figure(6, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    for i, (name, entry) in enumerate(_methods(metrics).items()):
        test = entry.get("test", {})
        if test.get("max_eag") is None or test.get("accuracy") is None:
            continue
        ci = test.get("max_eag_ci") or [None, None]
        err = None
        if None not in ci:  # a percentile interval of a maximum may exclude the point estimate
            err = [[max(0.0, test["max_eag"] - ci[0])], [max(0.0, ci[1] - test["max_eag"])]]
        ax.errorbar(
            test["max_eag"],
            test["accuracy"],
            xerr=err,
            fmt="o",
            color=f"C{i % 10}",
            label=method_label(name, entry),
        )
    if metrics.get("tolerance") is not None:
        ax.axvline(metrics["tolerance"], color="k", linestyle="--", linewidth=1, label="ε")
    ax.set_xlabel("test max EAG")
    ax.set_ylabel("test accuracy")
    ax.set_title("Accuracy vs disparity")
    ax.legend(fontsize="small")
    return _save_figure(fig, path)


def plot_train_vs_test(metrics: Mapping, path: Path) -> Path:
    """Each group's train EAG (x) against its test EAG (y), per method; the diagonal and ε."""
    fig = _new_figure(6, 5)
    ax = fig.add_subplot(1, 1, 1)
    for i, (name, entry) in enumerate(_methods(metrics).items()):
        train, test = entry.get("train", {}).get("groups", {}), entry.get("test", {}).get("groups", {})
        points = [
            (train[g]["eag"], test[g]["eag"])
            for g in train
            if g in test and train[g].get("eag") is not None and test[g].get("eag") is not None
        ]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.scatter(xs, ys, s=14, color=f"C{i % 10}", label=method_label(name, entry))
    tolerance = metrics.get("tolerance")
    if tolerance is not None:
        ax.axvline(tolerance, color="k", linestyle="--", linewidth=0.8)
        ax.axhline(tolerance, color="k", linestyle="--", linewidth=0.8, label="ε")
    low, high = ax.get_xlim()
    ax.plot([low, high], [low, high], color="grey", linewidth=0.8)
    ax.set_xlabel("train EAG")
    ax.set_ylabel("test EAG")
    ax.set_title("Does the constraint generalize? (per group)")
    ax.legend(fontsize="small")
    return _save_figure(fig, path)


# -- the page ----------------------------------------------------------------------------------


def _method_rows(metrics: Mapping) -> list[list[str]]:
    rows = []
    for name, entry in _methods(metrics).items():
        row = [_e(method_label(name, entry))]
        for split in splits_of(metrics):
            s = entry.get(split, {})
            row += [fmt(s.get("accuracy")), f"{fmt(s.get('max_eag'))} {_ci(s.get('max_eag_ci'))}"]
        ok = is_feasible(entry.get("train", {}).get("max_eag"), metrics.get("tolerance"))
        row.append("–" if ok is None else ("yes" if ok else "no"))
        rows.append(row)
    return rows


def _verdict_section(metrics: Mapping) -> str:
    rows = []
    methods = _methods(metrics)
    for method, split, constraint, groups in verdict_entries(metrics):
        cells = [_e(method_label(method, methods.get(method))), _e(split), _e(constraint)]
        for kind in VERDICTS:
            members = groups.get(kind, [])
            cells.append(f'<span class="{kind}" title="{_e(", ".join(members))}">{len(members)}</span>')
        cells.append(_e(", ".join(groups.get("violated", [])) or "–"))
        rows.append(cells)
    if not rows:
        return "<p>No verdicts (no bootstrap evaluation in this run).</p>"
    return _table("Verdicts per group: CI upper ≤ ε, CI lower > ε, or neither", VERDICT_HEADER, rows)


def _group_tables(metrics: Mapping) -> str:
    out = []
    for name, entry in _methods(metrics).items():
        for split in splits_of(metrics):
            table = entry.get(split, {}).get("groups") or {}
            rows = [
                [
                    _e(group),
                    str(row.get("n", "–")),
                    fmt(row.get("accuracy")),
                    _ci(row.get("accuracy_ci")),
                    fmt(row.get("dense_accuracy")),
                    fmt(row.get("eag")),
                    _ci(row.get("eag_ci")),
                    fmt(row.get("positive_rate")),
                    fmt(row.get("tpr")),
                    fmt(row.get("fpr")),
                ]
                for group, row in table.items()
                if row.get("n")
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
            out.append(_table(f"{method_label(name, entry)} — {split}", header, rows))
    return "\n".join(out)


def _figures(plots: Path) -> str:
    out = []
    for png in sorted(plots.glob("*.png")):
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        out.append(
            f'<figure><img alt="{_e(png.stem)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(png.name)}</figcaption></figure>"
        )
    return "\n".join(out)


def selection_note_html(name: str) -> str:
    """The footnote of a method selected on the test split, as a ``<p class="note">``."""
    note = selection_note(name, code=lambda s: f"<code>{_e(s)}</code>", em=lambda s: f"<em>{_e(s)}</em>")
    return f'<p class="note">{note}</p>'


def selection_notes_html(metrics: Mapping) -> str:
    """One footnote per method selected on the test split ("" in a normal run)."""
    return "".join(selection_note_html(name) for name in methods_selected_on_test(metrics))


def format_html(metrics: Mapping, config: Mapping | None, plots: Path) -> str:
    config = config or {}
    splits = splits_of(metrics)
    methods = _methods(metrics)
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
        ("sparsity", metrics.get("sparsity")),
        ("tolerance ε", metrics.get("tolerance")),
        ("methods", ", ".join(method_label(name, entry) for name, entry in methods.items())),
        ("seed", config.get("seed", "–")),
    ]
    config_rows = [[_e(k), _e(v)] for k, v in summary]
    method_header = (
        ["method"] + [f"{s} {k}" for s in splits for k in ("acc", "max EAG [CI]")] + ["feasible (train)"]
    )
    body = [
        "<h1>constrained_fairness run report</h1>",
        _table("Configuration", ["key", "value"], config_rows),
        "<h2>Methods</h2>",
        _table("Accuracy and max EAG per split (bootstrap interval)", method_header, _method_rows(metrics)),
        selection_notes_html(metrics),
        "<h2>Verdicts</h2>",
        _verdict_section(metrics),
        "<h2>Plots</h2>",
        _figures(plots),
        "<h2>Per-group tables</h2>",
        _group_tables(metrics),
    ]
    return _page(f"{config.get('name', 'run')} report", "".join(body))


def write_html_report(run_dir: str | Path, metrics: Mapping, config: Mapping | None = None) -> Path:
    """Draw the interval plots into ``plots/`` and write ``report.html`` (atomically)."""
    run_dir = Path(run_dir)
    plots = run_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    if _methods(metrics):
        for split in splits_of(metrics):
            plot_eag_intervals(metrics, split, plots / f"eag_ci_{split}.png")
        plot_accuracy_vs_violation(metrics, plots / "accuracy_vs_max_eag.png")
        plot_train_vs_test(metrics, plots / "eag_train_vs_test.png")
    return atomic_write_text(run_dir / "report.html", format_html(metrics, config, plots))
