"""The config hash that ties checkpoints to their run, and the keys a resume may change."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .schema import ExperimentConfig

# Keys that may change when a run is resumed: where and how it logs and checkpoints.
RESUME_NEUTRAL_KEYS = ("logging.", "output_dir", "checkpoint.", "guards.multiplier_warning")


def flatten_config(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten_config(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_hash(config: ExperimentConfig) -> str:
    """SHA-256 of the keys that determine the results (all but :data:`RESUME_NEUTRAL_KEYS`)."""
    flat = flatten_config(config.to_dict())
    kept = {k: v for k, v in flat.items() if not k.startswith(RESUME_NEUTRAL_KEYS)}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()
