"""The markdown report of one run (its figures are :mod:`.plots`).

For one split, with dense accuracies ``acc_d[g], acc_d`` and sparse accuracies ``acc_s[g], acc_s``:

    Δ[g] = acc_d[g] − acc_s[g],   Δ = acc_d − acc_s,   ψ[g] = Δ[g] − Δ   (excess accuracy gap, EAG)

    max_eag = max_g ψ[g]  over groups with samples in the split,

and a method is *feasible* for the tolerance ε when ``max_eag ≤ ε`` (judged on the train split,
where the constraints are imposed).

:func:`write_report` writes ``report.md`` plus its PNG plots under ``plots/``, each atomically
(:mod:`constrained_fairness.files`).

All accuracies and EAGs are shown as fractions with 4 decimals; a missing value (group without
samples, ``null``/NaN in the inputs) is shown as ``–``.

**Splits.** A run evaluates the splits listed in ``metrics["splits"]`` (:attr:`~.results.RunResults.splits`; a
run without a validation split, ``data.val_fraction: 0``, has ``["train", "test"]``; an older
metrics file without the key has all three). Tables, sections and plots cover exactly those
splits: a split that was not evaluated gets no column, section or plot.

**Selection on test.** A method whose entry has ``"selected_on": "test"`` (``nft_es_test``: the
best NFT epoch by *test* accuracy, as in the paper's reference code) is marked ``†`` wherever it
is listed, with a footnote that its test numbers are optimistic (:func:`selection_notes`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..data.splits import SPLITS
from ..files import atomic_write_text
from ..metrics import finite_or_none
from .group_evaluation import VERDICTS
from .plots import plot_constraint, plot_dense_vs_sparse, plot_eag, plot_multipliers
from .results import MethodResult, ResultsLike, RunResults
from .results_view import (
    comparison_split,
    constraint_names,
    dense_group_accuracy,
    group_count,
    infeasibility_note,
    is_feasible,
    max_eag_rows,
    method_label,
    min_group_size_of,
    present_groups,
    selection_notes,
    verdict_entries,
)

MISSING = "–"
"""Placeholder for a value that does not exist (en dash)."""

FEASIBLE = "✓"
INFEASIBLE = "✗"


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def fmt(value: Any, decimals: int = 4) -> str:
    """Format a number with ``decimals`` decimals; ``–`` when it does not exist."""
    x = finite_or_none(value)
    if x is None:
        return MISSING
    out = f"{x:.{decimals}f}"
    return out[1:] if out.startswith("-") and float(out) == 0.0 else out  # no "-0.0000"


def md_escape(text: Any) -> str:
    """Escape a cell for a markdown table (``|`` would split the cell, e.g. in ``White|Male``)."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: Sequence[str]) -> str:
    """Markdown table; ``align`` holds ``"l"``/``"r"``/``"c"`` per column."""
    marks = {"l": ":---", "r": "---:", "c": ":---:"}
    lines = [md_row([md_escape(h) for h in header]), md_row([marks[a] for a in align])]
    lines.extend(md_row(list(r)) for r in rows)
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# markdown tables
# --------------------------------------------------------------------------------------------


def format_method_table(metrics: ResultsLike) -> str:
    """Markdown table with one row per method.

    Columns: accuracy ``acc_s`` and ``max_g ψ[g]`` on each evaluated split
    (:attr:`~.results.RunResults.splits`), and ``feasible (train)`` = ✓ if ``max_eag_train ≤ ε``
    else ✗ (``–`` if either is missing).
    A method selected on the test split is marked ``†``.
    """
    results = RunResults.from_json(metrics)
    splits = results.splits
    header = ["method"]
    for split in splits:
        header += [f"{split} acc", f"{split} max EAG"]
    header.append("feasible (train)")
    rows = []
    for name, method in results.items():
        row = [md_escape(method_label(name, method))]
        for split in splits:
            s = method.split(split)
            row += [fmt(s.accuracy), fmt(s.max_eag)]
        ok = is_feasible(method.split("train").max_eag, results.tolerance)
        row.append(MISSING if ok is None else (FEASIBLE if ok else INFEASIBLE))
        rows.append(row)
    return md_table(header, rows, ["l"] + ["r"] * (2 * len(splits)) + ["c"])


def format_group_table(metrics: ResultsLike, split: str, group_names: Sequence[str]) -> str:
    """Markdown table of ``split`` with one row per group that has samples there.

    Columns: ``n``, dense accuracy ``acc_d[g]``, then per method its accuracy ``acc_s[g]`` and
    ``ψ[g] = (acc_d[g] − acc_s[g]) − (acc_d − acc_s)``. Groups with ``n = 0`` get no row; they are
    listed below the table instead.
    """
    results = RunResults.from_json(metrics)
    present, empty = present_groups(results, split, group_names)
    header = ["group", "n", "dense acc"]
    for name, method in results.items():
        label = method_label(name, method)
        header += [f"{label} acc", f"{label} EAG"]
    rows = []
    for g in present:
        n = group_count(results, split, g)
        row = [md_escape(g), MISSING if n is None else str(n), fmt(dense_group_accuracy(results, split, g))]
        for method in results.methods.values():
            cell = method.split(split).group(g)
            row += [fmt(cell.accuracy), fmt(cell.eag)]
        rows.append(row)
    table = md_table(header, rows, ["l"] + ["r"] * (len(header) - 1))
    if empty:
        listed = ", ".join(f"`{g}`" for g in empty)
        table += f"\n\nGroups without samples in {split} (omitted, {MISSING}): {listed}"
    return table


def _config_line(results: RunResults) -> str:
    tolerance, sparsity, wall = results.tolerance, results.sparsity, results.wall_seconds
    parts = [
        f"tolerance ε = {MISSING if tolerance is None else f'{tolerance:g}'}",
        f"sparsity = {MISSING if sparsity is None else f'{sparsity:g}'}",
        f"wall time = {MISSING if wall is None else f'{wall:.1f} s'}",
    ]
    return " · ".join(parts)


def _dense_line(results: RunResults) -> str | None:
    if results.dense is None:
        return None
    parts = [f"{split} {fmt(results.dense_split(split).accuracy)}" for split in results.splits]
    return "Dense model accuracy: " + " · ".join(parts)


def _epoch_line(results: RunResults) -> str | None:
    parts = [
        f"{md_escape(method_label(name, method))} {method.epoch}"
        for name, method in results.items()
        if method.epoch is not None
    ]
    return ("Fine-tuning epoch of the reported numbers: " + ", ".join(parts)) if parts else None


def format_max_eag_table(metrics: ResultsLike) -> str:
    """Per method and split: ``max_g ψ[g]`` with its group and size, over all groups and over
    the groups of at least ``min_group_size`` rows ("" when the run has no such maxima)."""
    results = RunResults.from_json(metrics)
    rows = max_eag_rows(results, fmt)
    if not rows:
        return ""
    size = min_group_size_of(results)
    header = [
        "method",
        "split",
        "max EAG (all groups)",
        f"max EAG (n ≥ {size})" if size else "max EAG (large groups)",
    ]
    return md_table(header, [[md_escape(c) for c in r] for r in rows], ["l", "l", "r", "r"])


VERDICT_HEADER = (
    "method",
    "split",
    "constraint",
    "satisfied",
    "violated",
    "uncertain",
    "too small",
    "violated groups",
)


def format_verdict_table(metrics: ResultsLike) -> str:
    """Counts of satisfied / violated / uncertain / too small groups per method, split and
    constraint, with the violated groups named ("" when the run has no verdicts)."""
    results = RunResults.from_json(metrics)
    rows = [
        [
            md_escape(method_label(method, results.methods.get(method))),
            split,
            md_escape(name),
            *[str(len(groups.get(k, []))) for k in VERDICTS],
            md_escape(", ".join(groups.get("violated", [])) or "–"),
        ]
        for method, split, name, groups in verdict_entries(results)
    ]
    if not rows:
        return ""
    return md_table(VERDICT_HEADER, rows, ["l", "l", "l", "r", "r", "r", "r", "l"])


def _splits_line(results: RunResults) -> str | None:
    """A note on the evaluated splits; ``None`` for the usual train/val/test."""
    splits = results.splits
    if splits == SPLITS:
        return None
    line = "Evaluated splits: " + ", ".join(splits)
    return line + (" (this run has no validation split)." if "val" not in splits else ".")


def format_report(metrics: ResultsLike, group_names: Sequence[str]) -> str:
    """The full ``report.md`` text (tables plus links to the plots under ``plots/``)."""
    results = RunResults.from_json(metrics)
    splits = results.splits
    lines = ["# Sparse model fairness report", "", _config_line(results), ""]
    for extra in (_splits_line(results), _dense_line(results), _epoch_line(results)):
        if extra:
            lines += [extra, ""]
    lines += [
        (
            "Accuracies and excess accuracy gaps (EAG) are fractions. For group g on a split, "
            "ψ[g] = (acc_d[g] − acc_s[g]) − (acc_d − acc_s); a method is feasible when "
            "max_g ψ[g] ≤ ε on train."
        ),
        "",
        "## Method comparison",
        "",
        format_method_table(results),
        "",
    ]
    notes = selection_notes(results)
    for note in notes:
        lines += [note, ""]
    for name, error in results.failed.items():
        lines += [f"**{md_escape(name)} failed** (no results): {md_escape(error)}", ""]
    for name, entry in (results.groups_below_buffer or {}).items():
        groups = ", ".join(f"`{md_escape(g)}` ({n} rows)" for g, n in entry["groups"].items())
        lines += [
            f"Left out of `{md_escape(name)}` (fewer training rows than its buffer of "
            f"{entry['buffer_size']}, so never an estimate): {groups}",
            "",
        ]
    for name, method in results.items():
        note = infeasibility_note(
            md_escape(name),
            method,
            results.tolerance,
            code=lambda g: f"`{md_escape(g)}`",
            strong=lambda s: f"**{s}**",
        )
        if note is not None:
            lines += [note, ""]
    where = format_max_eag_table(results)
    if where:
        lines += [
            "Where each max EAG is: the group and its size, over all groups and over the groups "
            "large enough for a verdict (a group of a few rows moves its EAG by whole points per sample).",
            "",
            where,
            "",
        ]
    for split in splits:
        lines += [
            f"## Per-group results ({split})",
            "",
            format_group_table(results, split, group_names),
            "",
            f"![EAG per group ({split})](plots/eag_{split}.png)",
            "",
        ]
    lines += [
        f"## Dense vs sparse accuracy per group ({comparison_split(results)})",
        "",
        "![Dense vs sparse accuracy](plots/dense_vs_sparse_accuracy.png)",
        "",
        "## Lagrange multipliers",
        "",
        "![Multipliers](plots/multipliers.png)",
        "",
    ]
    verdicts = format_verdict_table(results)
    if verdicts:
        lines += [
            "## Generalization verdicts",
            "",
            "Per group, with bootstrap intervals of the constrained statistic: satisfied when the "
            "interval's upper bound is ≤ ε, violated when its lower bound is > ε, uncertain otherwise; "
            "groups below `evaluation.min_group_size` get no verdict. See report.html for the groups.",
            "",
            verdicts,
            "",
        ]
    for name in constraint_names(results):
        lines += [
            f"## Constraint `{name}`",
            "",
            "Strict violations on each full split, net of the tolerance (≤ 0: satisfied); every method "
            "is evaluated against the constraint, the unconstrained ones included.",
            "",
            format_constraint_table(results, name),
            "",
            *[f"![{name} ({split})](plots/constraint_{name}_{split}.png)" for split in splits],
            "",
        ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# constraint tables
# --------------------------------------------------------------------------------------------


def format_constraint_table(metrics: ResultsLike, name: str) -> str:
    """Max strict violation (net of the tolerance; ≤ 0 is satisfied) per method and split."""
    results = RunResults.from_json(metrics)
    splits = results.splits
    header = ["method", *[f"{s} max violation" for s in splits], "satisfied (train)"]
    rows = []
    for label, method in results.items():
        if not method.constraints:
            continue
        values = [_max_violation(method, name, s) for s in splits]
        train = _max_violation(method, name, "train")
        ok = MISSING if train is None else (FEASIBLE if train <= 0 else INFEASIBLE)
        rows.append([md_escape(method_label(label, method)), *[fmt(v) for v in values], ok])
    return md_table(header, rows, ["l"] + ["r"] * len(splits) + ["c"])


def _max_violation(method: MethodResult, name: str, split: str) -> float | None:
    report = method.constraint(name, split)
    return None if report is None else report.max_violation


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------


def write_report(
    run_dir: str | Path, metrics: ResultsLike, history: Sequence[Mapping], group_names: Sequence[str]
) -> list[Path]:
    """Write ``report.md`` and the plots of a run; return the paths written.

    Files (each written atomically): ``plots/eag_<split>.png`` per evaluated split
    (:attr:`~.results.RunResults.splits`), ``plots/multipliers.png``, ``plots/dense_vs_sparse_accuracy.png``,
    ``plots/constraint_<name>_<split>.png`` per declared constraint and split, and ``report.md``
    (written last, so it only links to plots that exist; returned first).
    """
    results = RunResults.from_json(metrics)
    run_dir = Path(run_dir)
    plots = run_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    history = list(history or [])
    splits = results.splits
    written = [plot_eag(results, split, group_names, plots / f"eag_{split}.png") for split in splits]
    written.append(plot_multipliers(history, group_names, plots / "multipliers.png"))
    written.append(plot_dense_vs_sparse(results, group_names, plots / "dense_vs_sparse_accuracy.png"))
    for name in constraint_names(results):
        for split in splits:
            written.append(plot_constraint(results, name, split, plots / f"constraint_{name}_{split}.png"))
    report = atomic_write_text(run_dir / "report.md", format_report(results, group_names))
    return [report, *written]
