"""Data-parallel training (DDP) of a :class:`~.model.FairModel` by :class:`~.trainer.FairTrainer`.

When ``torch.distributed`` is initialised with more than one rank (by the user, or by
:func:`~constrained_fairness.runtime.distributed.init_from_environment` under ``torchrun``),
every rank runs the same ``FairTrainer`` calls on its own shard of the data, e.g. loaders
with a ``DistributedSampler`` (``set_epoch`` each epoch when it shuffles). Then:

* the training forward and backward run the model's ``network`` through a
  ``DistributedDataParallel`` wrapper (:func:`wrap`, :func:`routed`), so the primal
  gradients are averaged over ranks;
* the fairness constraint all-reduces its per-group statistics itself (and scales its
  proxy by the world size): :meth:`GroupStatisticConstraint.compute
  <constrained_fairness.constraints.statistic.GroupStatisticConstraint.compute>`, so every
  rank takes the same dual step and the multipliers stay equal;
* the losses and gaps of a pass over a split are pooled over ranks (:mod:`.evaluation`);
* the attribute values are the union over ranks (:func:`distinct_rows`), and the inference
  offsets are rank 0's (:func:`sync_offsets`; a ``DataLoader`` over a map-style dataset is
  read whole by :meth:`FairModel.calibrate <.model.FairModel.calibrate>` on every rank, so
  they agree anyway);
* rank 0 alone writes checkpoints and logs (:func:`is_writer`).

``fit``, ``train_epoch``, ``evaluate`` and ``validate`` are collective: call them on every
rank (``save_checkpoint`` is not: it returns at once on the other ranks). With equal shards per
step (every rank yielding the same number of batches, of equal sizes; ``DistributedSampler``
pads the last shard by repeating rows) Lagrangian training matches one process on the global
batches. Projection, in the training forward pass (``enforcement="projection"``) and at
inference for batches of at least ``b_tau`` rows, acts on each rank's own batch, not on the
global one. Without DDP every function here is a no-op.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..runtime.distributed import broadcast_object, gather_cat, is_distributed, rank
from .model import FairModel


def is_writer() -> bool:
    """Whether this process writes files: always without DDP, rank 0 only under DDP."""
    return rank() == 0


def wrap(model: FairModel, device: torch.device) -> nn.Module | None:
    """``DistributedDataParallel(model.network)`` under DDP (a collective: every rank calls it,
    and rank 0's parameters are broadcast), else None (also when the network is a
    ``DistributedDataParallel`` already)."""
    from torch.nn.parallel import DistributedDataParallel

    if not is_distributed() or isinstance(model.network, DistributedDataParallel):
        return None

    ids = None
    if device.type == "cuda":
        ids = [device.index if device.index is not None else torch.cuda.current_device()]
    return DistributedDataParallel(model.network, device_ids=ids)


@contextmanager
def routed(model: FairModel, ddp: nn.Module | None) -> Iterator[None]:
    """Within the block ``model``'s forward calls its network through ``ddp`` (its
    ``state_dict`` and parameters are unchanged: ``ddp.module`` is the network)."""
    if ddp is None:
        yield
        return
    network = model.network
    model.network = ddp
    try:
        yield
    finally:
        model.network = network


def distinct_rows(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``values`` (``(N, A)``) without DDP; under DDP the distinct rows of every rank's
    ``values``, on ``device`` (where the process group's backend can gather them)."""
    if not is_distributed():
        return values
    local = torch.unique(values.to(device), dim=0)
    return gather_cat(local.reshape(-1)).reshape(-1, values.shape[1])


def sync_offsets(model: FairModel) -> None:
    """Under DDP, rank 0's inference offsets and calibration margins and gaps on every rank."""
    if not is_distributed():
        return
    names = ("offset_cells", "offset_values", "calibration_margins", "calibration_gaps")
    values = broadcast_object(tuple(getattr(model, name).cpu() for name in names))
    for name, value in zip(names, values, strict=True):
        setattr(model, name, value.to(getattr(model, name).device))
