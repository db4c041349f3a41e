"""The run folder: a new one per run (never overwriting a finished one), or the one to resume,
checked to hold the same config; and the checkpoints of its stages."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import yaml

from ..config import RESUME_NEUTRAL_KEYS, ExperimentConfig, config_hash, flatten_config
from ..errors import CheckpointError, ConfigError
from ..training.checkpoint import Checkpointer
from ..training.trainer import Trainer


def has_checkpoints(run_dir: Path) -> bool:
    return any((run_dir / "checkpoints").glob("*-e*-b*.pt"))


def prepare_run_dir(
    cfg: ExperimentConfig, output: str | Path | None, resume: bool | str
) -> tuple[Path, bool]:
    """The run folder, and whether to resume in it.

    ``resume=False``: a new folder (a started or finished run is never overwritten: a suffix
    ``-2``, ``-3``... is added). ``resume=True``: the folder must hold checkpoints.
    ``resume="auto"``: the folder itself, resumed if it holds checkpoints, else started there.
    """
    base = Path(output) if output is not None else Path(cfg.output_dir) / cfg.name
    if resume == "auto" and not has_checkpoints(base):
        return _make_run_dir(base), False
    if resume:
        if not has_checkpoints(base):
            raise FileNotFoundError(
                f"nothing to resume in {base}: it has no checkpoints; run without --resume, "
                "or with --resume auto"
            )
        return base, True
    run_dir, n = base, 1
    while (run_dir / "checkpoints").exists() or (run_dir / "metrics.json").exists():
        n += 1
        run_dir = base.with_name(f"{base.name}-{n}")
    return _make_run_dir(run_dir), False


def finished(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a finished run: a ``metrics.json`` with no ``pending`` method
    (the protocol writes the file after each method, and marks the ones still to come)."""
    path = run_dir / "metrics.json"
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(metrics, dict) and not metrics.get("pending")


def _make_run_dir(run_dir: Path) -> Path:
    try:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        probe = run_dir / "checkpoints" / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"cannot write the run folder {run_dir} ({exc.strerror}); choose a writable --output "
            "or output_dir"
        ) from None
    return run_dir


def check_same_config(path: Path, cfg: ExperimentConfig, force: bool = False) -> None:
    """Resuming with another config would mix two runs: name the first differing key
    (``force``: warn and go on)."""
    if not path.is_file():
        return
    try:
        saved = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        saved = {}
    old = flatten_config(saved if isinstance(saved, dict) else {})
    new = flatten_config(cfg.to_dict())
    for key in sorted(set(old) | set(new)):
        if key.startswith(RESUME_NEUTRAL_KEYS) or old.get(key) == new.get(key):
            continue
        message = f"config key '{key}' was {old.get(key)!r} in {path} and is now {new.get(key)!r}"
        if not force:
            raise CheckpointError(
                f"cannot resume: {message}; resume with the run's config, start a new run, or pass --force"
            )
        warnings.warn(f"resuming with a changed config because of --force: {message}", stacklevel=2)
        return


class StageCheckpoints:
    """Where each stage of a run checkpoints (rank 0 only under DDP), and the state a resumed
    stage continues from (every rank reads it)."""

    def __init__(self, folder: Path, cfg: ExperimentConfig, rank: int, resume: bool, force: bool) -> None:
        self.folder, self.rank, self.resume, self.force = folder, rank, resume, force
        self.keep_last, self.config_hash = cfg.checkpoint.keep_last, config_hash(cfg)

    def of(self, stage: str) -> Checkpointer:
        return Checkpointer(self.folder, stage, self.keep_last, self.config_hash)

    def save_to(self, stage: str) -> Checkpointer | None:
        """Where ``stage`` checkpoints: None on the ranks that write nothing."""
        return self.of(stage) if self.rank == 0 else None

    def resume_into(self, trainer: Trainer, stage: str) -> bool:
        """Load the newest valid checkpoint of ``stage`` into ``trainer`` when resuming."""
        state = self.of(stage).load_latest(self.force) if self.resume else None
        if state is not None:
            trainer.load_state_dict(state)
        return state is not None
