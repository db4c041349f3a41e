"""The CIFAR ResNet of He et al. (2016), Sec. 4.2, e.g. ResNet-56 (0.86M parameters for 100 classes).

Architecture, for ``depth = 6n + 2`` and channel widths ``(c1, c2, c3) = (16, 32, 64) · width``:

* stem: ``conv1`` (3x3, ``3 → c1``, stride 1, padding 1, no bias) → ``bn1`` → ReLU;
* ``layer1``, ``layer2``, ``layer3``: ``n`` :class:`BasicBlock` each, with ``c1``, ``c2`` and ``c3``
  channels; the first block of ``layer2`` and ``layer3`` has stride 2 (feature maps 32 → 16 → 8 on CIFAR);
* ``avgpool`` (global average pooling) and the classifier ``fc`` (``nn.Linear(c3, num_classes)``).

A :class:`BasicBlock` computes ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`` with 3x3 convolutions
without bias (``conv1`` carries the block's stride). The shortcut is the identity where the shapes match;
otherwise it is the block's ``downsample`` module, which depends on ``shortcut``:

* ``"projection"`` (the default, model name ``resnet56``): ``downsample = nn.Sequential(1x1 conv(stride,
  no bias), BatchNorm2d)``. This is the layout of the public CIFAR-100 ResNet-56 the paper fine-tunes
  (``cifar100_resnet56-f2eff4c8.pt`` of ``chenyaofo/pytorch-cifar-models``): its state dict, with keys such
  as ``conv1.weight``, ``bn1.running_mean``, ``layer2.0.downsample.0.weight``,
  ``layer2.0.downsample.1.num_batches_tracked`` and ``fc.weight``, loads into ``resnet56`` unchanged.
  Convolutions start Kaiming-normal with ``mode="fan_out"``.
* ``"option_a"`` (model name ``resnet56_option_a``): option A of the paper, parameter-free: a strided
  identity whose missing channels are zero-padded (:class:`PadShortcut`). Convolutions start
  Kaiming-normal with ``mode="fan_in"``.

``depth`` counts the ``6n`` block convolutions, the stem and the classifier (the projection variant adds
two 1x1 shortcut convolutions). BatchNorm starts at ``γ = 1, β = 0`` and the classifier keeps PyTorch's
default (Kaiming-uniform) initialisation. ``conv1`` is the first conv/linear layer in definition order and
``fc`` the last.

Every stride-2 step uses ``padding = 1`` (or a 1x1 kernel) and the classifier follows a global average
pooling, so any 3-channel input size works (8x8 and up is tested).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

BASE_CHANNELS = (16, 32, 64)
SHORTCUTS = ("projection", "option_a")


def scaled_channels(width: float) -> tuple[int, int, int]:
    """The stage widths ``(16, 32, 64) · width``, each rounded and at least 1."""
    c1, c2, c3 = (max(1, round(c * width)) for c in BASE_CHANNELS)
    return c1, c2, c3


def blocks_per_stage(depth: int) -> int:
    """``n`` such that ``depth = 6n + 2``; :class:`ConfigError` if there is none with ``n ≥ 1``."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ConfigError(
            f"CIFAR ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, 110, ...), got {depth!r}"
        )
    return (depth - 2) // 6


def check_shortcut(shortcut: str) -> None:
    if shortcut not in SHORTCUTS:
        raise ConfigError(f"CIFAR ResNet shortcut must be one of {', '.join(SHORTCUTS)}, got {shortcut!r}")


class PadShortcut(nn.Module):
    """Option-A shortcut: keep every ``stride``-th pixel, then zero-pad the channels to ``out_channels``.

    The padding is split evenly before and after the existing channels (as in the common
    implementation of the paper's ResNet-56). It has no parameters.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"option-A shortcut cannot reduce channels ({in_channels} -> {out_channels})")
        self.stride = stride
        self.pad_before = (out_channels - in_channels) // 2
        self.pad_after = out_channels - in_channels - self.pad_before

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_before, self.pad_after))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, pad=({self.pad_before}, {self.pad_after})"


def projection_shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """``1x1 conv(stride, no bias) → BatchNorm2d``: the ``downsample`` of a projection block."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class BasicBlock(nn.Module):
    """``conv1`` 3x3(stride) → ``bn1`` → ReLU → ``conv2`` 3x3 → ``bn2``, plus the shortcut, then ReLU.

    ``downsample`` is ``None`` (identity shortcut) unless ``stride != 1`` or the channel count changes;
    then it is :func:`projection_shortcut` (``shortcut="projection"``) or :class:`PadShortcut`
    (``shortcut="option_a"``).
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, shortcut: str = "projection"
    ) -> None:
        super().__init__()
        check_shortcut(shortcut)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU()
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            if shortcut == "projection":
                self.downsample = projection_shortcut(in_channels, out_channels, stride)
            else:
                self.downsample = PadShortcut(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu2(out + identity)


def check_classes_and_width(num_classes: int, width: float) -> None:
    """One-line errors for a bad class count or channel multiplier."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be an int >= 1, got {num_classes!r}")
    if (
        isinstance(width, bool)
        or not isinstance(width, (int, float))
        or not math.isfinite(width)
        or not width > 0
    ):
        raise ConfigError(f"model width must be a finite number > 0, got {width!r}")


class CifarResNet(nn.Module):
    """CIFAR ResNet of depth ``6n + 2`` (see the module docstring).

    ``width`` multiplies the channel counts ``(16, 32, 64)`` (rounded, at least 1); ``width=1.0`` is
    the paper's network. ``shortcut`` is ``"projection"`` (1x1 conv + BN ``downsample``, the layout of
    chenyaofo's public checkpoints) or ``"option_a"`` (parameter-free zero padding). The classifier
    ``fc`` is the last ``nn.Linear``/``nn.Conv2d`` in definition order, the stem ``conv1`` the first.
    """

    def __init__(
        self,
        depth: int = 56,
        num_classes: int = 100,
        width: float = 1.0,
        shortcut: str = "projection",
    ) -> None:
        super().__init__()
        n = blocks_per_stage(depth)
        check_classes_and_width(num_classes, width)
        check_shortcut(shortcut)
        self.depth = depth
        self.num_classes = num_classes
        self.width = float(width)
        self.shortcut = shortcut
        c1, c2, c3 = scaled_channels(width)

        self.conv1 = nn.Conv2d(3, c1, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c1)
        self.relu = nn.ReLU()
        self.layer1 = self._stage(c1, c1, n, 1, shortcut)
        self.layer2 = self._stage(c1, c2, n, 2, shortcut)
        self.layer3 = self._stage(c2, c3, n, 2, shortcut)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c3, num_classes)
        self._init_weights("fan_out" if shortcut == "projection" else "fan_in")

    @staticmethod
    def _stage(in_channels: int, out_channels: int, blocks: int, stride: int, shortcut: str) -> nn.Sequential:
        layers = [BasicBlock(in_channels, out_channels, stride, shortcut)]
        layers += [BasicBlock(out_channels, out_channels, 1, shortcut) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def _init_weights(self, mode: str) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode=mode, nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet56(num_classes: int = 100, width: float = 1.0, shortcut: str = "projection") -> CifarResNet:
    """ResNet-56 (``n = 9``). Projection shortcuts: 861,620 parameters for 100 classes (chenyaofo's
    CIFAR-100 checkpoint loads into it); option A: 858,868 for 100 classes, 853,018 (0.85M) for 10."""
    return CifarResNet(depth=56, num_classes=num_classes, width=width, shortcut=shortcut)


__all__ = ["SHORTCUTS", "BasicBlock", "CifarResNet", "PadShortcut", "projection_shortcut", "resnet56"]
