"""The torch device a config or a user names."""

from __future__ import annotations

import torch

from ..errors import ConfigError


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` → CUDA when available, else CPU; any other torch device name as it is.

    A name torch does not know, or a CUDA device on a machine without one, is a one-line
    :class:`ConfigError`.
    """
    if isinstance(name, torch.device):
        device = name
    elif name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(name)
        except (RuntimeError, TypeError):
            raise ConfigError(f"device {name!r} is not a torch device; use 'auto', 'cpu' or 'cuda'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {str(device)!r} is not available on this machine; use device: cpu or auto")
    return device


def place_model(
    model: torch.nn.Module, device: torch.device, channels_last: bool = False, compile: bool = False
) -> torch.nn.Module:
    """``model`` on ``device``, in NHWC memory format with ``channels_last``, and compiled
    with ``compile`` (``torch.nn.Module.compile``: in place, so the ``state_dict`` keys, hence
    the checkpoints, stay as they are; the first forward pass of each mode compiles)."""
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile:
        model.compile()
    return model
