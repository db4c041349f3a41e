"""The CIFAR ResNet of He et al. (2016), Sec. 4.2, e.g. ResNet-56 (0.85M parameters).

Architecture, for ``depth = 6n + 2`` and channel widths ``(c1, c2, c3) = (16, 32, 64) · width``:

* stem: ``3x3 conv(3 → c1) → BN → ReLU``;
* three stages of ``n`` :class:`BasicBlock` each, with ``c1``, ``c2`` and ``c3`` channels; the first block
  of stages 2 and 3 has stride 2 (feature maps 32 → 16 → 8 on CIFAR);
* global average pooling and a linear classifier ``c3 → num_classes``.

Shortcuts follow option A of the paper: parameter-free, the identity where shapes match, otherwise a
strided identity whose missing channels are zero-padded (:class:`PadShortcut`). ``depth`` counts the
``6n`` block convolutions, the stem and the classifier. Convolutions use Kaiming-normal initialisation
(He et al., 2015), BatchNorm starts at ``γ = 1, β = 0``, and the classifier keeps PyTorch's default
(Kaiming-uniform) initialisation.

Every stride-2 step uses ``padding = 1`` and the classifier follows a global average pooling, so any
3-channel input size works (8x8 and up is tested).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

BASE_CHANNELS = (16, 32, 64)


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


class BasicBlock(nn.Module):
    """``3x3 conv(stride) → BN → ReLU → 3x3 conv → BN``, plus the shortcut, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU()
        self.shortcut: nn.Module
        if stride != 1 or in_channels != out_channels:
            self.shortcut = PadShortcut(in_channels, out_channels, stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


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
    """CIFAR ResNet of depth ``6n + 2`` with option-A shortcuts (see the module docstring).

    ``width`` multiplies the channel counts ``(16, 32, 64)`` (rounded, at least 1); ``width=1.0`` is
    the paper's network. The classifier ``fc`` is the last ``nn.Linear``/``nn.Conv2d`` in definition
    order, the stem ``conv1`` the first.
    """

    def __init__(self, depth: int = 56, num_classes: int = 100, width: float = 1.0) -> None:
        super().__init__()
        n = blocks_per_stage(depth)
        check_classes_and_width(num_classes, width)
        self.depth = depth
        self.num_classes = num_classes
        self.width = float(width)
        c1, c2, c3 = scaled_channels(width)

        self.conv1 = nn.Conv2d(3, c1, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c1)
        self.relu = nn.ReLU()
        self.layer1 = self._stage(c1, c1, n, stride=1)
        self.layer2 = self._stage(c1, c2, n, stride=2)
        self.layer3 = self._stage(c2, c3, n, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c3, num_classes)
        self._init_weights()

    @staticmethod
    def _stage(in_channels: int, out_channels: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(in_channels, out_channels, stride)]
        layers += [BasicBlock(out_channels, out_channels, 1) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet56(num_classes: int = 100, width: float = 1.0) -> CifarResNet:
    """ResNet-56 (``n = 9``): 0.86M parameters for 100 classes, 0.85M for 10."""
    return CifarResNet(depth=56, num_classes=num_classes, width=width)


__all__ = ["BasicBlock", "CifarResNet", "PadShortcut", "resnet56"]
