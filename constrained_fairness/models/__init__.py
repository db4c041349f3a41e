"""Models and the factory that builds them from a config."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..errors import ConfigError
from .mlp import MLP

MODELS = ("mlp",)


def build_model(name: str, input_dim: int, num_classes: int, hidden: Sequence[int] = (128, 64)) -> nn.Module:
    """Build a model by name (``mlp``)."""
    if name == "mlp":
        return MLP(input_dim, hidden, num_classes)
    raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")


__all__ = ["MLP", "MODELS", "build_model"]
