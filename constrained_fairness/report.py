"""Markdown report and plots of one run.

For one split, with dense accuracies ``acc_d[g], acc_d`` and sparse accuracies ``acc_s[g], acc_s``:

    Δ[g] = acc_d[g] − acc_s[g],   Δ = acc_d − acc_s,   ψ[g] = Δ[g] − Δ   (excess accuracy gap, EAG)

    max_eag = max_g ψ[g]  over groups with samples in the split,

and a method is *feasible* for the tolerance ε when ``max_eag ≤ ε`` (judged on the train split,
where the constraints are imposed).

:func:`write_report` writes ``report.md`` plus five PNG plots under ``plots/``. Every file is
written atomically (temporary file in the same folder, then :func:`os.replace`), so a crash
leaves either the previous file or the new one, never a half-written file.

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

import contextlib
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .group_report import VERDICTS

SPLITS: tuple[str, ...] = ("train", "val", "test")
"""The splits of a run that does not list its own (``metrics["splits"]`` absent), in order."""

TEST_SELECTED_MARK = "†"
"""Mark of a method selected on the test split (its test numbers are optimistic)."""

MISSING = "–"
"""Placeholder for a value that does not exist (en dash)."""

FEASIBLE = "✓"
INFEASIBLE = "✗"

_IGNORED_STAGES = frozenset({"dense", "gmp"})
_LEGEND_INSIDE_MAX = 10


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def _num(value: Any) -> float | None:
    """``float(value)``, or ``None`` for ``None``/NaN/non-numbers (a value that does not exist)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) else out


def fmt(value: Any, decimals: int = 4) -> str:
    """Format a number with ``decimals`` decimals; ``–`` when it does not exist."""
    x = _num(value)
    if x is None:
        return MISSING
    out = f"{x:.{decimals}f}"
    return out[1:] if out.startswith("-") and float(out) == 0.0 else out  # no "-0.0000"


def is_feasible(max_eag: Any, tolerance: Any) -> bool | None:
    """``max_eag ≤ ε``; ``None`` when either value is missing."""
    m, eps = _num(max_eag), _num(tolerance)
    if m is None or eps is None:
        return None
    return m <= eps


def _md_escape(text: Any) -> str:
    """Escape a cell for a markdown table (``|`` would split the cell, e.g. in ``White|Male``)."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: Sequence[str]) -> str:
    """Markdown table; ``align`` holds ``"l"``/``"r"``/``"c"`` per column."""
    marks = {"l": ":---", "r": "---:", "c": ":---:"}
    lines = [_md_row([_md_escape(h) for h in header]), _md_row([marks[a] for a in align])]
    lines.extend(_md_row(list(r)) for r in rows)
    return "\n".join(lines)


def splits_of(metrics: Mapping) -> tuple[str, ...]:
    """The evaluated splits of a run, in order: ``metrics["splits"]`` (e.g. ``("train", "test")``
    for a run without a validation split), or ``("train", "val", "test")`` when the key is absent
    (metrics files written before it existed)."""
    splits = metrics.get("splits")
    if splits is None:
        return SPLITS
    if isinstance(splits, (str, bytes)) or not isinstance(splits, Sequence):
        raise TypeError(f"metrics['splits'] must be a list of split names, got {splits!r}")
    out: list[str] = []
    for split in splits:
        if not isinstance(split, str) or not split:
            raise TypeError(f"metrics['splits'] must be a list of split names, got {splits!r}")
        if split not in out:
            out.append(split)
    return tuple(out)


def selected_on_test(entry: Any) -> bool:
    """Whether a method entry was selected on the test split (``"selected_on": "test"``)."""
    return isinstance(entry, Mapping) and entry.get("selected_on") == "test"


def method_label(name: Any, entry: Any) -> str:
    """``name``, followed by ``†`` when the method was selected on the test split."""
    return f"{name} {TEST_SELECTED_MARK}" if selected_on_test(entry) else str(name)


def selection_note(
    name: str,
    code: Callable[[str], str] = lambda s: f"`{s}`",
    em: Callable[[str], str] = lambda s: f"*{s}*",
) -> str:
    """The footnote of a method selected on test; ``code``/``em`` format the name and the
    emphasis (markdown by default)."""
    if name.startswith("nft_es"):
        what = f"the best NFT epoch by {em('test')} accuracy, as in the reference code"
    else:
        what = f"selected by {em('test')} accuracy"
    return f"{TEST_SELECTED_MARK} {code(name)}: {what}; its test numbers are optimistic (test-set leak)."


def methods_selected_on_test(metrics: Mapping) -> list[str]:
    """The methods of a run selected on the test split, in order."""
    return [name for name, entry in _methods(metrics).items() if selected_on_test(entry)]


def selection_notes(metrics: Mapping) -> list[str]:
    """One markdown footnote per method selected on the test split (none in a normal run)."""
    return [selection_note(name) for name in methods_selected_on_test(metrics)]


def _methods(metrics: Mapping) -> dict[str, Mapping]:
    methods = metrics.get("methods") or {}
    if not isinstance(methods, Mapping):
        raise TypeError(f"metrics['methods'] must map method names to results, got {type(methods)}")
    return {str(k): (v if isinstance(v, Mapping) else {}) for k, v in methods.items()}


def _split(entry: Mapping | None, split: str) -> Mapping:
    if not isinstance(entry, Mapping):
        return {}
    out = entry.get(split)
    return out if isinstance(out, Mapping) else {}


def _groups(split_entry: Mapping) -> Mapping:
    out = split_entry.get("groups")
    return out if isinstance(out, Mapping) else {}


def _group(split_entry: Mapping, group: str) -> Mapping:
    out = _groups(split_entry).get(group)
    return out if isinstance(out, Mapping) else {}


def _resolve_group_names(metrics: Mapping, group_names: Sequence[str]) -> list[str]:
    """``group_names``, followed by any group found in ``metrics`` but not listed there."""
    names = [str(g) for g in group_names]
    seen = set(names)
    sources = [metrics.get("dense"), *_methods(metrics).values()]
    for entry in sources:
        for split in splits_of(metrics):
            for g in _groups(_split(entry, split)):
                if str(g) not in seen:
                    seen.add(str(g))
                    names.append(str(g))
    return names


def group_count(metrics: Mapping, split: str, group: str) -> int | None:
    """Samples of ``group`` in ``split``: from the dense results, else the first method that has it."""
    sources = [metrics.get("dense"), *_methods(metrics).values()]
    for entry in sources:
        n = _num(_group(_split(entry, split), group).get("n"))
        if n is not None:
            return int(n)
    return None


def _dense_group_accuracy(metrics: Mapping, split: str, group: str) -> float | None:
    """``acc_d[g]``: from ``metrics['dense']``, else the ``dense_accuracy`` stored with a method."""
    acc = _num(_group(_split(metrics.get("dense"), split), group).get("accuracy"))
    if acc is not None:
        return acc
    for entry in _methods(metrics).values():
        acc = _num(_group(_split(entry, split), group).get("dense_accuracy"))
        if acc is not None:
            return acc
    return None


def present_groups(metrics: Mapping, split: str, group_names: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split the groups into ``(present, empty)`` for ``split``.

    A group is present when its count ``n > 0``; when no count is recorded anywhere, it is present
    iff some method reports a non-missing EAG for it.
    """
    present, empty = [], []
    for g in _resolve_group_names(metrics, group_names):
        n = group_count(metrics, split, g)
        if n is None:
            has_value = any(
                _num(_group(_split(e, split), g).get("eag")) is not None for e in _methods(metrics).values()
            )
            (present if has_value else empty).append(g)
        else:
            (present if n > 0 else empty).append(g)
    return present, empty


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
    for name, entry in _methods(metrics).items():
        row = [_md_escape(method_label(name, entry))]
        for split in splits:
            s = _split(entry, split)
            row += [fmt(s.get("accuracy")), fmt(s.get("max_eag"))]
        ok = is_feasible(_split(entry, "train").get("max_eag"), tolerance)
        row.append(MISSING if ok is None else (FEASIBLE if ok else INFEASIBLE))
        rows.append(row)
    return _md_table(header, rows, ["l"] + ["r"] * (2 * len(splits)) + ["c"])


def format_group_table(metrics: Mapping, split: str, group_names: Sequence[str]) -> str:
    """Markdown table of ``split`` with one row per group that has samples there.

    Columns: ``n``, dense accuracy ``acc_d[g]``, then per method its accuracy ``acc_s[g]`` and
    ``ψ[g] = (acc_d[g] − acc_s[g]) − (acc_d − acc_s)``. Groups with ``n = 0`` get no row; they are
    listed below the table instead.
    """
    methods = _methods(metrics)
    present, empty = present_groups(metrics, split, group_names)
    header = ["group", "n", "dense acc"]
    for name, entry in methods.items():
        label = method_label(name, entry)
        header += [f"{label} acc", f"{label} EAG"]
    rows = []
    for g in present:
        n = group_count(metrics, split, g)
        row = [_md_escape(g), MISSING if n is None else str(n), fmt(_dense_group_accuracy(metrics, split, g))]
        for entry in methods.values():
            cell = _group(_split(entry, split), g)
            row += [fmt(cell.get("accuracy")), fmt(cell.get("eag"))]
        rows.append(row)
    table = _md_table(header, rows, ["l"] + ["r"] * (len(header) - 1))
    if empty:
        listed = ", ".join(f"`{g}`" for g in empty)
        table += f"\n\nGroups without samples in {split} (omitted, {MISSING}): {listed}"
    return table


def _config_line(metrics: Mapping) -> str:
    eps = _num(metrics.get("tolerance"))
    sparsity = _num(metrics.get("sparsity"))
    wall = _num(metrics.get("wall_seconds"))
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
    parts = [f"{split} {fmt(_split(dense, split).get('accuracy'))}" for split in splits_of(metrics)]
    return "Dense model accuracy: " + " · ".join(parts)


def _epoch_line(metrics: Mapping) -> str | None:
    parts = [
        f"{_md_escape(method_label(name, entry))} {entry['epoch']}"
        for name, entry in _methods(metrics).items()
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


def verdict_entries(metrics: Mapping) -> list[tuple[str, str, str, Mapping[str, list[str]]]]:
    """``(method, split, constraint, groups by verdict)`` for every verdict of a run."""
    return [
        (method, split, name, verdict.get("groups", {}))
        for method, entry in _methods(metrics).items()
        for split in splits_of(metrics)
        for name, verdict in (_split(entry, split).get("verdicts") or {}).items()
    ]


def format_verdict_table(metrics: Mapping) -> str:
    """Counts of satisfied / violated / uncertain / too small groups per method, split and
    constraint, with the violated groups named ("" when the run has no verdicts)."""
    methods = _methods(metrics)
    rows = [
        [
            _md_escape(method_label(method, methods.get(method))),
            split,
            _md_escape(name),
            *[str(len(groups.get(k, []))) for k in VERDICTS],
            _md_escape(", ".join(groups.get("violated", [])) or "–"),
        ]
        for method, split, name, groups in verdict_entries(metrics)
    ]
    if not rows:
        return ""
    return _md_table(VERDICT_HEADER, rows, ["l", "l", "l", "r", "r", "r", "r", "l"])


def _splits_line(metrics: Mapping) -> str | None:
    """A note on the evaluated splits; ``None`` for the usual train/val/test."""
    splits = splits_of(metrics)
    if splits == SPLITS:
        return None
    line = "Evaluated splits: " + ", ".join(splits)
    return line + (" (this run has no validation split)." if "val" not in splits else ".")


def comparison_split(metrics: Mapping) -> str:
    """The split of the dense-vs-sparse plot: test, else the last evaluated split."""
    splits = splits_of(metrics)
    return "test" if "test" in splits or not splits else splits[-1]


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
# atomic writes
# --------------------------------------------------------------------------------------------


def _atomic_write(path: Path, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Call ``write(fileobj)`` on a temporary file next to ``path``, then ``os.replace`` it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0o600; a report is meant to be readable
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return _atomic_write(Path(path), lambda f: f.write(text), mode="w")


def _save_figure(fig: Any, path: Path) -> Path:
    """Save a matplotlib figure as PNG atomically and release it."""
    try:
        return _atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))
    finally:
        fig.clear()


def _new_figure(width: float, height: float) -> Any:
    """A figure bound to the Agg canvas, independent of pyplot's global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


# --------------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------------


def _grouped_bars(
    ax: Any, groups: Sequence[str], series: Sequence[tuple[str, Sequence[float | None]]]
) -> None:
    """Grouped bar chart: one cluster per group, one bar per series; missing values leave a gap."""
    import numpy as np

    x = np.arange(len(groups), dtype=float)
    k = max(len(series), 1)
    width = 0.8 / k
    for i, (label, values) in enumerate(series):
        pos = [x[j] - 0.4 + width * (i + 0.5) for j, v in enumerate(values) if v is not None]
        heights = [v for v in values if v is not None]
        ax.bar(pos, heights, width=width, label=label, color=f"C{i % 10}")
    ax.set_xticks(x)
    tilt = len(groups) > 4
    ax.set_xticklabels(list(groups), rotation=45 if tilt else 0, ha="right" if tilt else "center")
    ax.set_xlim(-0.6, max(len(groups), 1) - 0.4)


def _legend(ax: Any, n_entries: int) -> None:
    if n_entries > _LEGEND_INSIDE_MAX:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    else:
        ax.legend(loc="best", fontsize="small")


def _empty_message(fig: Any, message: str) -> None:
    ax = fig.add_subplot(1, 1, 1)
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=12, transform=ax.transAxes)
    ax.set_axis_off()


def plot_eag(metrics: Mapping, split: str, group_names: Sequence[str], path: str | Path) -> Path:
    """Bar chart of ``ψ[g]`` per group (one bar per method) with dashed lines at ε and 0."""
    methods = _methods(metrics)
    groups, _ = present_groups(metrics, split, group_names)
    fig = _new_figure(max(6.0, 0.6 * len(groups) * max(len(methods), 1) ** 0.5 + 2.0), 4.5)
    if not groups or not methods:
        _empty_message(fig, f"no EAG data for split {split!r}")
        return _save_figure(fig, Path(path))
    ax = fig.add_subplot(1, 1, 1)
    series = [
        (method_label(name, entry), [_num(_group(_split(entry, split), g).get("eag")) for g in groups])
        for name, entry in methods.items()
    ]
    _grouped_bars(ax, groups, series)
    eps = _num(metrics.get("tolerance"))
    if eps is not None:
        ax.axhline(eps, color="red", linestyle="--", linewidth=1.2, label=f"tolerance ε = {eps:g}")
    ax.axhline(0.0, color="black", linestyle="--", linewidth=0.8, label="0")
    ax.set_ylabel("excess accuracy gap ψ[g]")
    ax.set_xlabel("group")
    ax.set_title(f"EAG per group ({split})")
    ax.grid(axis="y", alpha=0.3)
    _legend(ax, len(methods) + 2)
    return _save_figure(fig, Path(path))


def constraint_names(metrics: Mapping) -> list[str]:
    """Names of the declared constraints reported in ``metrics`` (any method), in order."""
    names: list[str] = []
    for entry in _methods(metrics).values():
        for name in entry.get("constraints", {}) or {}:
            if name not in names:
                names.append(str(name))
    return names


def _constraint_split(entry: Mapping, name: str, split: str) -> Mapping:
    out = ((entry.get("constraints") or {}).get(name) or {}).get(split)
    return out if isinstance(out, Mapping) else {}


def format_constraint_table(metrics: Mapping, name: str) -> str:
    """Max strict violation (net of the tolerance; ≤ 0 is satisfied) per method and split."""
    methods = {m: e for m, e in _methods(metrics).items() if e.get("constraints")}
    splits = splits_of(metrics)
    header = ["method", *[f"{s} max violation" for s in splits], "satisfied (train)"]
    rows = []
    for method, entry in methods.items():
        values = [_num(_constraint_split(entry, name, s).get("max_violation")) for s in splits]
        train = _num(_constraint_split(entry, name, "train").get("max_violation"))
        ok = MISSING if train is None else (FEASIBLE if train <= 0 else INFEASIBLE)
        rows.append([_md_escape(method_label(method, entry)), *[fmt(v) for v in values], ok])
    return _md_table(header, rows, ["l"] + ["r"] * len(splits) + ["c"])


def plot_constraint(metrics: Mapping, name: str, split: str, path: str | Path) -> Path:
    """Strict violation per constraint row (one bar per method), net of the tolerance: the
    constraint holds where a bar is at or below 0."""
    methods = {m: e for m, e in _methods(metrics).items() if _constraint_split(e, name, split)}
    rows: list[str] = []
    for entry in methods.values():
        for row in _constraint_split(entry, name, split).get("violations", {}) or {}:
            if row not in rows:
                rows.append(str(row))
    fig = _new_figure(max(6.0, 0.5 * len(rows) + 2.0), 4.5)
    if not rows:
        _empty_message(fig, f"no violations of {name!r} on {split!r}")
        return _save_figure(fig, Path(path))
    ax = fig.add_subplot(1, 1, 1)
    series = [
        (
            method_label(m, e),
            [_num((_constraint_split(e, name, split).get("violations") or {}).get(r)) for r in rows],
        )
        for m, e in methods.items()
    ]
    _grouped_bars(ax, rows, series)
    ax.axhline(0.0, color="red", linestyle="--", linewidth=1.2, label="satisfied at or below")
    ax.set_ylabel("strict violation (net of tolerance)")
    ax.set_title(f"{name} per group ({split})")
    ax.grid(axis="y", alpha=0.3)
    _legend(ax, len(methods) + 1)
    return _save_figure(fig, Path(path))


def plot_dense_vs_sparse(
    metrics: Mapping, group_names: Sequence[str], path: str | Path, split: str | None = None
) -> Path:
    """Grouped bars of per-group accuracy: dense ``acc_d[g]`` next to each method's ``acc_s[g]``,
    on ``split`` (default: :func:`comparison_split`, i.e. test)."""
    split = comparison_split(metrics) if split is None else split
    methods = _methods(metrics)
    groups, _ = present_groups(metrics, split, group_names)
    fig = _new_figure(max(6.0, 0.6 * len(groups) * (len(methods) + 1) ** 0.5 + 2.0), 4.5)
    if not groups:
        _empty_message(fig, f"no per-group accuracy for split {split!r}")
        return _save_figure(fig, Path(path))
    ax = fig.add_subplot(1, 1, 1)
    series: list[tuple[str, list[float | None]]] = [
        ("dense", [_dense_group_accuracy(metrics, split, g) for g in groups])
    ]
    series += [
        (method_label(name, entry), [_num(_group(_split(entry, split), g).get("accuracy")) for g in groups])
        for name, entry in methods.items()
    ]
    _grouped_bars(ax, groups, series)
    values = [v for _, vs in series for v in vs if v is not None]
    if values:
        lo, hi = min(values), max(values)
        pad = max(0.05 * (hi - lo), 0.01)
        ax.set_ylim(max(0.0, lo - 4 * pad), min(1.0, hi + pad) if hi <= 1.0 else hi + pad)
    ax.set_ylabel("accuracy")
    ax.set_xlabel("group")
    ax.set_title(f"Dense vs sparse accuracy per group ({split})")
    ax.grid(axis="y", alpha=0.3)
    _legend(ax, len(series))
    return _save_figure(fig, Path(path))


Trace = tuple[list[float], list[list[float]]]
"""``(steps, values)``: multiplier vectors ``values[t]`` (one entry per group) at ``steps[t]``."""


def multiplier_traces(history: Sequence[Mapping]) -> dict[str, dict[str, Trace]]:
    """``{method: {constraint: (steps, values)}}`` from the history records with multipliers.

    Records of the dense model / GMP stages, without a ``step`` or with no (or empty) multipliers
    are skipped; ``values[t]`` is the multiplier vector (one entry per group) at ``steps[t]``,
    sorted by step.
    """
    raw: dict[str, dict[str, list[tuple[float, list[float]]]]] = {}
    for rec in history:
        if not isinstance(rec, Mapping):
            continue
        method = str(rec.get("method"))
        if method == "dense" or rec.get("stage") in _IGNORED_STAGES:
            continue
        mults = rec.get("multipliers")
        step = _num(rec.get("step"))
        if not isinstance(mults, Mapping) or not mults or step is None:
            continue
        for key, vec in mults.items():
            if vec is None:
                continue
            vals = [_num(v) for v in (vec if isinstance(vec, (list, tuple)) else [vec])]
            raw.setdefault(method, {}).setdefault(str(key), []).append(
                (step, [math.nan if v is None else v for v in vals])
            )
    out: dict[str, dict[str, Trace]] = {}
    for method, per_key in raw.items():
        for key, points in per_key.items():
            points.sort(key=lambda p: p[0])
            out.setdefault(method, {})[key] = ([p[0] for p in points], [p[1] for p in points])
    return out


def plot_multipliers(history: Sequence[Mapping], group_names: Sequence[str], path: str | Path) -> Path:
    """Multiplier ``λ[g]`` vs optimisation step: one panel per (method, constraint), one line per group."""
    traces = multiplier_traces(history)
    panels = [(m, k, t) for m, per_key in traces.items() for k, t in per_key.items()]
    if not panels:
        fig = _new_figure(6.0, 3.0)
        _empty_message(fig, "no constrained method in this run")
        return _save_figure(fig, Path(path))
    n_lines = max(len(v) for _, _, (_, values) in panels for v in values)
    outside = n_lines > _LEGEND_INSIDE_MAX
    fig = _new_figure(8.0 + (3.0 if outside else 0.0), 3.8 * len(panels))
    for i, (method, key, (steps, values)) in enumerate(panels):
        ax = fig.add_subplot(len(panels), 1, i + 1)
        width = max(len(v) for v in values)
        for g in range(width):
            ys = [v[g] if g < len(v) else math.nan for v in values]
            label = str(group_names[g]) if g < len(group_names) else f"group {g}"
            ax.plot(steps, ys, label=label, color=f"C{g % 10}", linestyle="-" if g < 10 else "--")
        ax.set_xlabel("step")
        ax.set_ylabel("multiplier λ[g]")
        ax.set_title(f"{method}: {key}" if key != method else method)
        ax.grid(alpha=0.3)
        _legend(ax, width)
    return _save_figure(fig, Path(path))


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
