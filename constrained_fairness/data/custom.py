"""A data set of one's own: one ``torch.utils.data.Dataset`` whose item ``i`` is
``(input, target, attributes)``, split into train / val / test for the protocol.

The split is :func:`~constrained_fairness.data.splits.split_indices` (seeded, the same rule as
the built-in image sets). Names come from the dataset where it has them (``class_names``,
``attribute_names``, ``attribute_values``), else from the arguments, else from the codes:
classes ``"0" … "C−1"`` and attribute values ``"0" … "V−1"``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import DataError
from .images import ImageData, dataset_labels
from .splits import split_indices


def from_dataset(
    dataset: torch.utils.data.Dataset,
    *,
    seed: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    attribute_names: Sequence[str] | None = None,
    attribute_values: Sequence[Sequence[str]] | None = None,
    class_names: Sequence[str] | None = None,
) -> ImageData:
    """Split ``dataset`` into the train / val / test :class:`ImageData` of a run.

    Targets must be class indices in ``[0, C)`` and attributes ``(A,)`` integer codes per item,
    code ``v`` of attribute ``a`` in ``[0, V_a)``. The labels are read from ``targets`` and
    ``attributes`` tensors of the dataset when it has them, else from its items (once).
    """
    targets, attributes = dataset_labels(dataset)
    if attributes.dim() == 1:
        attributes = attributes[:, None]
    if len(targets) == 0:
        raise DataError(f"the {type(dataset).__name__} has no items; supply a non-empty dataset")
    if int(targets.min()) < 0 or int(attributes.min()) < 0:
        raise DataError("targets and attribute codes must be non-negative integers; encode them as 0, 1, ...")
    names = list(getattr(dataset, "attribute_names", None) or attribute_names or [])
    width = attributes.shape[1]
    if len(names) != width:
        raise DataError(
            f"the dataset has {width} attribute column(s) but {len(names)} name(s) {names}; "
            "set data.protected (or attribute_names) to one name per column"
        )
    values = getattr(dataset, "attribute_values", None) or attribute_values
    if values is None:
        values = [[str(v) for v in range(int(attributes[:, a].max()) + 1)] for a in range(width)]
    classes = getattr(dataset, "class_names", None) or class_names
    if classes is None:
        classes = [str(c) for c in range(int(targets.max()) + 1)]
    train, val, test = split_indices(
        len(targets), seed=seed, val_fraction=val_fraction, test_fraction=test_fraction
    )
    subset = torch.utils.data.Subset
    return ImageData(
        train=subset(dataset, train.tolist()),
        val=subset(dataset, val.tolist()),
        test=subset(dataset, test.tolist()),
        class_names=list(classes),
        attribute_names=names,
        attribute_values=[list(v) for v in values],
    )
