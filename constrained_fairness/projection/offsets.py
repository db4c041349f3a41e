"""Inference on small batches: per-cell offsets from a projected reference batch."""

from __future__ import annotations

import torch

from ..errors import DataError
from ..groups import present_cells
from .checks import check_inputs, inward_bounds
from .function import FairProjectionFunction


def projection_offsets(
    predictions: torch.Tensor,
    attributes: torch.Tensor,
    tolerance: float,
    bounds: tuple[float, float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Project a reference batch; return (group_ids (G, A), offsets (G,)) with the mean of z − ŷ per cell."""
    attributes, tolerance, checked = check_inputs(predictions, attributes, tolerance, bounds)
    with torch.no_grad():
        z = FairProjectionFunction.apply(predictions, attributes, tolerance, checked)
        delta = z.reshape(-1).to(torch.float64) - predictions.reshape(-1).to(torch.float64)
        group_ids, inverse, counts = present_cells(attributes)
        sums = torch.zeros(group_ids.shape[0], dtype=torch.float64, device=delta.device)
        sums.index_add_(0, inverse, delta)
    return group_ids, (sums / counts.to(torch.float64)).to(predictions.dtype)


def apply_offsets(
    predictions: torch.Tensor,
    attributes: torch.Tensor,
    table: tuple[torch.Tensor, torch.Tensor],
    bounds: tuple[float, float] | None = None,
) -> torch.Tensor:
    """Add the per-cell offsets of ``table`` (from projection_offsets) to ``predictions``; clip to bounds."""
    attributes, _, checked = check_inputs(predictions, attributes, 0.0, bounds)
    group_ids, offsets = (t.to(predictions.device) for t in table)
    if group_ids.dim() != 2 or group_ids.shape[1] != attributes.shape[1]:
        raise DataError(
            f"offset table has group_ids of shape {tuple(group_ids.shape)} but attributes have "
            f"{attributes.shape[1]} columns; build the table with the same attributes"
        )
    n_groups = group_ids.shape[0]
    _, inverse = torch.unique(
        torch.cat([group_ids, attributes.to(group_ids.dtype)]), dim=0, return_inverse=True
    )
    lookup = torch.full((int(inverse.max()) + 1,), -1, dtype=torch.long, device=predictions.device)
    lookup[inverse[:n_groups]] = torch.arange(n_groups, device=predictions.device)
    idx = lookup[inverse[n_groups:]]
    if bool((idx < 0).any()):
        missing = attributes[int(torch.nonzero(idx < 0)[0, 0])].tolist()
        raise DataError(
            f"attribute cell {missing} has no offset in the table; build the table on a reference batch "
            "that contains every cell"
        )
    out = predictions + offsets[idx].to(predictions.dtype).reshape(predictions.shape)
    if checked is not None:
        out = out.clamp(*inward_bounds(checked, predictions.dtype))
    return out
