"""Checkpoints: written atomically, loaded with ``weights_only=True``.

A checkpoint holds only tensors and primitive types (dicts, lists, numbers, strings),
so ``torch.load(weights_only=True)`` can read it: no pickled code runs at load time.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from cooper.optim.torch_optimizers.nupi_optimizer import nuPIInitType

from ..errors import CheckpointError

# The nuPI dual optimizer keeps this enum in its param groups; allow it, and only it,
# besides tensors and primitive types.
torch.serialization.add_safe_globals([nuPIInitType])


def save_atomic(obj: Any, path: str | Path) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint safely; a missing or unreadable file is a one-line user error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}; check the path")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt files
        raise CheckpointError(
            f"cannot read checkpoint {path} ({type(exc).__name__}); it is corrupt or not a "
            "torch checkpoint, delete it or point to another file"
        ) from None


def load_model_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Load a dense model ``state_dict`` (or a checkpoint holding one under ``"model"``)."""
    state = load_checkpoint(path)
    if "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0]
        raise CheckpointError(
            f"checkpoint {path} does not match the model architecture ({detail}); "
            "use a checkpoint of the configured model"
        ) from None
