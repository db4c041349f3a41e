"""Checkpoints: written atomically, loaded with ``weights_only=True``.

A checkpoint holds only tensors and primitive types (dicts, lists, numbers, strings),
so ``torch.load(weights_only=True)`` can read it: no pickled code runs at load time.
"""

from __future__ import annotations

import os
import re
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from cooper.optim.torch_optimizers.nupi_optimizer import nuPIInitType

from ..errors import CheckpointError
from ..files import atomic_write, fsync_folder

# The nuPI dual optimizer keeps this enum in its param groups. A checkpoint stores it as a
# tagged primitive, so any process can read the file with plain torch.load(weights_only=True);
# load_checkpoint turns the tag back into the enum (and still reads files that hold the enum).
_ENUM_TAG = "__nuPIInitType__"
SAFE_GLOBALS = [nuPIInitType]


def to_primitives(obj: Any) -> Any:
    """``obj`` with every :class:`nuPIInitType` replaced by ``{"__nuPIInitType__": name}``."""
    if isinstance(obj, nuPIInitType):
        return {_ENUM_TAG: obj.name}
    if isinstance(obj, dict):
        return {k: to_primitives(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_primitives(v) for v in obj)
    return obj


def from_primitives(obj: Any) -> Any:
    """The inverse of :func:`to_primitives`."""
    if isinstance(obj, dict):
        if len(obj) == 1 and _ENUM_TAG in obj:
            return nuPIInitType[obj[_ENUM_TAG]]
        return {k: from_primitives(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(from_primitives(v) for v in obj)
    return obj


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` of ``obj`` (as :func:`to_primitives`) through
    :func:`~constrained_fairness.files.atomic_write`: a crash leaves either the old file or the
    new one, never a torn one. A full disk or a read-only folder is a one-line
    :class:`CheckpointError`."""
    path = Path(path)
    obj = to_primitives(obj)
    try:
        atomic_write(path, lambda handle: torch.save(obj, handle))
    except BaseException as exc:
        cause = _os_error(exc)
        if cause is None:
            raise
        raise CheckpointError(
            f"cannot write checkpoint {path}: {cause.strerror or cause}; free space in {path.parent}, "
            "or keep fewer checkpoints (checkpoint.keep_last=1)"
        ) from exc


def _os_error(exc: BaseException) -> OSError | None:
    """The ``OSError`` behind ``exc`` (torch wraps a failed write, e.g. a full disk, in a
    ``RuntimeError`` whose context is the ``OSError``), or None."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint with ``torch.load(weights_only=True)``, in any process, with nothing
    imported or registered first; a missing or unreadable file is a one-line user error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}; check the path")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):  # files written before the tag
            content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt files
        raise CheckpointError(
            f"cannot read checkpoint {path} ({type(exc).__name__}); it is corrupt or not a "
            "torch checkpoint, delete it or point to another file"
        ) from None
    return from_primitives(content)


def load_model_weights(
    model: torch.nn.Module,
    path: str | Path,
    *,
    model_name: str | None = None,
    class_names: Sequence[str] | None = None,
) -> str:
    """Load dense weights into ``model`` from ``path``; return the recognised layout's name.

    ``path`` holds a published dense checkpoint exactly as downloaded (chenyaofo's CIFAR-100 ResNet-56,
    FairFace's 18-way ResNet-34, a torchvision MobileNetV2 such as the UTKFace ones: see
    :mod:`constrained_fairness.models.published`), a state dict of the configured model, or a checkpoint
    holding one under ``"model"`` (a ``dense.pt``); the last two give ``"state_dict"``. The file is read
    with ``weights_only=True``. ``model_name`` is the configured model (e.g. ``cfg.model.name``) and
    ``class_names`` the target's classes in the model's order (they pick the FairFace head's rows).
    A file that does not fit is a one-line :class:`CheckpointError` naming the file, the first missing or
    unexpected key (or shape mismatch) and the expected format.
    """
    from ..models.published import adapt_state_dict

    content = load_checkpoint(path)
    name, state = adapt_state_dict(
        content, model, model_name=model_name, class_names=class_names, source=path
    )
    model.load_state_dict(state)  # adapt_state_dict checked every key and shape
    return name


_NAME = re.compile(r"^(?P<stage>[A-Za-z0-9_]+)-e(?P<epoch>\d{5})-b(?P<batch>\d{6})\.pt$")


class Checkpointer:
    """The checkpoints of one stage: ``<stage>-e<epoch>-b<batch>.pt`` in ``folder``, where the
    state is taken after ``batch`` batches of epoch ``epoch`` (``b000000``: at the epoch's
    start). Keeps the newest ``keep_last``; every state records the config hash.
    """

    def __init__(self, folder: Path, stage: str, keep_last: int, config_hash: str) -> None:
        self.folder, self.stage, self.keep_last, self.config_hash = (
            Path(folder),
            stage,
            keep_last,
            config_hash,
        )

    def path(self, epoch: int, batch: int) -> Path:
        return self.folder / f"{self.stage}-e{epoch:05d}-b{batch:06d}.pt"

    def candidates(self) -> list[Path]:
        """This stage's checkpoint files, newest first."""
        found = []
        for path in self.folder.glob(f"{self.stage}-e*-b*.pt"):
            match = _NAME.match(path.name)
            if match and match["stage"] == self.stage:
                found.append(((int(match["epoch"]), int(match["batch"])), path))
        return [path for _, path in sorted(found, reverse=True)]

    def save(self, state: dict[str, Any], epoch: int, batch: int) -> Path:
        path = self.path(epoch, batch)
        save_atomic({**state, "config_hash": self.config_hash, "stage": self.stage}, path)
        for old in self.candidates()[self.keep_last :]:
            old.unlink(missing_ok=True)
        return path

    def finalize(self) -> Path | None:
        """Publish the newest checkpoint of a finished stage as ``<stage>.pt`` (a hard link, so
        no extra space; a copy where links are not supported), e.g. for ``model.checkpoint``."""
        newest = next(iter(self.candidates()), None)
        if newest is None:
            return None
        final = self.folder / f"{self.stage}.pt"
        tmp = self.folder / f".{self.stage}.pt.link"
        tmp.unlink(missing_ok=True)
        try:
            os.link(newest, tmp)
        except OSError:
            shutil.copyfile(newest, tmp)
        os.replace(tmp, final)
        fsync_folder(self.folder)
        return final

    def load_latest(self, force: bool = False) -> dict[str, Any] | None:
        """The newest checkpoint that loads and belongs to this stage and config, or None.

        An unreadable or foreign file gets a warning naming it, and the previous one is
        tried. A checkpoint of another config is an error (``force``: a warning)."""
        for path in self.candidates():
            try:
                state = load_checkpoint(path)
            except CheckpointError as exc:
                warnings.warn(f"{exc}; falling back to the previous checkpoint", stacklevel=2)
                continue
            if not isinstance(state, dict) or state.get("stage") != self.stage or "model" not in state:
                warnings.warn(
                    f"checkpoint {path} is not a {self.stage!r} checkpoint of this run; "
                    "falling back to the previous checkpoint",
                    stacklevel=2,
                )
                continue
            if state.get("config_hash") != self.config_hash:
                message = (
                    f"checkpoint {path} was written with another config (hash "
                    f"{str(state.get('config_hash'))[:12]} vs {self.config_hash[:12]})"
                )
                if not force:
                    raise CheckpointError(f"{message}; resume with the run's config, or pass --force")
                warnings.warn(f"{message}; resuming anyway because of --force", stacklevel=2)
            return state
        return None
