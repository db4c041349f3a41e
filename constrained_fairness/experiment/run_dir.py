"""The run folder: a new one per run (never overwriting a finished one), or the one to resume,
checked to hold the same config."""

from __future__ import annotations

import warnings
from pathlib import Path

import yaml

from ..config import RESUME_NEUTRAL_KEYS, ExperimentConfig, flatten_config
from ..errors import CheckpointError, ConfigError


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
