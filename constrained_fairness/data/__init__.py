"""Data loading: tabular CSV / in-memory loaders, the bundled UCI Adult data set, and image data sets
(UTKFace, FairFace, CIFAR-100) read from their original on-disk formats."""

from __future__ import annotations

from constrained_fairness.data.adult import load_adult
from constrained_fairness.data.cifar100 import load_cifar100
from constrained_fairness.data.fairface import load_fairface
from constrained_fairness.data.images import ImageData, LabeledImages
from constrained_fairness.data.tabular import TabularData, TabularSplit, from_records, load_csv
from constrained_fairness.data.transforms import image_transforms
from constrained_fairness.data.utkface import load_utkface

__all__ = [
    "ImageData",
    "LabeledImages",
    "TabularData",
    "TabularSplit",
    "from_records",
    "image_transforms",
    "load_adult",
    "load_cifar100",
    "load_csv",
    "load_fairface",
    "load_utkface",
]
