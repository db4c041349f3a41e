"""Aggregate runs over seeds into a paper-style table: mean ± std per method and sparsity.

For a metric ``x`` over seeds ``x_1..x_n``: mean ``x̄ = Σ x_i / n`` and sample standard
deviation ``s = sqrt(Σ (x_i − x̄)² / (n − 1))`` (0 for a single seed).

Only train and test are tabulated, so runs with and without a validation split
(``metrics["splits"]``, :attr:`~.results.RunResults.splits`) aggregate alike; a split a run did not
evaluate adds nothing to its cells. A method selected on the test split (``"selected_on":
"test"``, e.g. ``nft_es_test``) is marked ``†``, with a footnote below the table.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..files import atomic_write_text
from .results import RunResults
from .results_view import marked_label, methods_selected_on_test, selection_note

COLUMNS = (("train", "accuracy"), ("train", "max_eag"), ("test", "accuracy"), ("test", "max_eag"))


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def aggregate(
    runs: Sequence[RunResults | dict[str, Any]],
) -> dict[tuple[float, str], dict[str, tuple[float, float, int]]]:
    """``{(sparsity, method): {"train/accuracy": (mean, std, n), ...}}`` from the runs' results."""
    cells: dict[tuple[float, str], dict[str, list[float]]] = {}
    for results in map(RunResults.from_json, runs):
        if results.sparsity is None:
            raise DataError(
                "a run's metrics.json has no sparsity (not a cfair metrics file); remove that run"
            )
        for name, method in results.items():
            cell = cells.setdefault((float(results.sparsity), name), {})
            for split, key in COLUMNS:
                value = getattr(method.split(split), key)
                if value is not None:
                    cell.setdefault(f"{split}/{key}", []).append(float(value))
    return {k: {c: (*mean_std(v), len(v)) for c, v in cell.items()} for k, cell in cells.items()}


def format_table(
    table: dict[tuple[float, str], dict[str, tuple[float, float, int]]],
    marked: Sequence[str] = (),
) -> str:
    """The markdown table; the methods in ``marked`` (selected on the test split, see
    :func:`methods_selected_on_test`) are marked ``†`` and footnoted below the table."""
    header = "| sparsity | method | seeds | train acc | train max EAG | test acc | test max EAG |"
    lines = [header, "| ---: | :--- | ---: | ---: | ---: | ---: | ---: |"]
    for (sparsity, method), cell in sorted(table.items(), key=lambda kv: kv[0][0]):
        stats = [cell.get(f"{s}/{k}") for s, k in COLUMNS]
        n = max((s[2] for s in stats if s), default=0)
        shown = [f"{s[0]:.4f} ± {s[1]:.4f}" if s else "–" for s in stats]
        lines.append(
            f"| {sparsity:g} | {marked_label(method, method in marked)} | {n} | " + " | ".join(shown) + " |"
        )
    for method in marked:
        lines += ["", selection_note(method)]
    return "\n".join(lines)


def write_table(run_dirs: Sequence[Path], path: Path) -> str:
    """Read each run's ``metrics.json``, aggregate and write the markdown table to ``path``."""
    runs = [RunResults.from_json(json.loads((Path(d) / "metrics.json").read_text())) for d in run_dirs]
    text = format_table(aggregate(runs), methods_selected_on_test(runs)) + "\n"
    atomic_write_text(path, text)
    return text
