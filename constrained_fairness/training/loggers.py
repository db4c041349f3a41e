"""Run logging: JSONL (always), TensorBoard and wandb (offline unless configured).

Logging never blocks or fails a run: a backend that cannot start is reported once as a
warning and disabled. wandb runs offline unless ``logging.wandb: online``; it writes
into the run folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
import uuid
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def flatten(record: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Nested dict of numbers → ``{"a/b/c": value}`` (lists become ``a/b/0``, ``a/b/1``, ...)."""
    out: dict[str, float] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}/"))
        elif isinstance(value, (list, tuple)):
            out.update(flatten(dict(enumerate(value)), f"{name}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


class RunLogger:
    """Sends scalars to TensorBoard and wandb, and epoch records to ``history.jsonl``."""

    def __init__(
        self,
        run_dir: Path,
        config: dict,
        wandb_mode: str = "offline",
        tensorboard: bool = True,
        resume: bool = False,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.history_path = self.run_dir / "history.jsonl"
        self._tensorboard = tensorboard
        self._tb: Any = None  # the current stage's SummaryWriter, opened on first use
        self._wandb = None
        self._wandb_defined: set[str] = set()  # stages whose wandb x-axis is defined
        if wandb_mode == "offline" and os.environ.get("WANDB_SWEEP_ID"):
            wandb_mode = "online"  # a run launched by `wandb agent` reports to its sweep
        if wandb_mode != "disabled":
            self._wandb = _start_wandb(self.run_dir, config, wandb_mode, resume)

    def begin_stage(self, stage: str, step: int) -> None:
        """Send TensorBoard events to ``tensorboard/<stage>/`` from here on, starting at a
        state whose events up to ``step`` are already logged (a fresh stage or a checkpoint).

        The writer opens with ``purge_step = step + 1``: events of an earlier, killed attempt
        of this stage logged after that state are hidden by TensorBoard, so a resumed run shows
        each step once. One folder per stage keeps the purge away from other stages' step axes.
        """
        self._open_tensorboard(self.run_dir / "tensorboard" / stage, purge_step=step + 1)

    def _open_tensorboard(self, folder: Path, purge_step: int | None = None) -> None:
        if not self._tensorboard:
            return
        if self._tb is not None:
            self._tb.close()
        _wait_for_a_later_second(folder)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(folder), purge_step=purge_step)
        except Exception as exc:  # pragma: no cover - depends on the environment
            warnings.warn(f"TensorBoard logging disabled: {exc}", stacklevel=2)
            self._tensorboard, self._tb = False, None

    def flush(self) -> None:
        """Put everything logged so far on disk (before a checkpoint: a run killed after it
        resumes from there, so nothing logged before it may be lost)."""
        if self._tb is not None:
            self._tb.flush()

    def log_scalars(self, scalars: Mapping[str, Any], step: int) -> None:
        flat = flatten(scalars)
        if self._tb is None and self._tensorboard:  # no stage begun: one writer for the run
            self._open_tensorboard(self.run_dir / "tensorboard")
        if self._tb is not None:
            for name, value in flat.items():
                self._tb.add_scalar(name, value, step)
        if self._wandb is not None:
            try:
                self._wandb.log({**flat, **self._wandb_axes(flat, step)})
            except Exception as exc:  # pragma: no cover
                warnings.warn(f"wandb logging disabled: {exc}", stacklevel=2)
                self._wandb = None

    def _wandb_axes(self, flat: Mapping[str, float], step: int) -> dict[str, int]:
        """``{"<stage>/global_step": step}`` for each stage (first name segment) in ``flat``.

        Stages have their own step axes (every method restarts at the pruning stage's last
        step), and wandb drops any ``log(..., step=s)`` with ``s`` below the largest step seen:
        it would keep only the first method. So each stage's metrics get their own x-axis
        (``define_metric(stage + "/*", step_metric=stage + "/global_step")``) and wandb's own
        ``_step`` just counts the calls."""
        axes = {name.split("/", 1)[0] for name in flat}
        for axis in sorted(axes - self._wandb_defined):
            self._wandb.define_metric(f"{axis}/global_step", hidden=True)
            self._wandb.define_metric(f"{axis}/*", step_metric=f"{axis}/global_step")
            self._wandb_defined.add(axis)
        return {f"{axis}/global_step": step for axis in axes}

    def log_record(self, record: Mapping[str, Any]) -> None:
        """Append one epoch record to ``history.jsonl`` and log its scalars."""
        with self.history_path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        tag = record["stage"]
        self.log_scalars({tag: {k: v for k, v in record.items() if k != "stage"}}, record["step"])

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            with contextlib.suppress(Exception):
                self._wandb.finish(quiet=True)


_EVENT_FILE = re.compile(r"^events\.out\.tfevents\.(\d+)\.")


def _wait_for_a_later_second(folder: Path) -> None:
    """Sleep until the clock's second is past that of every event file in ``folder``.

    TensorBoard reads a folder's event files in name order, and a name is
    ``events.out.tfevents.<second>.<host>.<pid>.<counter>``: two files opened in the same
    second sort by pid and by the counter as text (``10`` before ``9``), which can replay an
    earlier attempt, and its purge, after a later one. A strictly later second keeps name order
    chronological; it waits for the next second only when one folder gets two writers within a second.
    """
    seconds = [int(m[1]) for p in folder.glob("events.out.tfevents.*") if (m := _EVENT_FILE.match(p.name))]
    if seconds:
        delay = max(seconds) + 1 - time.time()
        if delay > 0:
            time.sleep(delay)


def _start_wandb(run_dir: Path, config: dict, mode: str, resume: bool = False) -> Any:
    """A wandb run; its id is kept in ``run_dir/wandb_run_id`` so that a resumed run
    continues the same wandb run (and its step axis) instead of starting another."""
    try:
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        id_file = run_dir / "wandb_run_id"
        run_id = id_file.read_text().strip() if resume and id_file.is_file() else uuid.uuid4().hex[:12]
        id_file.write_text(run_id)
        return wandb.init(
            project="constrained_fairness",
            name=config.get("name"),
            config=config,
            dir=str(run_dir),
            mode=mode,
            id=run_id,
            resume="allow",
            reinit="finish_previous",
            settings=wandb.Settings(console="off", init_timeout=30, x_disable_stats=True),
        )
    except Exception as exc:
        warnings.warn(f"wandb logging disabled ({type(exc).__name__}: {exc})", stacklevel=2)
        return None
