"""Kill -9 and resume: a CLI run killed at random points (one of them halfway through a
checkpoint write, one followed by a truncated checkpoint) and continued each time with
``--resume auto`` ends bit-identical to an uninterrupted run."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from constrained_fairness.training import load_checkpoint

from ..helpers import tensorboard_scalars

pytestmark = pytest.mark.slow

SETTINGS = [
    "model.hidden=[32]",
    "dense.epochs=1",
    "dense.batch_size=512",
    "pruning.epochs=2",
    "finetune.epochs=2",
    "finetune.batch_size=512",
    "methods=[nft,ceag]",
    "checkpoint.every_steps=20",
    "checkpoint.keep_last=2",
    "logging.wandb=disabled",
    "logging.tensorboard=true",
    "logging.log_every=5",
    "logging.progress=never",
]


# Fault injection, in the child process only: torch.save writes half of each checkpoint,
# flushes, and pauses for a second before the rest, so a kill can land inside the write.
SLOW_SAVE = """
import io, time, torch
_save = torch.save
def _slow_save(obj, f, *args, **kwargs):
    buffer = io.BytesIO()
    _save(obj, buffer, *args, **kwargs)
    data = buffer.getvalue()
    f.write(data[: len(data) // 2])
    f.flush()
    time.sleep(1.0)
    f.write(data[len(data) // 2 :])
torch.save = _slow_save
"""


def command(out: Path, slow_save: bool = False) -> list[str]:
    main = "import sys; from constrained_fairness.cli import main; sys.exit(main())"
    args = [sys.executable, "-c", (SLOW_SAVE if slow_save else "") + main]
    return [*args, "run", *SETTINGS, "--output", str(out), "--resume", "auto", "--quiet"]


def checkpoint_files(out: Path) -> set[str]:
    return {p.name for p in (out / "checkpoints").glob("*-e*-b*.pt")}


def wait_for(predicate, process: subprocess.Popen, timeout: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.01)
    raise AssertionError("the run made no progress")


def final_states(out: Path) -> dict[str, dict]:
    return {stage: load_checkpoint(out / "checkpoints" / f"{stage}.pt") for stage in ("nft", "ceag")}


def test_kill_9_at_random_points_and_resume_auto_is_bit_identical(tmp_path):
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    straight = tmp_path / "straight"
    subprocess.run(command(straight), check=True, env=env, capture_output=True)

    out = tmp_path / "killed"
    rng = random.Random(7)
    kills = 0
    torn_write = fell_back = False
    truncated = ""
    for round_ in range(12):
        process = subprocess.Popen(
            command(out, slow_save=round_ == 2),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        if round_ == 2:  # kill halfway through writing a checkpoint
            alive = wait_for(lambda: any((out / "checkpoints").glob(".*.tmp")), process)
        else:  # kill after the next new checkpoint, plus a random moment
            before = checkpoint_files(out)
            alive = wait_for(lambda before=before: checkpoint_files(out) - before, process)
            time.sleep(rng.uniform(0.0, 0.4))
        if not alive or process.poll() is not None:
            break
        process.send_signal(signal.SIGKILL)
        _, err = process.communicate()
        kills += 1
        if truncated and round_ == 4:  # the resume after the truncation named the file and fell back
            fell_back = truncated in err and "falling back" in err
        if round_ == 2:
            torn_write = any((out / "checkpoints").glob(".*.tmp"))  # the torn file, never renamed
        if round_ == 3:  # a checkpoint damaged outside our writer: the newest is cut short
            newest = max((out / "checkpoints").glob("*-e*-b*.pt"), key=lambda p: p.name)
            newest.write_bytes(newest.read_bytes()[:64])
            truncated = newest.name
        if kills >= 5:
            break
    final = subprocess.run(command(out), env=env, capture_output=True, text=True)
    assert final.returncode == 0, final.stderr
    assert kills >= 5 and torn_write and fell_back
    assert (straight / "metrics.json").read_bytes() == (out / "metrics.json").read_bytes()
    # TensorBoard shows the killed run's curves as the uninterrupted run's: every step once
    # (what a killed attempt logged after its checkpoint is purged), nothing lost at a kill
    stages = sorted(p.name for p in (straight / "tensorboard").iterdir())
    assert stages == sorted(p.name for p in (out / "tensorboard").iterdir())
    assert {"dense", "gmp", "nft", "ceag"} <= set(stages)
    for stage in stages:
        shown = tensorboard_scalars(out / "tensorboard" / stage)
        assert shown == tensorboard_scalars(straight / "tensorboard" / stage), stage
        if stage in ("dense", "nft", "ceag"):  # gmp branches off at once: it trains no step
            assert len(shown[f"{stage}/step/loss"]) > 5 and shown[f"{stage}/train_loss"], stage
    a, b = final_states(straight), final_states(out)
    for stage in a:
        for key, value in a[stage]["model"].items():
            assert torch.equal(value, b[stage]["model"][key]), (stage, key)
        assert a[stage]["problem"]["cmp"].keys() == b[stage]["problem"]["cmp"].keys()
        for name, state in a[stage]["problem"]["cmp"].items():
            other = b[stage]["problem"]["cmp"][name]
            for k, v in state.items():
                if isinstance(v, torch.Tensor):
                    assert torch.equal(v, other[k]), (stage, name, k)
