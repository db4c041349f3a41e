"""``FairTrainer.save_checkpoint`` and ``load_checkpoint`` (:func:`save_trainer`, :func:`load_trainer`).

A FairTrainer checkpoint is one ``dict`` written atomically by
:func:`~constrained_fairness.training.checkpoint.save_atomic` and readable with
``torch.load(weights_only=True)``: only tensors and plain Python values (the history goes
through :func:`plain`). Its keys: ``format`` (:data:`CHECKPOINT_FORMAT`), ``epoch``,
``model``, ``optimizer``, ``scheduler``, ``dual_optimizer``, ``skipped``,
``early_stopping``, ``best_state`` and ``history`` (None without ``include_history``).

Under DDP rank 0 alone writes (the other ranks return at once, so a call guarded by
``if rank == 0`` cannot hang), and every rank reads: load from a file system the ranks
share, after ``torch.distributed.barrier()`` when the file was just written.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..errors import CheckpointError
from ..training.checkpoint import load_checkpoint, save_atomic
from .parallel import is_writer

if TYPE_CHECKING:
    from .trainer import FairTrainer

CHECKPOINT_FORMAT = "constrained_fairness.FairTrainer/1"


def plain(value: Any) -> Any:
    """Python floats/ints/lists only (numpy or tensor scalars would break weights_only loading)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return value


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint at ``path``; a one-line :class:`CheckpointError` when it was not
    written by ``FairTrainer.save_checkpoint``."""
    state = load_checkpoint(path)
    found = state.get("format") if isinstance(state, dict) else None
    if found != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is not a FairTrainer checkpoint (format {found!r}); "
            "use a file written by FairTrainer.save_checkpoint"
        )
    return state


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    """``model.load_state_dict(state)``, with a mismatch as a one-line :class:`CheckpointError`."""
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        detail = str(exc).strip().splitlines()
        raise CheckpointError(
            f"checkpoint {path} does not match this model ({detail[-1].strip()}); build the same FairModel"
        ) from None


def save_trainer(trainer: FairTrainer, path: str | Path, include_history: bool = True) -> None:
    """Write ``trainer``'s checkpoint to ``path`` (the multipliers are first stored in the
    model on every rank; under DDP rank 0 alone writes)."""
    trainer.store_multipliers()
    if not is_writer():
        return
    dual = trainer.dual_optimizer()
    state = {
        "format": CHECKPOINT_FORMAT,
        "epoch": trainer.epoch,
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict() if trainer.scheduler is not None else None,
        "dual_optimizer": dual.state_dict() if dual is not None else None,
        "skipped": trainer.skipped,
        "early_stopping": trainer.early_stopping.state_dict(),
        "best_state": trainer.best_state,
        "history": plain(trainer.history) if include_history else None,
    }
    save_atomic(state, path)


def load_trainer(trainer: FairTrainer, path: str | Path) -> dict[str, Any]:
    """Restore ``trainer`` from the checkpoint at ``path`` (the constraint, Cooper optimizer
    and step are rebuilt, with the saved multipliers); returns the raw checkpoint."""
    state = read_checkpoint(path)
    load_model_state(trainer.model, state["model"], path)
    trainer.model.to(trainer.device)
    trainer.optimizer.load_state_dict(state["optimizer"])
    if trainer.scheduler is not None and state["scheduler"] is not None:
        trainer.scheduler.load_state_dict(state["scheduler"])
    trainer.rebuild(skipped=int(state.get("skipped", 0)))
    dual = trainer.dual_optimizer()
    if dual is not None and state["dual_optimizer"] is not None:
        dual.load_state_dict(state["dual_optimizer"])
    trainer.early_stopping.load_state_dict(state["early_stopping"])
    trainer.best_state = state["best_state"]
    trainer.epoch = int(state["epoch"])
    if state["history"] is not None:
        trainer.history = {key: list(values) for key, values in state["history"].items()}
    return state
