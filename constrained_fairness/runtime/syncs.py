"""Counting host–device synchronisations, on any device.

A host synchronisation is a point where Python needs a value that the accelerator computes:
the host thread then waits until the device has run everything queued before it, and the
device idles until the host queues the next work. On a GPU ``torch.cuda.set_sync_debug_mode``
reports them; on the CPU nothing waits, so :class:`HostSyncCounter` counts the calls that
*would* synchronise on a device:

* the aten operations that read a value back or size an output from data:
  ``_local_scalar_dense`` (``item``, ``int``, ``float``, ``bool`` of a tensor), ``nonzero``
  (also behind boolean-mask indexing and ``torch.where(cond)``), ``masked_select``,
  ``unique``, ``repeat_interleave`` with tensor repeats, ``equal``, indexing with a boolean
  mask, and ``bincount`` (CUDA's reads ``max(input)`` to size its output);
* the Python calls that copy a tensor to host memory: ``tolist``, ``cpu`` and ``numpy``
  (no-ops that dispatch nothing when the tensor is already on the CPU).

Each event is counted once with the first frame of the library (``constrained_fairness``
or ``cooper``) that caused it, so a failing count says where the synchronisation is.
The count is an upper bound of a GPU's: a ``.cpu()`` of a tensor that lives on the host
anyway (e.g. a CPU generator's draw) is counted too.
"""

from __future__ import annotations

import collections
import functools
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_SYNCING_OPS = {
    "aten._local_scalar_dense",
    "aten.nonzero",
    "aten.masked_select",
    "aten.unique",
    "aten._unique",
    "aten._unique2",
    "aten.unique_dim",
    "aten.unique_consecutive",
    "aten.equal",
    "aten.bincount",
}
"""Aten packets whose result needs a value from the device (overload names dropped)."""

_HOST_COPIES = ("tolist", "cpu", "numpy")
"""``torch.Tensor`` methods that copy to host memory without dispatching on a CPU tensor."""


def _site() -> str:
    """``file:line (function)`` of the innermost frame of the library or Cooper."""
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_code.co_filename
        if ("constrained_fairness" in name or "/cooper/" in name) and not name.endswith("syncs.py"):
            package = name.rfind("constrained_fairness/")
            short = name[package:] if package >= 0 else name.split("site-packages/")[-1]
            return f"{short}:{frame.f_lineno} ({frame.f_code.co_name})"
        frame = frame.f_back
    return "outside the library"


class _SyncDispatch(TorchDispatchMode):
    def __init__(self, record: Callable[[str], None]) -> None:
        super().__init__()
        self.record = record

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        packet = str(func.overloadpacket)
        if packet in _SYNCING_OPS or _data_dependent(packet, args, kwargs or {}):
            self.record(packet)
        return func(*args, **(kwargs or {}))


def _data_dependent(packet: str, args: Any, kwargs: dict) -> bool:
    """Indexing with a boolean mask, or ``repeat_interleave`` by a tensor of repeats without
    ``output_size``: the output's size is read from the data."""
    if packet in ("aten.index", "aten.index_put", "aten.index_put_"):
        indices = args[1] if len(args) > 1 else ()
        return any(i is not None and i.dtype in (torch.bool, torch.uint8) for i in indices)
    if packet == "aten.repeat_interleave":
        repeats = args[0] if len(args) == 1 else args[1] if len(args) > 1 else None
        return isinstance(repeats, torch.Tensor) and repeats.dim() > 0 and kwargs.get("output_size") is None
    return False


class HostSyncCounter:
    """``with HostSyncCounter() as syncs: ...`` then ``syncs.count`` and ``syncs.sites``.

    ``sites`` counts the events per ``(what, where)``. Nested copies are counted once: a
    ``tolist`` does not count the ``_local_scalar_dense`` calls it may make underneath.
    """

    def __init__(self) -> None:
        self.sites: collections.Counter[tuple[str, str]] = collections.Counter()
        self._depth = 0

    @property
    def count(self) -> int:
        return sum(self.sites.values())

    def _record(self, what: str) -> None:
        if self._depth == 0:
            self.sites[(what, _site())] += 1

    def reset(self) -> None:
        self.sites.clear()

    def __enter__(self) -> HostSyncCounter:
        self._originals = {name: getattr(torch.Tensor, name) for name in _HOST_COPIES}
        for name, original in self._originals.items():
            setattr(torch.Tensor, name, self._wrap(name, original))
        self._mode = _SyncDispatch(self._record)
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._mode.__exit__(*exc)
        for name, original in self._originals.items():
            setattr(torch.Tensor, name, original)

    def _wrap(self, name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        counter = self

        @functools.wraps(original)
        def copy_to_host(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            counter._record(f"Tensor.{name}")
            counter._depth += 1
            try:
                return original(tensor, *args, **kwargs)
            finally:
                counter._depth -= 1

        return copy_to_host

    def report(self) -> str:
        """One line per site, most frequent first."""
        return "\n".join(f"{n:>5}  {what:<28} {where}" for (what, where), n in self.sites.most_common())


@contextmanager
def cuda_sync_debug(mode: str = "warn") -> Iterator[None]:
    """``torch.cuda.set_sync_debug_mode(mode)`` for the block (a no-op without CUDA)."""
    if not torch.cuda.is_available():
        yield
        return
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode(mode)
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(previous)
