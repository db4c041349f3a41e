"""The dataset a config names: ``data.name`` → its loader in :data:`~constrained_fairness.registry.DATASETS`,
called with the ``data`` section and the split seed.

Built in: ``adult``, ``csv``, ``utkface``, ``fairface`` and ``cifar100``. A loader of one's own
is registered with ``@DATASETS.register("name")`` or named as ``package.module:function``; it
may return one ``torch.utils.data.Dataset`` of ``(input, target, attributes)``, which
:func:`~constrained_fairness.data.custom.from_dataset` splits as the built-in image sets are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ..errors import DataError
from ..registry import DATASETS
from .adult import load_adult
from .cifar100 import load_cifar100
from .custom import from_dataset
from .fairface import load_fairface
from .images import ImageData
from .tabular import TabularData, load_csv
from .utkface import load_utkface

if TYPE_CHECKING:
    from ..config import DataConfig, ExperimentConfig


@DATASETS.register("adult")
def _adult(d: DataConfig, seed: int) -> TabularData:
    return load_adult(
        protected=list(d.protected), val_fraction=d.val_fraction, seed=seed, drop_protected=d.drop_protected
    )


@DATASETS.register("csv")
def _csv(d: DataConfig, seed: int) -> TabularData:
    return load_csv(
        d.path,
        target=d.target,
        positive_value=d.positive_value,
        protected=list(d.protected),
        categorical=d.categorical,
        numeric=d.numeric,
        test_path=d.test_path,
        val_fraction=d.val_fraction,
        test_fraction=d.test_fraction,
        seed=seed,
        drop_protected=d.drop_protected,
        header=d.header,
        column_names=d.column_names,
        delimiter=d.delimiter,
    )


def _image_options(d: DataConfig, seed: int) -> dict[str, Any]:
    """The keys every image loader takes."""
    size = {"image_size": d.image_size} if d.image_size is not None else {}
    return {"seed": seed, "val_fraction": d.val_fraction, "transforms": d.transforms, **size}


@DATASETS.register("utkface")
def _utkface(d: DataConfig, seed: int) -> ImageData:
    return load_utkface(
        d.root,
        target=d.target or "race",
        protected=list(d.protected),
        test_fraction=d.test_fraction,
        split=d.split,
        **_image_options(d, seed),
    )


@DATASETS.register("fairface")
def _fairface(d: DataConfig, seed: int) -> ImageData:
    return load_fairface(
        d.root, target=d.target or "gender", protected=list(d.protected), **_image_options(d, seed)
    )


@DATASETS.register("cifar100")
def _cifar100(d: DataConfig, seed: int) -> ImageData:
    return load_cifar100(d.root, **_image_options(d, seed))


def load_data(cfg: ExperimentConfig, data: Any = None) -> TabularData | ImageData:
    """The dataset of ``cfg.data`` (tabular data in memory, or datasets of its splits), or
    ``data`` given in Python instead, as :func:`as_run_data` makes it."""
    d = cfg.data
    split_seed = cfg.seed if d.split_seed is None else d.split_seed
    if data is None:
        data = DATASETS.resolve(d.name)(d, split_seed)
    return as_run_data(data, d, split_seed)


def as_run_data(data: Any, d: DataConfig, seed: int) -> TabularData | ImageData:
    """What a loader returned, as the data of a run: split data as it is, one dataset split
    with ``d.val_fraction`` and ``d.test_fraction`` (its attributes named ``d.protected``
    unless it names them)."""
    if isinstance(data, (TabularData, ImageData)):
        return data
    if isinstance(data, torch.utils.data.Dataset):
        return from_dataset(
            data,
            seed=seed,
            val_fraction=d.val_fraction,
            test_fraction=d.test_fraction,
            attribute_names=list(d.protected),
        )
    raise DataError(
        f"the {d.name!r} loader returned a {type(data).__name__}; return TabularData, ImageData "
        "or a torch.utils.data.Dataset of (input, target, attributes)"
    )
