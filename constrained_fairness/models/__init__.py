"""Models and the factory that builds them from a config.

Names accepted by :func:`build_model` (see :data:`BUILTIN_MODELS`):

* ``mlp``: :class:`MLP` for tabular data (needs ``input_dim``; ``hidden`` gives the layer widths);
* ``resnet56``: the CIFAR ResNet-56 of He et al. (2016), :class:`CifarResNet` with projection shortcuts
  (``downsample`` = 1x1 conv + BN): the layout of chenyaofo's public ``cifar100_resnet56-f2eff4c8.pt``,
  which loads into it unchanged (``width`` scales its channels);
* ``resnet56_option_a``: the same network with the paper's option-A shortcuts (parameter-free zero
  padding, :class:`PadShortcut`);
* ``mobilenet_v2``: torchvision's MobileNetV2 (``width_mult=width``);
* ``resnet18``, ``resnet34``: torchvision's ImageNet ResNets (``width`` must be 1.0).

The image models take 3-channel inputs of any size from 8x8 up; they ignore ``input_dim`` and
``hidden``. Weights are always randomly initialised; nothing is ever downloaded. Published dense
checkpoints (see :mod:`constrained_fairness.models.published`) are loaded afterwards through
``model.checkpoint``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import MODELS
from .mlp import MLP

if TYPE_CHECKING:
    from ..config import ModelConfig

from .resnet_cifar import CifarResNet, PadShortcut, check_classes_and_width, resnet56

BUILTIN_MODELS = ("mlp", "resnet56", "resnet56_option_a", "mobilenet_v2", "resnet18", "resnet34")


def build_model(
    name: str,
    input_dim: int | None = None,
    num_classes: int = 2,
    hidden: Sequence[int] = (128, 64),
    *,
    width: float = 1.0,
    pretrained: bool = False,
) -> nn.Module:
    """Build a randomly initialised model by name (one of :data:`BUILTIN_MODELS`).

    ``width`` scales the channels of ``resnet56``, ``resnet56_option_a`` and ``mobilenet_v2``; it must
    be 1.0 for the other models. ``pretrained=True`` is refused: load a dense checkpoint (ours or a
    published one) via ``model.checkpoint``.
    """
    if name not in BUILTIN_MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(BUILTIN_MODELS)}")
    if pretrained:
        raise ConfigError(
            f"pretrained=True is not supported for model {name!r} (weights are never downloaded); "
            "pass a dense checkpoint via model.checkpoint instead"
        )
    check_classes_and_width(num_classes, width)
    if name in ("mlp", "resnet18", "resnet34") and width != 1.0:
        raise ConfigError(
            f"model width must be 1.0 for {name!r}, got {width!r}; "
            "width applies to resnet56, resnet56_option_a and mobilenet_v2"
        )

    if name == "mlp":
        if input_dim is None:
            raise ConfigError("model 'mlp' needs input_dim (the number of input features), got None")
        return MLP(input_dim, hidden, num_classes)
    if name == "resnet56":
        return resnet56(num_classes, width=width, shortcut="projection")
    if name == "resnet56_option_a":
        return resnet56(num_classes, width=width, shortcut="option_a")

    # torchvision is imported lazily: tabular runs never pay for it.
    from torchvision import models as tv

    if name == "mobilenet_v2":
        return tv.mobilenet_v2(weights=None, num_classes=num_classes, width_mult=float(width))
    if name == "resnet18":
        return tv.resnet18(weights=None, num_classes=num_classes)
    if name == "resnet34":
        return tv.resnet34(weights=None, num_classes=num_classes)
    raise AssertionError(f"model {name!r} is listed in BUILTIN_MODELS but build_model does not build it")


def _register_builtin(name: str) -> None:
    def factory(model: ModelConfig, *, num_classes: int, input_shape: tuple[int, ...] | None) -> nn.Module:
        input_dim = input_shape[0] if name == "mlp" and input_shape else None
        return build_model(name, input_dim, num_classes, model.hidden, width=model.width)

    factory.builtin = True  # builds from the config alone: the run reads no item for input_shape
    MODELS.register(name)(factory)


for _name in BUILTIN_MODELS:
    _register_builtin(_name)


ModelFactory = Callable[..., torch.nn.Module]


def model_factory(model: torch.nn.Module | ModelFactory | None, name: str) -> ModelFactory:
    """The factory of a run's models: ``name`` from :data:`~constrained_fairness.registry.MODELS`,
    or one given in Python (a module is copied afresh for each stage, as given)."""
    if model is None:
        return MODELS.resolve(name)
    if isinstance(model, torch.nn.Module):
        template = copy.deepcopy(model)
        return lambda *args, **kwargs: copy.deepcopy(template)
    if callable(model):
        return model
    raise ConfigError(f"model must be an nn.Module or a factory function, got {type(model).__name__}")


__all__ = [
    "BUILTIN_MODELS",
    "MLP",
    "MODELS",
    "CifarResNet",
    "ModelFactory",
    "PadShortcut",
    "build_model",
    "model_factory",
    "resnet56",
]
