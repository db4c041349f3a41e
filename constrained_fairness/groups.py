"""Protected attributes to integer group ids.

An ``(N, A)`` matrix of attribute codes maps to intersectional group ids in ``[0, G)``
with ``G = prod_a |values_a|`` (mixed radix, the last attribute varying fastest):

    id(n) = sum_a codes[n, a] * prod_{b > a} |values_b|

Groups that have no sample in some split simply have a count of 0 there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

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

    def ids(self, codes: torch.Tensor) -> torch.Tensor:
        """Map an ``(N, A)`` int tensor of attribute codes to ``(N,)`` group ids (long)."""
        if codes.dim() != 2 or codes.shape[1] != len(self.attribute_names):
            raise DataError(
                f"attribute codes have shape {tuple(codes.shape)}; expected (N, {len(self.attribute_names)})"
            )
        card = torch.tensor(self.cardinalities, dtype=torch.long, device=codes.device)
        if codes.numel() and (bool((codes < 0).any()) or bool((codes >= card).any())):
            raise DataError("attribute codes out of range; codes must lie in [0, number of values)")
        strides = torch.ones_like(card)
        if len(card) > 1:
            strides[:-1] = torch.flip(torch.cumprod(torch.flip(card[1:], [0]), 0), [0])
        return (codes.long() * strides).sum(dim=1)
