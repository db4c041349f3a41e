"""The dataset a config names: ``data.name`` → its loader, with ``data``'s keys as arguments."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .adult import load_adult
from .images import ImageData
from .tabular import TabularData, load_csv

if TYPE_CHECKING:
    from ..config import ExperimentConfig


def load_data(cfg: ExperimentConfig) -> TabularData | ImageData:
    """The dataset of ``cfg.data``: tabular data in memory, or image datasets on disk."""
    d = cfg.data
    protected = list(d.protected)
    split_seed = cfg.seed if d.split_seed is None else d.split_seed
    size = {"image_size": d.image_size} if d.image_size is not None else {}
    if d.name == "utkface":
        from .utkface import load_utkface

        return load_utkface(
            d.root,
            target=d.target or "race",
            protected=protected,
            seed=split_seed,
            test_fraction=d.test_fraction,
            val_fraction=d.val_fraction,
            transforms=d.transforms,
            split=d.split,
            **size,
        )
    if d.name == "fairface":
        from .fairface import load_fairface

        return load_fairface(
            d.root,
            target=d.target or "gender",
            protected=protected,
            seed=split_seed,
            val_fraction=d.val_fraction,
            transforms=d.transforms,
            **size,
        )
    if d.name == "cifar100":
        from .cifar100 import load_cifar100

        return load_cifar100(
            d.root, seed=split_seed, val_fraction=d.val_fraction, transforms=d.transforms, **size
        )
    if d.name == "adult":
        return load_adult(
            protected=protected, val_fraction=d.val_fraction, seed=split_seed, drop_protected=d.drop_protected
        )
    return load_csv(
        d.path,
        target=d.target,
        positive_value=d.positive_value,
        protected=protected,
        categorical=d.categorical,
        numeric=d.numeric,
        test_path=d.test_path,
        val_fraction=d.val_fraction,
        test_fraction=d.test_fraction,
        seed=split_seed,
        drop_protected=d.drop_protected,
        header=d.header,
        column_names=d.column_names,
        delimiter=d.delimiter,
    )
