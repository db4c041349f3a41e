"""Protected attributes to integer group ids.

An ``(N, A)`` matrix of attribute codes maps to intersectional group ids in ``[0, G)``
with ``G = prod_a |values_a|`` (mixed radix, the last attribute varying fastest):

    id(n) = sum_a codes[n, a] * prod_{b > a} |values_b|

Groups that have no sample in some split simply have a count of 0 there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import torch

from .config.choices import GROUPING_MODES
from .errors import DataError


@dataclass(frozen=True)
class GroupIndex:
    """Intersectional groups over the protected attributes.

    Attributes:
        attribute_names: names of the protected attributes, e.g. ``["race", "sex"]``.
        attribute_values: value names of each attribute, in code order.
    """

    attribute_names: tuple[str, ...]
    attribute_values: tuple[tuple[str, ...], ...]

    @classmethod
    def from_lists(cls, names: Sequence[str], values: Sequence[Sequence[str]]) -> GroupIndex:
        if len(names) == 0:
            raise DataError("no protected attribute given; name at least one column in data.protected")
        if len(names) != len(values):
            raise DataError(f"{len(names)} protected attribute names but {len(values)} value lists")
        for name, vals in zip(names, values, strict=True):
            if len(vals) < 2:
                raise DataError(
                    f"protected attribute {name!r} has a single value {list(vals)!r}; "
                    "choose an attribute with at least 2 values"
                )
        return cls(tuple(names), tuple(tuple(v) for v in values))

    @property
    def cardinalities(self) -> tuple[int, ...]:
        return tuple(len(v) for v in self.attribute_values)

    @property
    def num_groups(self) -> int:
        out = 1
        for c in self.cardinalities:
            out *= c
        return out

    @property
    def names(self) -> list[str]:
        """Group names such as ``"White|Male"``, indexed by group id."""
        names = [""]
        for values in self.attribute_values:
            names = [f"{prefix}|{v}" if prefix else v for prefix in names for v in values]
        return names

    @cached_property
    def strides(self) -> tuple[int, ...]:
        """Mixed-radix weights: ``stride[a] = prod_{b > a} |values_b|``."""
        out, step = [], 1
        for card in reversed(self.cardinalities):
            out.append(step)
            step *= card
        return tuple(reversed(out))

    def ids(self, codes: torch.Tensor, check: bool = True) -> torch.Tensor:
        """Map an ``(N, A)`` int tensor of attribute codes to ``(N,)`` group ids (long).

        Called on every training batch: the range check is one ``aminmax`` and one host
        read, and the ids one multiply-add per attribute. ``check=False`` skips the range
        check (and its host read), for codes already checked, e.g. a whole training split's
        before its stage (the fixed-shape statistics of the constraints)."""
        if codes.dim() != 2 or codes.shape[1] != len(self.attribute_names):
            raise DataError(
                f"attribute codes have shape {tuple(codes.shape)}; expected (N, {len(self.attribute_names)})"
            )
        if check and codes.numel():
            low, high = torch.aminmax(codes, dim=0)
            bounds = torch.cat([low, high]).tolist()
            width = len(self.cardinalities)
            if min(bounds[:width]) < 0 or any(
                h >= c for h, c in zip(bounds[width:], self.cardinalities, strict=True)
            ):
                raise DataError("attribute codes out of range; codes must lie in [0, number of values)")
        codes = codes.long()
        ids = codes[:, -1]
        for column, stride in enumerate(self.strides[:-1]):
            ids = ids + codes[:, column] * stride
        return ids if len(self.strides) > 1 else ids.clone()  # never a view of the caller's codes


def present_cells(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The intersectional cells of ``(N, A)`` codes whose value sets are not declared (no
    :class:`GroupIndex`): the distinct rows ``(K, A)`` in lexicographic order, each row's cell
    in ``[0, K)``, and each cell's count."""
    return torch.unique(codes, dim=0, return_inverse=True, return_counts=True)


@dataclass(frozen=True)
class Grouping:
    """Groups over some of the protected attributes, and each sample's memberships.

    ``mode="intersectional"``: one group per combination of the chosen attributes; every
    sample is in exactly one group. ``mode="marginal"``: each value of each attribute is
    its own group, ``G = Σ_a |values_a|``; a sample is in one group per attribute.

    Memberships are a pair of ``(M,)`` index tensors ``(rows, groups)``: sample
    ``rows[m]`` belongs to group ``groups[m]``. Groups are ordered sample by sample, so
    per-group order follows batch order. The groups of one *partition* (all groups of an
    intersectional grouping, or the groups of one attribute in marginal mode) split the
    samples: partition ``partition[g]`` is where group ``g``'s "overall" is measured.
    """

    index: GroupIndex  # the attributes used, in the order given
    columns: tuple[int, ...]  # their columns in the (N, A) code matrix of the data
    mode: str

    @classmethod
    def create(
        cls, data_index: GroupIndex, attributes: Sequence[str] | None = None, mode: str = "intersectional"
    ):
        """Select ``attributes`` (default: all) of the data's protected attributes."""
        if mode not in GROUPING_MODES:
            raise DataError(f"group mode must be intersectional or marginal, got {mode!r}")
        names = list(attributes) if attributes else list(data_index.attribute_names)
        known = data_index.attribute_names
        for name in names:
            if name not in known:
                raise DataError(
                    f"attribute {name!r} is not a protected attribute of the data; choose from "
                    f"{', '.join(known)} (or add it to data.protected)"
                )
        if len(set(names)) != len(names):
            raise DataError(f"attributes {names} name an attribute twice")
        columns = tuple(known.index(n) for n in names)
        values = [data_index.attribute_values[c] for c in columns]
        return cls(GroupIndex.from_lists(names, values), columns, mode)

    @property
    def num_groups(self) -> int:
        if self.mode == "intersectional":
            return self.index.num_groups
        return sum(self.index.cardinalities)

    @property
    def names(self) -> list[str]:
        if self.mode == "intersectional":
            return self.index.names
        return [
            f"{a}={v}"
            for a, vals in zip(self.index.attribute_names, self.index.attribute_values, strict=True)
            for v in vals
        ]

    @property
    def partition(self) -> torch.Tensor:
        """``(G,)`` partition id of each group."""
        if self.mode == "intersectional":
            return torch.zeros(self.num_groups, dtype=torch.long)
        card = torch.tensor(self.index.cardinalities)
        return torch.repeat_interleave(torch.arange(len(card)), card)

    @cached_property
    def _offset_values(self) -> list[int]:
        """Marginal mode: the id of each attribute's first value (exclusive cumulative counts)."""
        card = self.index.cardinalities
        return [sum(card[:a]) for a in range(len(card))]

    @cached_property
    def _constants(self) -> dict[tuple[str, torch.device], torch.Tensor]:
        return {}

    def _constant(self, name: str, values: list[int], device: torch.device) -> torch.Tensor:
        """``values`` as a long tensor on ``device``, copied there once: a host-to-device copy
        of pageable memory makes the host wait, and memberships run on every batch."""
        key = (name, device)
        if key not in self._constants:
            self._constants[key] = torch.tensor(values, dtype=torch.long, device=device)
        return self._constants[key]

    @property
    def num_partitions(self) -> int:
        return 1 if self.mode == "intersectional" else len(self.columns)

    def memberships(self, codes: torch.Tensor, check: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rows, groups)`` for an ``(B, A)`` matrix of the data's attribute codes
        (``check``: see :meth:`GroupIndex.ids`)."""
        n = codes.shape[0]
        if self.mode == "intersectional":
            return torch.arange(n, device=codes.device), self.group_ids(codes, check)
        offsets = self._constant("offsets", self._offset_values, codes.device)
        groups = (self._selected(codes).long() + offsets).flatten()
        rows = torch.arange(n, device=codes.device).repeat_interleave(len(self.columns))
        return rows, groups

    def group_ids(self, codes: torch.Tensor, check: bool = False) -> torch.Tensor:
        """``(B,)`` intersectional group ids of ``(B, A)`` codes, without the membership rows
        (one per sample, in order); ``check``: see :meth:`GroupIndex.ids`."""
        assert self.mode == "intersectional", "marginal groupings have several memberships per sample"
        return self.index.ids(self._selected(codes), check)

    def _selected(self, codes: torch.Tensor) -> torch.Tensor:
        """The columns of this grouping's attributes (``codes`` itself when it is all of them)."""
        if self.columns == tuple(range(codes.shape[1] if codes.dim() == 2 else -1)):
            return codes
        return codes.index_select(1, self._constant("columns", list(self.columns), codes.device))

    @classmethod
    def single(cls, num_groups: int, name: str = "group") -> Grouping:
        """One attribute whose codes are the group ids ``0..G−1`` (tests, custom code)."""
        return cls(GroupIndex((name,), (tuple(str(g) for g in range(num_groups)),)), (0,), "intersectional")
