"""The figures of a run's reports (matplotlib's Agg canvas, no pyplot state; each PNG written
atomically): per-group EAG and constraint bars, dense vs sparse accuracy, multiplier traces,
and the HTML report's interval, trade-off and train-vs-test plots."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..files import atomic_write
from ..metrics import finite_or_none
from .results import Interval, ResultsLike, RunResults
from .results_view import comparison_split, dense_group_accuracy, method_label, present_groups

_IGNORED_STAGES = frozenset({"dense", "gmp"})


_LEGEND_INSIDE_MAX = 10


def save_figure(fig: Any, path: Path) -> Path:
    """Save a matplotlib figure as PNG atomically and release it."""
    try:
        return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))
    finally:
        fig.clear()


def new_figure(width: float, height: float) -> Any:
    """A figure bound to the Agg canvas, independent of pyplot's global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


Bounds = tuple[float | None, float | None]
"""An interval ``(low, high)`` of a bar's value (either end may be missing)."""


def _grouped_bars(
    ax: Any,
    groups: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None]]],
    intervals: Sequence[Sequence[Bounds | None]] | None = None,
) -> None:
    """Grouped bar chart: one cluster per group, one bar per series; missing values leave a gap.
    With ``intervals`` (per series, per group), each bar gets whiskers from ``low`` to ``high``
    (clipped at the bar's value: an interval of a maximum may exclude its estimate)."""
    import numpy as np

    x = np.arange(len(groups), dtype=float)
    k = max(len(series), 1)
    width = 0.8 / k
    for i, (label, values) in enumerate(series):
        kept = [j for j, v in enumerate(values) if v is not None]
        pos = [x[j] - 0.4 + width * (i + 0.5) for j in kept]
        heights = [values[j] for j in kept]
        yerr = None
        if intervals is not None:
            bounds = [intervals[i][j] or (None, None) for j in kept]
            yerr = [
                [
                    max(0.0, v - (lo if lo is not None else v))
                    for v, (lo, _) in zip(heights, bounds, strict=True)
                ],
                [
                    max(0.0, (hi if hi is not None else v) - v)
                    for v, (_, hi) in zip(heights, bounds, strict=True)
                ],
            ]
        ax.bar(
            pos, heights, width=width, label=label, color=f"C{i % 10}", yerr=yerr, capsize=2 if yerr else 0
        )
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


def plot_eag(metrics: ResultsLike, split: str, group_names: Sequence[str], path: str | Path) -> Path:
    """Bar chart of ``ψ[g]`` per group (one bar per method) with dashed lines at ε and 0."""
    results = RunResults.from_json(metrics)
    methods = results.methods
    groups, _ = present_groups(results, split, group_names)
    fig = new_figure(max(6.0, 0.6 * len(groups) * max(len(methods), 1) ** 0.5 + 2.0), 4.5)
    if not groups or not methods:
        _empty_message(fig, f"no EAG data for split {split!r}")
        return save_figure(fig, Path(path))
    ax = fig.add_subplot(1, 1, 1)
    series = [
        (method_label(name, method), [method.split(split).group(g).eag for g in groups])
        for name, method in methods.items()
    ]
    _grouped_bars(ax, groups, series)
    tolerance = results.tolerance
    if tolerance is not None:
        ax.axhline(
            tolerance, color="red", linestyle="--", linewidth=1.2, label=f"tolerance ε = {tolerance:g}"
        )
    ax.axhline(0.0, color="black", linestyle="--", linewidth=0.8, label="0")
    ax.set_ylabel("excess accuracy gap ψ[g]")
    ax.set_xlabel("group")
    ax.set_title(f"EAG per group ({split})")
    ax.grid(axis="y", alpha=0.3)
    _legend(ax, len(methods) + 2)
    return save_figure(fig, Path(path))


def plot_constraint(metrics: ResultsLike, name: str, split: str, path: str | Path) -> Path:
    """Strict violation per constraint row (one bar per method), net of the tolerance: the
    constraint holds where a bar is at or below 0."""
    reports = {
        m: report
        for m, method in RunResults.from_json(metrics).items()
        if (report := method.constraint(name, split)) is not None
    }
    labels = {m: method_label(m, RunResults.from_json(metrics).methods[m]) for m in reports}
    rows: list[str] = []
    for report in reports.values():
        for row in report.violations:
            if row not in rows:
                rows.append(row)
    fig = new_figure(max(6.0, 0.5 * len(rows) + 2.0), 4.5)
    if not rows:
        _empty_message(fig, f"no violations of {name!r} on {split!r}")
        return save_figure(fig, Path(path))
    ax = fig.add_subplot(1, 1, 1)
    series = [(labels[m], [report.violations.get(r) for r in rows]) for m, report in reports.items()]
    _grouped_bars(ax, rows, series)
    ax.axhline(0.0, color="red", linestyle="--", linewidth=1.2, label="satisfied at or below")
    ax.set_ylabel("strict violation (net of tolerance)")
    ax.set_title(f"{name} per group ({split})")
    ax.grid(axis="y", alpha=0.3)
    _legend(ax, len(reports) + 1)
    return save_figure(fig, Path(path))


def plot_dense_vs_sparse(
    metrics: ResultsLike, group_names: Sequence[str], path: str | Path, split: str | None = None
) -> Path:
    """Grouped bars of per-group accuracy: dense ``acc_d[g]`` next to each method's ``acc_s[g]``,
    on ``split`` (default: :func:`comparison_split`, i.e. test)."""
    results = RunResults.from_json(metrics)
    split = comparison_split(results) if split is None else split
    methods = results.methods
    groups, _ = present_groups(results, split, group_names)
    fig = new_figure(max(6.0, 0.6 * len(groups) * (len(methods) + 1) ** 0.5 + 2.0), 4.5)
    if not groups:
        _empty_message(fig, f"no per-group accuracy for split {split!r}")
        return save_figure(fig, Path(path))
    ax = fig.add_subplot(1, 1, 1)
    series: list[tuple[str, list[float | None]]] = [
        ("dense", [dense_group_accuracy(results, split, g) for g in groups])
    ]
    series += [
        (method_label(name, method), [method.split(split).group(g).accuracy for g in groups])
        for name, method in methods.items()
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
    return save_figure(fig, Path(path))


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
        method = str(rec.get("stage", rec.get("method")))  # "method": history files before 2026-12-02
        if method in _IGNORED_STAGES:
            continue
        mults = rec.get("multipliers")
        step = finite_or_none(rec.get("step"))
        if not isinstance(mults, Mapping) or not mults or step is None:
            continue
        for key, vec in mults.items():
            if vec is None:
                continue
            vals = [finite_or_none(v) for v in (vec if isinstance(vec, (list, tuple)) else [vec])]
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
        fig = new_figure(6.0, 3.0)
        _empty_message(fig, "no constrained method in this run")
        return save_figure(fig, Path(path))
    n_lines = max(len(v) for _, _, (_, values) in panels for v in values)
    outside = n_lines > _LEGEND_INSIDE_MAX
    fig = new_figure(8.0 + (3.0 if outside else 0.0), 3.8 * len(panels))
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
    return save_figure(fig, Path(path))


def plot_eag_intervals(metrics: ResultsLike, split: str, path: Path) -> Path:
    """Per-group EAG with its bootstrap interval (whiskers), one series per method, against ε."""
    results = RunResults.from_json(metrics)
    fig = new_figure(9, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    groups = results.groups
    series, intervals = [], []
    for name, method in results.items():
        cells = [method.split(split).group(g) for g in groups]
        series.append((method_label(name, method), [c.eag for c in cells]))
        intervals.append([_bounds(c.interval("eag")) for c in cells])
    _grouped_bars(ax, groups, series, intervals)
    if results.tolerance is not None:
        ax.axhline(
            results.tolerance, color="k", linestyle="--", linewidth=1, label=f"ε = {results.tolerance:g}"
        )
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_ylabel("EAG ψ[g] (bootstrap interval)")
    ax.set_title(f"Excess accuracy gap per group with intervals ({split})")
    if results.methods:
        ax.legend(fontsize="small")
    return save_figure(fig, path)


def _bounds(interval: Interval | None) -> Bounds | None:
    return None if interval is None else (interval.low, interval.high)


def plot_accuracy_vs_violation(metrics: ResultsLike, path: Path) -> Path:
    """Test accuracy against test max EAG (with its interval) per method."""
    results = RunResults.from_json(metrics)
    fig = new_figure(6, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    for i, (name, method) in enumerate(results.items()):
        test = method.split("test")
        if test.max_eag is None or test.accuracy is None:
            continue
        ci, err = test.max_eag_ci, None
        if ci is not None and ci.complete:  # a percentile interval of a maximum may exclude the estimate
            err = [[max(0.0, test.max_eag - ci.low)], [max(0.0, ci.high - test.max_eag)]]
        ax.errorbar(
            test.max_eag,
            test.accuracy,
            xerr=err,
            fmt="o",
            color=f"C{i % 10}",
            label=method_label(name, method),
        )
    if results.tolerance is not None:
        ax.axvline(results.tolerance, color="k", linestyle="--", linewidth=1, label="ε")
    ax.set_xlabel("test max EAG")
    ax.set_ylabel("test accuracy")
    ax.set_title("Accuracy vs max EAG")
    ax.legend(fontsize="small")
    return save_figure(fig, path)


def plot_train_vs_test(metrics: ResultsLike, path: Path) -> Path:
    """Each group's train EAG (x) against its test EAG (y), per method; the diagonal and ε."""
    results = RunResults.from_json(metrics)
    fig = new_figure(6, 5)
    ax = fig.add_subplot(1, 1, 1)
    for i, (name, method) in enumerate(results.items()):
        train, test = method.split("train").groups, method.split("test").groups
        points = [
            (train[g].eag, test[g].eag)
            for g in train
            if g in test and train[g].eag is not None and test[g].eag is not None
        ]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.scatter(xs, ys, s=14, color=f"C{i % 10}", label=method_label(name, method))
    tolerance = results.tolerance
    if tolerance is not None:
        ax.axvline(tolerance, color="k", linestyle="--", linewidth=0.8)
        ax.axhline(tolerance, color="k", linestyle="--", linewidth=0.8, label="ε")
    low, high = ax.get_xlim()
    ax.plot([low, high], [low, high], color="grey", linewidth=0.8)
    ax.set_xlabel("train EAG")
    ax.set_ylabel("test EAG")
    ax.set_title("Does the constraint generalize? (per group)")
    ax.legend(fontsize="small")
    return save_figure(fig, path)
