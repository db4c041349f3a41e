"""Per-group replay buffer: the last ``k`` values of each group, as a ``(G, k)`` tensor ring.

CEAG estimates each group's training accuracy from the 0/1 correctness of that group's
last ``k`` training samples (the paper uses ``k = 40``). EL+RB does the same with
per-sample losses. After each forward pass the whole batch is pushed at once:

* ``c[g]`` samples of group ``g`` arrive; if ``c[g] > k`` only the last ``k`` are kept;
* sample number ``j`` (0-based, among the kept ones of its group) goes to slot
  ``(ptr[g] + j) mod k``; then ``ptr[g] ← (ptr[g] + min(c[g], k)) mod k`` and
  ``fill[g] ← min(fill[g] + c[g], k)``.

The estimate of group ``g`` is ``mean[g] = sum_j buf[g, j] / fill[g]``; it *exists* (is
used for a dual update) only once ``fill[g] = k``. Everything is vectorized: no Python
loop over samples or groups. The ranks ``j`` come from one stable sort of the group ids,
``j_n = n' − start[g_n]`` for the sorted position ``n'`` and the exclusive cumulative count
``start = cumsum(c) − c``; a push is about a dozen tensor operations, with one host read
(``max c > k``?) that selects the rare overflow path. :meth:`ReplayBuffer.push_fixed` does
the same without any host read, for the fixed-shape statistics: every sample is placed,
and the ones not kept (a group's oldest beyond ``k``, or masked out) are written to one
spare slot after the ``G × k`` values that nothing reads.
"""

from __future__ import annotations

import torch

from .errors import ConfigError


class ReplayBuffer:
    """A ``(num_groups, size)`` ring buffer with one write pointer and fill count per group."""

    def __init__(self, num_groups: int, size: int, device: torch.device | str = "cpu") -> None:
        if size < 1:
            raise ConfigError(f"replay buffer size must be >= 1, got {size}; set buffer_size to e.g. 40")
        if num_groups < 1:
            raise ConfigError(f"number of groups must be >= 1, got {num_groups}")
        self.num_groups = num_groups
        self.size = size
        # the (G, k) values, plus one spare slot that takes the writes push_fixed discards
        self.storage = torch.zeros(num_groups * size + 1, device=device)
        self.values = self.storage[:-1].view(num_groups, size)
        # pointers and fills, each with one more entry for push_fixed's dropped id G
        self._pointer = torch.zeros(num_groups + 1, dtype=torch.long, device=device)
        self._fill = torch.zeros(num_groups + 1, dtype=torch.long, device=device)
        self.pointer, self.fill = self._pointer[:-1], self._fill[:-1]
        # push_fixed's per-id cap on kept samples: k, and 0 for the dropped id
        self._cap = torch.full((num_groups + 1,), size, dtype=torch.long, device=device)
        self._cap[-1] = 0
        self._spare = torch.tensor(num_groups * size, device=device)  # the index of the spare slot
        self._positions: dict[int, torch.Tensor] = {}  # arange(n), per batch size

    def push(self, values: torch.Tensor, groups: torch.Tensor, counts: torch.Tensor | None = None) -> None:
        """Append ``values[n]`` to the buffer of group ``groups[n]``, in batch order
        (``counts``: ``bincount(groups, minlength=num_groups)``, if the caller has it).

        Samples are visited in stable group order (``sort``); only when some group receives
        more than ``k`` samples are its oldest ones masked out. ``index_select`` rather than
        advanced indexing, and in-place pointer updates: each op costs microseconds of
        dispatch, as much as its arithmetic at these sizes (benchmark P5)."""
        values = values.detach().to(self.values.dtype).reshape(-1)  # no graph: no no_grad context needed
        groups = groups.reshape(-1)
        if values.numel() != groups.numel():
            raise ValueError(
                f"push got {values.numel()} values but {groups.numel()} group ids; pass one per sample"
            )
        if groups.numel() == 0:
            return
        k = self.size
        if counts is None:
            counts = torch.bincount(groups, minlength=self.num_groups)
        sorted_groups, order = torch.sort(groups, stable=True)
        starts = counts.cumsum(0) - counts
        rank = torch.arange(groups.numel(), device=groups.device) - starts.index_select(0, sorted_groups)
        values = values.index_select(0, order)
        if int(counts.max()) > k:  # keep only each group's last k samples, renumbered from 0
            excess = (counts - k).clamp(min=0).index_select(0, sorted_groups)
            keep = rank >= excess
            sorted_groups, values, rank = sorted_groups[keep], values[keep], (rank - excess)[keep]
            counts = counts.clamp(max=k)
        slots = (self.pointer.index_select(0, sorted_groups) + rank).remainder_(k)
        self.values.index_put_((sorted_groups, slots), values)
        self.pointer.add_(counts).remainder_(k)
        self.fill.add_(counts).clamp_(max=k)

    def push_fixed(self, values: torch.Tensor, groups: torch.Tensor, counts: torch.Tensor) -> None:
        """:meth:`push` without a host read: the same buffer contents, pointers and fills.

        ``groups[n]`` may be ``G`` (= ``num_groups``): sample ``n`` is dropped (a masked one).
        ``counts`` is ``(G + 1,)``, the samples per id including the dropped ones. With the
        kept counts ``m[g] = min(c[g], k)`` (``m[G] = 0``) and ``o[g] = Σ_{h ≤ g} c[h] − m[g]``,
        the sample at sorted position ``i`` of group ``g`` is kept iff ``i ≥ o[g]`` (its
        rank in the group is at least ``c[g] − m[g]``), at slot ``(ptr[g] + i − o[g]) mod k``;
        every other sample is written to the spare slot ``G k``. About twenty ops, each of
        them microseconds of dispatch at these sizes (benchmark P1a)."""
        values = values.detach().to(self.values.dtype).reshape(-1)
        groups = groups.reshape(-1)
        n = groups.numel()
        if values.numel() != n or counts.numel() != self.num_groups + 1:
            raise ValueError(
                f"push_fixed got {values.numel()} values, {n} group ids and {counts.numel()} "
                f"counts; pass one value and id per sample and {self.num_groups + 1} counts"
            )
        k = self.size
        sorted_groups, order = torch.sort(groups, stable=True)
        kept = torch.minimum(counts, self._cap)
        offset = counts.cumsum(0).sub_(kept)
        position = self._positions.get(n)
        if position is None or position.device != groups.device:
            position = self._positions[n] = torch.arange(n, device=groups.device)
        keep = position >= offset.index_select(0, sorted_groups)
        slots = (self._pointer - offset).index_select(0, sorted_groups).add_(position).remainder_(k)
        target = torch.where(keep, slots.add_(sorted_groups * k), self._spare)
        self.storage.index_put_((target,), values.index_select(0, order))
        self._pointer.add_(kept).remainder_(k)
        self._fill.add_(kept).clamp_(max=k)

    def full_means(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ids, means)``: the groups whose buffer is full, and their means (the estimates)."""
        ids = torch.nonzero(self.fill == self.size).flatten()
        return ids, self.values.index_select(0, ids).sum(dim=1) / self.size

    @property
    def is_full(self) -> torch.Tensor:
        """Boolean ``(G,)``: which groups have ``k`` values, hence an estimate."""
        return self.fill == self.size

    def means(self) -> torch.Tensor:
        """``(G,)`` mean of the stored values per group; NaN for empty groups."""
        return self.values.sum(dim=1) / self.fill.to(self.values.dtype)

    def contents(self, group: int) -> torch.Tensor:
        """Stored values of one group, oldest first (for inspection and tests)."""
        n = int(self.fill[group])
        if n < self.size:
            return self.values[group, :n].clone()
        return torch.roll(self.values[group], -int(self.pointer[group]))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"values": self.values.clone(), "pointer": self.pointer.clone(), "fill": self.fill.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if tuple(state["values"].shape) != (self.num_groups, self.size):
            raise ValueError(
                f"buffer state has shape {tuple(state['values'].shape)}, "
                f"expected {(self.num_groups, self.size)}"
            )
        self.values.copy_(state["values"])
        self.pointer.copy_(state["pointer"])
        self.fill.copy_(state["fill"])
