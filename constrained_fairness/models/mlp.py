"""A multi-layer perceptron for tabular data."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


class MLP(nn.Sequential):
    """``Linear → ReLU`` per hidden width, then a linear classifier with ``num_classes`` logits."""

    def __init__(self, input_dim: int, hidden: Sequence[int], num_classes: int) -> None:
        layers: list[nn.Module] = []
        width = input_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)
