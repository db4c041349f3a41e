"""Data-parallel training (DDP) of constrained problems.

Cooper's FAQ notes that DDP is not supported out of the box: the sparse gradients of an
``IndexedMultiplier`` do not all-reduce. We never all-reduce multipliers. Instead the
constraint *statistics* are combined across ranks before any violation is computed:

* proxy (primal): per-group sums and counts are summed over ranks, so every rank sees
  the global batch's group means; gradients flow through the local part only, and the
  proxy is scaled by the world size so that DDP's gradient *averaging* yields the
  gradient of the global proxy (the loss, a per-rank mean, is averaged as usual);
* strict (dual): the per-sample values and group ids are gathered in rank order and
  pushed into every rank's replay buffer, so all buffers hold the same values.

Every rank then computes identical strict violations and takes identical dual steps,
so the multipliers stay equal across ranks. With equal per-rank batch sizes the result
matches a single process on the concatenated (global) batches.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def global_sum(tensor: torch.Tensor) -> torch.Tensor:
    """``Σ_ranks tensor``, differentiable through this rank's own term only."""
    if not is_distributed():
        return tensor
    total = tensor.detach().clone()
    dist.all_reduce(total)
    return tensor + (total - tensor.detach())


def gather_cat(tensor: torch.Tensor, same_size: bool = False) -> torch.Tensor:
    """Concatenation over ranks, in rank order, of 1-D tensors of possibly different lengths
    (``same_size``: of one length on every rank, so no lengths are exchanged, and the host
    reads nothing)."""
    if not is_distributed():
        return tensor
    if same_size:
        parts = [torch.empty_like(tensor) for _ in range(world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)
    size = torch.tensor([tensor.numel()], device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(world_size())]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros(longest, dtype=tensor.dtype, device=tensor.device)
    padded[: tensor.numel()] = tensor
    parts = [torch.zeros_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes, strict=True)])


def init_from_environment(device: str) -> torch.device | None:
    """Join the process group that ``torchrun`` describes in the environment.

    Returns this rank's device (``cuda:LOCAL_RANK`` with NCCL, or the CPU with gloo), or
    ``None`` when the run is not distributed (``WORLD_SIZE`` unset or 1).
    """
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if not dist.is_initialized():
        # NCCL for the GPU tensors, gloo for the few host-side ones (barrier, flags, objects)
        dist.init_process_group("cpu:gloo,cuda:nccl" if use_cuda else "gloo")
    if use_cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def broadcast_object(value: object) -> object:
    """Rank 0's ``value`` on every rank."""
    if not is_distributed():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_ranks(flag: bool) -> bool:
    """``flag`` on every rank (a logical and), so that ranks take the same branch."""
    return bool(all_ranks_flags(torch.tensor([flag]))[0])


def all_ranks_flags(flags: torch.Tensor) -> torch.Tensor:
    """The element-wise logical and of a boolean tensor over ranks (itself without DDP): one
    small all-reduce, on a device the process group's backend serves (NCCL: this rank's GPU),
    and returned there (the callers read it on the host)."""
    if not is_distributed():
        return flags
    value = flags.to(_collective_device(), torch.int32)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return value.bool()


def _collective_device() -> torch.device:
    """CPU where the group has a gloo backend (``gloo``, or ``cpu:gloo,cuda:nccl`` as
    :func:`init_from_environment` sets up), else this rank's GPU (an NCCL-only group, e.g.
    one the user initialized, has no CPU backend)."""
    if "gloo" in str(dist.get_backend()) or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device())
