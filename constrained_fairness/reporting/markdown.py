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

**Splits.** A run evaluates the splits listed in ``metrics["splits"]`` (:func:`splits_of`; a
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
from .results_view import (
    comparison_split,
    constraint_names,
    constraint_split,
    dense_group_accuracy,
    group_count,
    group_of,
    is_feasible,
    method_label,
    methods_of,
    present_groups,
    selection_notes,
    split_of,
    splits_of,
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


def format_method_table(metrics: Mapping) -> str:
    """Markdown table with one row per method.

    Columns: accuracy ``acc_s`` and ``max_g ψ[g]`` on each evaluated split (:func:`splits_of`),
    and ``feasible (train)`` = ✓ if ``max_eag_train ≤ ε`` else ✗ (``–`` if either is missing).
    A method selected on the test split is marked ``†``.
    """
    tolerance = metrics.get("tolerance")
    splits = splits_of(metrics)
    header = ["method"]
    for split in splits:
        header += [f"{split} acc", f"{split} max EAG"]
    header.append("feasible (train)")
    rows = []
    for name, entry in methods_of(metrics).items():
        row = [md_escape(method_label(name, entry))]
        for split in splits:
            s = split_of(entry, split)
            row += [fmt(s.get("accuracy")), fmt(s.get("max_eag"))]
        ok = is_feasible(split_of(entry, "train").get("max_eag"), tolerance)
        row.append(MISSING if ok is None else (FEASIBLE if ok else INFEASIBLE))
        rows.append(row)
    return md_table(header, rows, ["l"] + ["r"] * (2 * len(splits)) + ["c"])


def format_group_table(metrics: Mapping, split: str, group_names: Sequence[str]) -> str:
    """Markdown table of ``split`` with one row per group that has samples there.

    Columns: ``n``, dense accuracy ``acc_d[g]``, then per method its accuracy ``acc_s[g]`` and
    ``ψ[g] = (acc_d[g] − acc_s[g]) − (acc_d − acc_s)``. Groups with ``n = 0`` get no row; they are
    listed below the table instead.
    """
    methods = methods_of(metrics)
    present, empty = present_groups(metrics, split, group_names)
    header = ["group", "n", "dense acc"]
    for name, entry in methods.items():
        label = method_label(name, entry)
        header += [f"{label} acc", f"{label} EAG"]
    rows = []
    for g in present:
        n = group_count(metrics, split, g)
        row = [md_escape(g), MISSING if n is None else str(n), fmt(dense_group_accuracy(metrics, split, g))]
        for entry in methods.values():
            cell = group_of(split_of(entry, split), g)
            row += [fmt(cell.get("accuracy")), fmt(cell.get("eag"))]
        rows.append(row)
    table = md_table(header, rows, ["l"] + ["r"] * (len(header) - 1))
    if empty:
        listed = ", ".join(f"`{g}`" for g in empty)
        table += f"\n\nGroups without samples in {split} (omitted, {MISSING}): {listed}"
    return table


def _config_line(metrics: Mapping) -> str:
    eps = finite_or_none(metrics.get("tolerance"))
    sparsity = finite_or_none(metrics.get("sparsity"))
    wall = finite_or_none(metrics.get("wall_seconds"))
    parts = [
        f"tolerance ε = {MISSING if eps is None else f'{eps:g}'}",
        f"sparsity = {MISSING if sparsity is None else f'{sparsity:g}'}",
        f"wall time = {MISSING if wall is None else f'{wall:.1f} s'}",
    ]
    return " · ".join(parts)


def _dense_line(metrics: Mapping) -> str | None:
    dense = metrics.get("dense")
    if not isinstance(dense, Mapping):
        return None
    parts = [f"{split} {fmt(split_of(dense, split).get('accuracy'))}" for split in splits_of(metrics)]
    return "Dense model accuracy: " + " · ".join(parts)


def _epoch_line(metrics: Mapping) -> str | None:
    parts = [
        f"{md_escape(method_label(name, entry))} {entry['epoch']}"
        for name, entry in methods_of(metrics).items()
        if entry.get("epoch") is not None
    ]
    return ("Fine-tuning epoch of the reported numbers: " + ", ".join(parts)) if parts else None


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


def format_verdict_table(metrics: Mapping) -> str:
    """Counts of satisfied / violated / uncertain / too small groups per method, split and
    constraint, with the violated groups named ("" when the run has no verdicts)."""
    methods = methods_of(metrics)
    rows = [
        [
            md_escape(method_label(method, methods.get(method))),
            split,
            md_escape(name),
            *[str(len(groups.get(k, []))) for k in VERDICTS],
            md_escape(", ".join(groups.get("violated", [])) or "–"),
        ]
        for method, split, name, groups in verdict_entries(metrics)
    ]
    if not rows:
        return ""
    return md_table(VERDICT_HEADER, rows, ["l", "l", "l", "r", "r", "r", "r", "l"])


def _splits_line(metrics: Mapping) -> str | None:
    """A note on the evaluated splits; ``None`` for the usual train/val/test."""
    splits = splits_of(metrics)
    if splits == SPLITS:
        return None
    line = "Evaluated splits: " + ", ".join(splits)
    return line + (" (this run has no validation split)." if "val" not in splits else ".")


def format_report(metrics: Mapping, group_names: Sequence[str]) -> str:
    """The full ``report.md`` text (tables plus links to the plots under ``plots/``)."""
    splits = splits_of(metrics)
    lines = ["# Sparse model fairness report", "", _config_line(metrics), ""]
    for extra in (_splits_line(metrics), _dense_line(metrics), _epoch_line(metrics)):
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
        format_method_table(metrics),
        "",
    ]
    notes = selection_notes(metrics)
    for note in notes:
        lines += [note, ""]
    for split in splits:
        lines += [
            f"## Per-group results ({split})",
            "",
            format_group_table(metrics, split, group_names),
            "",
            f"![EAG per group ({split})](plots/eag_{split}.png)",
            "",
        ]
    lines += [
        f"## Dense vs sparse accuracy per group ({comparison_split(metrics)})",
        "",
        "![Dense vs sparse accuracy](plots/dense_vs_sparse_accuracy.png)",
        "",
        "## Lagrange multipliers",
        "",
        "![Multipliers](plots/multipliers.png)",
        "",
    ]
    verdicts = format_verdict_table(metrics)
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
    for name in constraint_names(metrics):
        lines += [
            f"## Constraint `{name}`",
            "",
            "Strict violations on each full split, net of the tolerance (≤ 0: satisfied); every method "
            "is evaluated against the constraint, the unconstrained ones included.",
            "",
            format_constraint_table(metrics, name),
            "",
            *[f"![{name} ({split})](plots/constraint_{name}_{split}.png)" for split in splits],
            "",
        ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# constraint tables
# --------------------------------------------------------------------------------------------


def format_constraint_table(metrics: Mapping, name: str) -> str:
    """Max strict violation (net of the tolerance; ≤ 0 is satisfied) per method and split."""
    methods = {m: e for m, e in methods_of(metrics).items() if e.get("constraints")}
    splits = splits_of(metrics)
    header = ["method", *[f"{s} max violation" for s in splits], "satisfied (train)"]
    rows = []
    for method, entry in methods.items():
        values = [finite_or_none(constraint_split(entry, name, s).get("max_violation")) for s in splits]
        train = finite_or_none(constraint_split(entry, name, "train").get("max_violation"))
        ok = MISSING if train is None else (FEASIBLE if train <= 0 else INFEASIBLE)
        rows.append([md_escape(method_label(method, entry)), *[fmt(v) for v in values], ok])
    return md_table(header, rows, ["l"] + ["r"] * len(splits) + ["c"])


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------


def write_report(
    run_dir: str | Path, metrics: Mapping, history: Sequence[Mapping], group_names: Sequence[str]
) -> list[Path]:
    """Write ``report.md`` and the plots of a run; return the paths written.

    Files (each written atomically): ``plots/eag_<split>.png`` per evaluated split
    (:func:`splits_of`), ``plots/multipliers.png``, ``plots/dense_vs_sparse_accuracy.png``,
    ``plots/constraint_<name>_<split>.png`` per declared constraint and split, and ``report.md``
    (written last, so it only links to plots that exist; returned first).
    """
    if not isinstance(metrics, Mapping):
        raise TypeError(f"metrics must be a mapping (the content of metrics.json), got {type(metrics)}")
    run_dir = Path(run_dir)
    plots = run_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    history = list(history or [])
    splits = splits_of(metrics)
    written = [plot_eag(metrics, split, group_names, plots / f"eag_{split}.png") for split in splits]
    written.append(plot_multipliers(history, group_names, plots / "multipliers.png"))
    written.append(plot_dense_vs_sparse(metrics, group_names, plots / "dense_vs_sparse_accuracy.png"))
    for name in constraint_names(metrics):
        for split in splits:
            written.append(plot_constraint(metrics, name, split, plots / f"constraint_{name}_{split}.png"))
    report = atomic_write_text(run_dir / "report.md", format_report(metrics, group_names))
    return [report, *written]
