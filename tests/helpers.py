"""Shared test helpers: tiny synthetic data in the real CSV format, tiny configs, the CLI as a
subprocess, scripts loaded as modules, and the TensorBoard and wandb logs read back."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np


def write_synthetic_csv(path: Path, rows: int = 600, seed: int = 0) -> Path:
    """A CSV like a small census file: numeric and categorical features, two protected columns."""
    rng = np.random.default_rng(seed)
    color = rng.choice(["red", "green", "blue"], size=rows, p=[0.6, 0.3, 0.1])
    sex = rng.choice(["F", "M"], size=rows)
    x1 = rng.normal(size=rows)
    x2 = rng.normal(size=rows)
    job = rng.choice(["a", "b", "c", "d"], size=rows)
    score = x1 + 0.5 * x2 + (color == "blue") * 0.8 + rng.normal(scale=0.5, size=rows)
    label = np.where(score > 0.3, "yes", "no")
    lines = ["x1,x2,job,color,sex,label"]
    lines += [
        f"{a:.4f},{b:.4f},{j},{c},{s},{y}"
        for a, b, j, c, s, y in zip(x1, x2, job, color, sex, label, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def tiny_config(tmp_path: Path, csv: Path | None = None, **sections: str) -> Path:
    """A YAML config that runs the whole protocol in a few seconds."""
    csv = csv or write_synthetic_csv(tmp_path / "data.csv")
    text = f"""
name: tiny
seed: 0
output_dir: {tmp_path / "runs"}
data: {{name: csv, path: {csv}, target: label, positive_value: "yes", protected: [color, sex],
        categorical: [job, color, sex], val_fraction: 0.2, test_fraction: 0.2}}
model: {{name: mlp, hidden: [16, 16]}}
dense: {{epochs: 2, batch_size: 64}}
pruning: {{sparsity: 0.9, epochs: 2}}
finetune: {{epochs: 2, batch_size: 64}}
ceag: {{tolerance: 0.01, buffer_size: 8, dual: {{lr: 0.1}}}}
logging: {{wandb: disabled, tensorboard: false, progress: never}}
"""
    for key, value in sections.items():
        text += f"{key}: {value}\n"
    path = tmp_path / "tiny.yaml"
    path.write_text(text)
    return path


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series in one TensorBoard run folder, as TensorBoard shows it: ``(step,
    value)`` pairs in order, after its purge of events that a restart (``purge_step``) hid."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {
        tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]
    }


def wandb_history(run_dir: Path) -> list[dict[str, float]]:
    """The history rows of the offline wandb run under ``run_dir/wandb``, read from its
    ``run-*.wandb`` file: a LevelDB-format log (32 KiB blocks; each chunk has a 7-byte
    header: crc32c, little-endian length, type 1 full / 2 first / 3 middle / 4 last) of
    ``wandb_internal_pb2.Record`` protobufs, after a 7-byte ``:W&B`` file header."""
    import json
    import struct

    from wandb.proto import wandb_internal_pb2

    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    data, block, pos = path.read_bytes(), 32768, 7
    assert data[:4] == b":W&B"
    rows, chunks = [], []
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if left < 7 or (length == 0 and kind == 0):  # block trailer or zero padding
            pos += left
            continue
        chunks.append(data[pos + 7 : pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(chunks))
            chunks = []
            if record.WhichOneof("record_type") == "history":
                rows.append(
                    {
                        item.key or "/".join(item.nested_key): json.loads(item.value_json)
                        for item in record.history.item
                    }
                )
    return rows


def cfair(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m constrained_fairness *args`` in ``cwd`` (wandb disabled, 300 s limit);
    ``env`` adds to or overrides the environment."""
    return subprocess.run(
        [sys.executable, "-m", "constrained_fairness", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "WANDB_MODE": "disabled", **(env or {})},
        timeout=300,
    )


def load_script(path: Path) -> ModuleType:
    """A script (a benchmark, an example) imported as a module, so tests can call its ``main``."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_typed_round_trip(run_dir: Path) -> dict:
    """The run's ``metrics.json`` read into the typed tree and written back is byte-identical
    (every key the protocol writes is a field of the tree, in the order it is written)."""
    import json

    from constrained_fairness.reporting.results import RunResults

    text = (run_dir / "metrics.json").read_text()
    metrics = json.loads(text)
    assert json.dumps(RunResults.from_json(metrics).to_json(), indent=2, allow_nan=False) == text
    return metrics
