"""Gradual magnitude pruning (GMP): the cubic schedule and unstructured magnitude masks.

Schedule (Zhu & Gupta, 2017), for pruning epochs ``t = 0..T``:

    s_t = s_f + (s_i − s_f) (1 − t/T)^3

Masks are explicit boolean tensors, one per pruned weight. :meth:`MagnitudePruner.apply`
multiplies the weights by their masks; the trainer calls it after every optimizer step,
so masks survive momentum and weight decay, and they are part of the checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from .config.choices import PRUNING_ROUNDINGS, PRUNING_SCHEDULES, PRUNING_SCOPES
from .errors import ConfigError

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def cubic_sparsity(epoch: int, total_epochs: int, final: float, initial: float = 0.0) -> float:
    """``s_t = s_f + (s_i − s_f)(1 − t/T)^3``, constant at ``s_f`` for ``t ≥ T``."""
    if total_epochs <= 0:
        return final
    t = min(max(epoch, 0), total_epochs)
    return final + (initial - final) * (1.0 - t / total_epochs) ** 3


def sparsity_schedule(schedule: str, epochs: int, final: float) -> Callable[[int], float]:
    """Sparse epoch ``e`` → its target :func:`cubic_sparsity`: ``one_ahead`` gives ``s(e + 1)``, so
    ``s_f`` from epoch ``T − 1``; ``reference`` (the paper code) gives ``s(e)``: epoch 0 dense and
    ``s_f`` from epoch ``T``."""
    if schedule not in PRUNING_SCHEDULES:
        raise ConfigError(f"pruning.schedule must be one_ahead or reference, got {schedule!r}")
    shift = 1 if schedule == "one_ahead" else 0
    return lambda e: cubic_sparsity(e + shift, epochs, final)


def branch_epoch(schedule: str, epochs: int, mitigate_while_pruning: bool) -> int:
    """The sparse epoch from which the methods (and their mitigation) run: the last pruning epoch,
    ``T − 1`` (``one_ahead``) or ``T`` (``reference``), or 0 with ``mitigate_while_pruning``."""
    if mitigate_while_pruning:
        return 0
    return epochs - 1 if schedule == "one_ahead" else epochs


def prunable_layers(
    model: nn.Module, dense_layers: Sequence[str] = ("first", "last")
) -> dict[str, nn.Module]:
    """Conv and linear layers in definition order, without those kept dense.

    ``dense_layers`` may contain ``"first"`` (the first conv/linear layer) and ``"last"``
    (the last one, usually the classifier).
    """
    unknown = set(dense_layers) - {"first", "last"}
    if unknown:
        raise ConfigError(f"pruning.dense_layers may hold 'first' and 'last', got {sorted(unknown)}")
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, PRUNABLE)]
    if "last" in dense_layers:
        layers = layers[:-1]
    if "first" in dense_layers:
        layers = layers[1:]
    return dict(layers)


class MagnitudePruner:
    """Unstructured magnitude pruning of the weights of the prunable layers.

    ``scope="layerwise"``: each layer keeps its ``round((1 − s) n_l)`` largest ``|w|``.
    ``scope="global"``: all prunable weights compete together for ``round((1 − s) Σ n_l)``.
    ``rounding="ceil_pruned"`` prunes ``⌈s n⌉`` weights instead (keeps ``n − ⌈s n⌉``), as the
    paper code does (``src/models/pruning.py``); the two differ by at most one weight per layer.
    """

    def __init__(
        self,
        model: nn.Module,
        scope: str = "layerwise",
        dense_layers: Sequence[str] = ("first", "last"),
        rounding: str = "nearest_kept",
    ) -> None:
        if scope not in PRUNING_SCOPES:
            raise ConfigError(f"pruning.scope must be 'layerwise' or 'global', got {scope!r}")
        if rounding not in PRUNING_ROUNDINGS:
            raise ConfigError(f"pruning.rounding must be nearest_kept or ceil_pruned, got {rounding!r}")
        self.scope = scope
        self.rounding = rounding
        self.layers = prunable_layers(model, dense_layers)
        if not self.layers:
            raise ConfigError(
                "the model has no prunable layer once the dense ones are excluded; "
                "use a deeper model or change pruning.dense_layers"
            )
        self.masks = {name: torch.ones_like(m.weight, dtype=torch.bool) for name, m in self.layers.items()}
        self.target = 0.0

    @torch.no_grad()
    def prune_to(self, sparsity: float) -> None:
        """Recompute the masks so that a fraction ``sparsity`` of the weights is zero."""
        if not 0.0 <= sparsity < 1.0:
            raise ConfigError(f"sparsity must lie in [0, 1), got {sparsity}")
        self.target = float(sparsity)
        weights = {name: m.weight.detach() * self.masks[name] for name, m in self.layers.items()}
        if self.scope == "layerwise":
            for name, w in weights.items():
                self.masks[name] = _top_magnitude_mask(w.flatten(), sparsity, self.rounding).view_as(w)
        else:
            flat = torch.cat([w.flatten() for w in weights.values()])
            keep = _top_magnitude_mask(flat, sparsity, self.rounding)
            sizes = [w.numel() for w in weights.values()]
            for name, part in zip(weights, torch.split(keep, sizes), strict=True):
                self.masks[name] = part.view_as(weights[name])
        self.apply()

    @torch.no_grad()
    def apply(self) -> None:
        """Zero the pruned weights (call after every optimizer step)."""
        for name, m in self.layers.items():
            m.weight.mul_(self.masks[name])

    def layer_sparsity(self) -> dict[str, float]:
        """Achieved fraction of zero weights per prunable layer."""
        return {name: float((m.weight == 0).float().mean()) for name, m in self.layers.items()}

    def overall_sparsity(self) -> float:
        zeros = sum(int((m.weight == 0).sum()) for m in self.layers.values())
        total = sum(m.weight.numel() for m in self.layers.values())
        return zeros / total

    def state_dict(self) -> dict:
        return {"masks": {k: v.clone() for k, v in self.masks.items()}, "target": self.target}

    def load_state_dict(self, state: dict) -> None:
        if set(state["masks"]) != set(self.masks):
            raise ValueError(
                f"mask layers {sorted(state['masks'])} do not match the model's {sorted(self.masks)}"
            )
        self.masks = {k: v.to(self.layers[k].weight.device).bool() for k, v in state["masks"].items()}
        self.target = float(state["target"])
        self.apply()


def kept_count(n: int, sparsity: float, rounding: str = "nearest_kept") -> int:
    """Weights kept of ``n`` at ``sparsity``: ``round((1 − s) n)``, or ``n − ⌈s n⌉`` (``ceil_pruned``)."""
    if rounding == "ceil_pruned":
        return n - math.ceil(sparsity * n)
    return round((1.0 - sparsity) * n)


def _top_magnitude_mask(
    values: torch.Tensor, sparsity: float, rounding: str = "nearest_kept"
) -> torch.Tensor:
    keep = kept_count(values.numel(), sparsity, rounding)
    mask = torch.zeros_like(values, dtype=torch.bool)
    if keep > 0:
        mask[torch.topk(values.abs(), keep, sorted=False).indices] = True
    return mask
