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
from .results_view import (
    comparison_split,
    constraint_split,
    dense_group_accuracy,
    group_of,
    method_label,
    methods_of,
    present_groups,
    split_of,
)

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
    methods = methods_of(metrics)
    groups, _ = present_groups(metrics, split, group_names)
    fig = new_figure(max(6.0, 0.6 * len(groups) * max(len(methods), 1) ** 0.5 + 2.0), 4.5)
    if not groups or not methods:
        _empty_message(fig, f"no EAG data for split {split!r}")
        return save_figure(fig, Path(path))
    ax = fig.add_subplot(1, 1, 1)
    series = [
        (
            method_label(name, entry),
            [finite_or_none(group_of(split_of(entry, split), g).get("eag")) for g in groups],
        )
        for name, entry in methods.items()
    ]
    _grouped_bars(ax, groups, series)
    eps = finite_or_none(metrics.get("tolerance"))
    if eps is not None:
        ax.axhline(eps, color="red", linestyle="--", linewidth=1.2, label=f"tolerance ε = {eps:g}")
    ax.axhline(0.0, color="black", linestyle="--", linewidth=0.8, label="0")
    ax.set_ylabel("excess accuracy gap ψ[g]")
    ax.set_xlabel("group")
    ax.set_title(f"EAG per group ({split})")
    ax.grid(axis="y", alpha=0.3)
    _legend(ax, len(methods) + 2)
    return save_figure(fig, Path(path))


def plot_constraint(metrics: Mapping, name: str, split: str, path: str | Path) -> Path:
    """Strict violation per constraint row (one bar per method), net of the tolerance: the
    constraint holds where a bar is at or below 0."""
    methods = {m: e for m, e in methods_of(metrics).items() if constraint_split(e, name, split)}
    rows: list[str] = []
    for entry in methods.values():
        for row in constraint_split(entry, name, split).get("violations", {}) or {}:
            if row not in rows:
                rows.append(str(row))
    fig = new_figure(max(6.0, 0.5 * len(rows) + 2.0), 4.5)
    if not rows:
        _empty_message(fig, f"no violations of {name!r} on {split!r}")
        return save_figure(fig, Path(path))
    ax = fig.add_subplot(1, 1, 1)
    series = [
        (
            method_label(m, e),
            [finite_or_none((constraint_split(e, name, split).get("violations") or {}).get(r)) for r in rows],
        )
        for m, e in methods.items()
    ]
    _grouped_bars(ax, rows, series)
    ax.axhline(0.0, color="red", linestyle="--", linewidth=1.2, label="satisfied at or below")
    ax.set_ylabel("strict violation (net of tolerance)")
    ax.set_title(f"{name} per group ({split})")
    ax.grid(axis="y", alpha=0.3)
    _legend(ax, len(methods) + 1)
    return save_figure(fig, Path(path))


def plot_dense_vs_sparse(
    metrics: Mapping, group_names: Sequence[str], path: str | Path, split: str | None = None
) -> Path:
    """Grouped bars of per-group accuracy: dense ``acc_d[g]`` next to each method's ``acc_s[g]``,
    on ``split`` (default: :func:`comparison_split`, i.e. test)."""
    split = comparison_split(metrics) if split is None else split
    methods = methods_of(metrics)
    groups, _ = present_groups(metrics, split, group_names)
    fig = new_figure(max(6.0, 0.6 * len(groups) * (len(methods) + 1) ** 0.5 + 2.0), 4.5)
    if not groups:
        _empty_message(fig, f"no per-group accuracy for split {split!r}")
        return save_figure(fig, Path(path))
    ax = fig.add_subplot(1, 1, 1)
    series: list[tuple[str, list[float | None]]] = [
        ("dense", [dense_group_accuracy(metrics, split, g) for g in groups])
    ]
    series += [
        (
            method_label(name, entry),
            [finite_or_none(group_of(split_of(entry, split), g).get("accuracy")) for g in groups],
        )
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


def plot_eag_intervals(metrics: Mapping, split: str, path: Path) -> Path:
    """Per-group EAG with its bootstrap interval (whiskers), one series per method, against ε."""
    import numpy as np

    fig = new_figure(9, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    methods = methods_of(metrics)
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
    return save_figure(fig, path)


def plot_accuracy_vs_violation(metrics: Mapping, path: Path) -> Path:
    """Test accuracy against test max EAG (with its interval) per method."""
    fig = new_figure(6, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    for i, (name, entry) in enumerate(methods_of(metrics).items()):
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
    return save_figure(fig, path)


def plot_train_vs_test(metrics: Mapping, path: Path) -> Path:
    """Each group's train EAG (x) against its test EAG (y), per method; the diagonal and ε."""
    fig = new_figure(6, 5)
    ax = fig.add_subplot(1, 1, 1)
    for i, (name, entry) in enumerate(methods_of(metrics).items()):
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
    return save_figure(fig, path)
