"""The files a finished run leaves in its folder, each written atomically: ``metrics.json``
(results only, so a resumed run's file is identical to an uninterrupted one's; while the run
goes on, it holds the finished methods and lists the others as ``pending``),
``timing.json`` (the wall time of this invocation), ``history.jsonl``, ``report.md`` with its
plots, and ``report.html``."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..files import atomic_write_json, atomic_write_text
from ..reporting.results import RunResults


def write_run_files(
    run_dir: Path,
    results: RunResults,
    history: Sequence[Mapping[str, Any]],
    group_names: Sequence[str],
    config: Mapping[str, Any],
    resumed: bool,
    start: float,
) -> RunResults:
    """Write the run's files; return ``results`` with this invocation's ``wall_seconds``
    (measured from ``start``, a :func:`time.perf_counter` value)."""
    atomic_write_json(run_dir / "metrics.json", results.to_json())
    results.wall_seconds = time.perf_counter() - start
    atomic_write_json(run_dir / "timing.json", {"wall_seconds": results.wall_seconds, "resumed": resumed})
    from ..reporting.html import write_html_report
    from ..reporting.markdown import write_report

    # history.jsonl was streamed during the run (for tailing it live); it is rewritten from the
    # checkpointed histories so that a resumed run has each epoch exactly once
    lines = "".join(json.dumps(record) + "\n" for record in history)
    atomic_write_text(run_dir / "history.jsonl", lines)
    write_report(run_dir, results, history, group_names)
    write_html_report(run_dir, results, config)
    return results


def write_partial_metrics(run_dir: Path, results: RunResults, pending: Sequence[str], world: int) -> None:
    """``metrics.json`` of a run still going: the finished methods, and ``pending``, the others
    (a crash keeps what is done; :func:`.run_dir.finished` tells a finished run from one still
    going, and the last write has no ``pending``)."""
    results.pending, results.world_size = list(pending), world
    atomic_write_json(run_dir / "metrics.json", results.to_json())
