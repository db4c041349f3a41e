"""Tests of the image cache (data/cache.py), its batch pipelines (data/transforms.py) and CachedBatches.

Every data set is built in its real on-disk format (tests/image_fixtures.py). The deterministic pipelines
must give the very bits of the DataLoader path; the random ones the distribution of torchvision's crops and
flips, replayed exactly for a seed (and on a resume).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from constrained_fairness.config import ExperimentConfig
from constrained_fairness.data import ImageData, cache_files, load_cifar100, load_fairface, load_utkface
from constrained_fairness.data.cache import CachedImages, cache_image_data, cached_source
from constrained_fairness.data.images import LabeledImages
from constrained_fairness.data.transforms import (
    Augmentation,
    apply_batch_transform,
    augmentation_generator,
    batch_pipeline,
    draw_augmentation,
)
from constrained_fairness.errors import DataError
from constrained_fairness.experiment.stages import StageTrainers
from constrained_fairness.training.batches import CachedBatches, LoaderBatches, epoch_order, global_batches
from constrained_fairness.training.evaluation import iterate_split

from ..image_fixtures import make_cifar100, make_fairface, make_utkface

# (loader, keyword arguments) per case: sizes where the resize does something (UTKFace 32 -> 16, FairFace
# 12 -> 8, CIFAR 32 -> 24) and CIFAR at its native 32 (no resize, random crops of padding 4).
CASES = {
    "utkface": (load_utkface, {"image_size": 16}),
    "fairface": (load_fairface, {"image_size": 8}),
    "cifar100": (load_cifar100, {"image_size": 32}),
    "cifar100-24": (load_cifar100, {"image_size": 24}),
}
STYLES = ("augmented", "reference")


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("images")
    return {
        "utkface": make_utkface(base / "UTKFace", n=20, size=32),
        "fairface": make_fairface(base / "fairface", n_train=20, n_val=9),
        "cifar100": make_cifar100(base / "cifar100", n_train=40, n_test=13),
    }


def load(roots: dict[str, Path], case: str, style: str, **kwargs: object) -> ImageData:
    loader, options = CASES[case]
    root = roots[case.split("-")[0]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return loader(root, **{"transforms": style, "val_fraction": 0.25, **options, **kwargs})


def assert_same_batches(expected: list, actual: list) -> None:
    assert len(expected) == len(actual) > 0
    for one, other in zip(expected, actual, strict=True):
        for a, b in zip(one, other, strict=True):
            assert a.dtype == b.dtype and a.shape == b.shape
            assert torch.equal(a, b)


# --------------------------------------------------------------------------------------------------------
# (a) Deterministic pipelines: the bits of the DataLoader path.


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("case", list(CASES))
def test_deterministic_batches_equal_dataloader(
    roots: dict[str, Path], case: str, style: str, tmp_path: Path
) -> None:
    data = load(roots, case, style)
    splits = {"train_eval": data.train_eval, "val": data.val, "test": data.test}
    if not data.train.pipeline.random:  # the reference CIFAR-100 train pipeline does not augment
        splits["train"] = data.train
    for name, split in splits.items():
        assert not split.pipeline.random, name
        expected_eval = list(iterate_split(split, 6))
        expected_train = list(LoaderBatches(split, 5, seed=3).epoch(2))
        expected_rank1 = list(LoaderBatches(split, 4, seed=1, rank=1, world=2).epoch(0))
        for mode in ("memory", "device"):
            cached = cached_source(split, mode, "cpu", cache_dir=tmp_path / "cache")
            assert_same_batches(expected_eval, list(iterate_split(cached, 6)))
            batches = CachedBatches(cached, 5, seed=3)
            assert len(batches) == len(LoaderBatches(split, 5, seed=3))
            assert_same_batches(expected_train, list(batches.epoch(2)))
            assert_same_batches(
                expected_rank1, list(CachedBatches(cached, 4, seed=1, rank=1, world=2).epoch(0))
            )


def test_float_conversion_follows_the_style() -> None:
    """v2 multiplies by 1/255, v1 divides by 255: the last bits differ, so the field is needed."""
    x = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16).expand(1, 3, 16, 16)
    mul = batch_pipeline("utkface", 16, False, "augmented")
    div = dataclasses.replace(mul, to_float="div")
    assert not torch.equal(apply_batch_transform(mul, x), apply_batch_transform(div, x))
    reference = batch_pipeline("utkface", 16, False, "reference")
    assert reference.to_float == "div" and mul.to_float == "mul"
    assert torch.equal(apply_batch_transform(div, x), apply_batch_transform(reference, x))
    assert torch.equal(x, torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16).expand(1, 3, 16, 16))


def test_cifar_in_memory_needs_no_file(roots: dict[str, Path], tmp_path: Path) -> None:
    data = load(roots, "cifar100", "augmented")
    cached = cached_source(data.test, "memory", "cpu", cache_dir=tmp_path / "unused")
    assert cached.path is None and not (tmp_path / "unused").exists()
    assert np.shares_memory(cached.host.numpy(), data.test.array)  # the array itself, no copy


# --------------------------------------------------------------------------------------------------------
# (b) Flips and crops.


def test_flips_are_mirrors_of_the_deterministic_images(roots: dict[str, Path], tmp_path: Path) -> None:
    data = load(roots, "utkface", "augmented")
    train = cached_source(data.train, "device", "cpu", cache_dir=tmp_path)
    plain = next(iterate_split(cached_source(data.train_eval, "memory", "cpu", cache_dir=tmp_path), 1000))[0]
    assert train.path == cached_source(data.train_eval, "memory", "cpu", cache_dir=tmp_path).path  # shared
    batches = CachedBatches(train, len(train), shuffle=False, seed=5)
    flips, epochs = [], 30
    for epoch in range(epochs):
        [(inputs, _, _)] = list(batches.epoch(epoch))
        same = (inputs == plain).flatten(1).all(1)
        mirrored = (inputs == torch.flip(plain, dims=[-1])).flatten(1).all(1)
        assert bool((same | mirrored).all())
        flips.append(mirrored & ~same)
    memory = cached_source(data.train, "memory", "cpu", cache_dir=tmp_path)
    again = next(iter(CachedBatches(memory, len(train), shuffle=False, seed=5).epoch(3)))
    assert torch.equal(again[0], next(iter(batches.epoch(3)))[0])  # same seed: same batch, memory or device
    rate = torch.stack(flips).float()
    trials = rate.numel()
    assert abs(rate.sum().item() - trials / 2) < 5 * (trials / 4) ** 0.5  # binomial(p=1/2), 5 sigma
    assert any(not torch.equal(flips[0], f) for f in flips[1:])  # epochs differ


def test_crop_offsets_and_flips_follow_torchvision() -> None:
    """The gathers equal torchvision's pad, crop and flip for given offsets; the offsets are uniform."""
    from torchvision.transforms.v2 import functional as F

    pipeline = batch_pipeline("cifar100", 32, True, "augmented")
    assert pipeline.crop_padding == 4 and pipeline.flip
    images = torch.randint(
        0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    aug = draw_augmentation(pipeline, 64, augmentation_generator(0, 0, 0))
    assert aug is not None and aug.top is not None and aug.left is not None
    out = apply_batch_transform(pipeline, images, aug)
    for b in range(64):
        ref = F.pad(images[b], [4, 4, 4, 4], fill=0)
        ref = F.crop(ref, int(aug.top[b]), int(aug.left[b]), 32, 32)
        if aug.flip[b]:
            ref = F.horizontal_flip(ref)
        ref = F.normalize(F.to_dtype(ref, torch.float32, scale=True), list(pipeline.mean), list(pipeline.std))
        assert torch.equal(out[b], ref)
    draws = [
        draw_augmentation(pipeline, 500, augmentation_generator(1, e, k)) for e in range(2) for k in range(2)
    ]
    top = torch.cat([d.top for d in draws])  # type: ignore[union-attr]
    left = torch.cat([d.left for d in draws])  # type: ignore[union-attr]
    flip = torch.cat([d.flip for d in draws])  # type: ignore[union-attr]
    n = len(top)
    for offsets in (top, left):
        assert int(offsets.min()) == 0 and int(offsets.max()) == 8
        counts = torch.bincount(offsets, minlength=9).float()
        p = 1 / 9
        assert bool(((counts - n * p).abs() < 5 * (n * p * (1 - p)) ** 0.5).all())
    assert abs(flip.sum().item() - n / 2) < 5 * (n / 4) ** 0.5
    assert not torch.equal(draws[0].flip, draws[1].flip)  # another batch, other draws


def test_augmentation_does_not_depend_on_world_size(roots: dict[str, Path], tmp_path: Path) -> None:
    data = load(roots, "cifar100", "augmented")
    cached = cached_source(data.train, "device", "cpu")
    whole = list(CachedBatches(cached, 8, seed=2).epoch(1))
    ranks = [list(CachedBatches(cached, 8, seed=2, rank=r, world=2).epoch(1)) for r in range(2)]
    for k, batch in enumerate(whole):
        for t in range(3):
            assert torch.equal(batch[t], torch.cat([ranks[0][k][t], ranks[1][k][t]]))


# --------------------------------------------------------------------------------------------------------
# (c) Reuse, rebuilds, corruption, errors.


def count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    decode = cache_files.decode_image_file

    def counting(path: os.PathLike | str) -> torch.Tensor:
        calls.append(str(path))
        return decode(path)

    monkeypatch.setattr(cache_files, "decode_image_file", counting)
    return calls


def utk_copy(roots: dict[str, Path], tmp_path: Path) -> Path:
    folder = tmp_path / "UTKFace"
    folder.mkdir()
    for file in sorted(roots["utkface"].iterdir()):
        if file.is_file():
            (folder / file.name).write_bytes(file.read_bytes())
    return folder


def test_cache_reuse_and_rebuilds(
    roots: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = utk_copy(roots, tmp_path)
    calls = count_decodes(monkeypatch)
    data = load({"utkface": folder}, "utkface", "augmented")
    n = len(data.train)
    first = cached_source(data.train, "memory", "cpu", progress=False)
    assert len(calls) == n and first.path is not None and first.path.parent == folder / ".cfair_cache"
    assert sorted(p.suffix for p in first.path.parent.iterdir()) == [
        ".json",
        ".lock",
        ".npy",
    ]  # no temp files
    calls.clear()
    again = cached_source(data.train_eval, "memory", "cpu")
    assert calls == [] and again.path == first.path  # reused, shared by train and train_eval
    manifest = json.loads(first.path.with_suffix(".json").read_text())
    assert manifest["files"] == [os.path.abspath(p) for p in data.train.paths] and manifest["shape"] == [
        n,
        3,
        16,
        16,
    ]

    victim = data.train.paths[0]  # a new mtime rebuilds
    stat = victim.stat()
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    cached_source(data.train, "memory", "cpu")
    assert len(calls) == n
    calls.clear()
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(victim, format="PNG")  # another size
    rebuilt = cached_source(data.train_eval, "memory", "cpu")
    assert len(calls) == n
    assert torch.equal(next(iterate_split(rebuilt, 1))[0], next(iterate_split(data.train_eval, 1))[0])
    calls.clear()
    cached_source(data.train, "memory", "cpu")
    assert calls == []

    make_utkface(tmp_path / "more", n=21, size=32)  # a file added: the split changes, a new cache
    added = sorted((tmp_path / "more").iterdir())[-1]
    (folder / added.name).write_bytes(added.read_bytes())
    grown = load({"utkface": folder}, "utkface", "augmented")
    cached_source(grown.train, "memory", "cpu")
    assert len(calls) == len(grown.train)


def test_corrupt_cache_is_rebuilt_with_a_warning(
    roots: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = load(roots, "fairface", "augmented")
    cache_dir = tmp_path / "cache"
    good = cached_source(data.val, "memory", "cpu", cache_dir=cache_dir)
    expected = list(iterate_split(good, 100))
    npy = good.path
    assert npy is not None
    manifest = npy.with_suffix(".json")
    calls = count_decodes(monkeypatch)

    def corrupt_and_reload(break_it: Callable[[], object], match: str) -> None:
        del calls[:]
        break_it()
        with pytest.warns(UserWarning, match=match):
            rebuilt = cached_source(data.val, "device", "cpu", cache_dir=cache_dir)
        assert len(calls) == len(data.val)
        assert_same_batches(expected, list(iterate_split(rebuilt, 100)))

    size = npy.stat().st_size
    corrupt_and_reload(lambda: os.truncate(npy, size // 2), re.escape(str(npy)))
    corrupt_and_reload(lambda: npy.write_bytes(b"not a numpy file"), re.escape(str(npy)))
    corrupt_and_reload(lambda: manifest.write_text("{"), re.escape(str(manifest)))

    def wrong_shape() -> None:
        content = json.loads(manifest.read_text())
        content["shape"][2] += 1
        manifest.write_text(json.dumps(content))

    corrupt_and_reload(wrong_shape, re.escape(str(npy)))
    del calls[:]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cached_source(data.val, "memory", "cpu", cache_dir=cache_dir)  # whole again: no warning, no decode
    assert calls == []


def test_reference_pipeline_needs_one_image_size(roots: dict[str, Path], tmp_path: Path) -> None:
    folder = utk_copy(roots, tmp_path)
    odd = sorted(folder.glob("*.jpg"))[5]
    Image.fromarray(np.zeros((30, 32, 3), dtype=np.uint8)).save(odd, format="JPEG")
    data = load(
        {"utkface": folder}, "utkface", "reference", split="seeded", val_fraction=0.0, test_fraction=0.2
    )
    split = next(s for s in (data.train, data.test) if odd in s.paths)
    with pytest.raises(DataError, match=re.escape(str(odd)) + r".*30x32.*data\.cache: none") as error:
        cached_source(split, "memory", "cpu", cache_dir=tmp_path / "cache")
    assert "\n" not in str(error.value)
    assert [p.name for p in (tmp_path / "cache").iterdir() if p.suffix != ".lock"] == []  # nothing left
    augmented = load({"utkface": folder}, "utkface", "augmented", split="seeded", val_fraction=0.0)
    cached_source(augmented.train, "memory", "cpu", cache_dir=tmp_path / "cache")  # the resize fixes it


def test_factory_errors(roots: dict[str, Path], tmp_path: Path) -> None:
    data = load(roots, "utkface", "augmented")
    with pytest.raises(DataError, match=re.escape("data.cache='none'")):
        cached_source(data.val, "none", "cpu")
    bare = LabeledImages(data.val.paths, data.val.targets, data.val.attributes)
    with pytest.raises(DataError, match="pipeline=batch_pipeline"):
        cached_source(bare, "memory", "cpu", cache_dir=tmp_path)
    given = cached_source(bare, "memory", "cpu", cache_dir=tmp_path, pipeline=data.val.pipeline)
    assert_same_batches(list(iterate_split(data.val, 4)), list(iterate_split(given, 4)))
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(DataError, match=re.escape("data.cache_dir")):
        cached_source(data.val, "memory", "cpu", cache_dir=blocked / "cache")


def test_cache_image_data_and_stage_batches(roots: dict[str, Path], tmp_path: Path) -> None:
    data = load(roots, "utkface", "augmented")
    cached = cache_image_data(data, "device", "cpu", cache_dir=tmp_path)
    assert all(
        isinstance(s, CachedImages) for s in (cached.train, cached.train_eval, cached.val, cached.test)
    )
    assert cached.train.images is cached.train_eval.images  # one device copy for the same files
    targets, attributes = cached.labels("val")
    assert torch.equal(targets, data.val.targets) and torch.equal(attributes, data.val.attributes)
    assert cached.train_eval[0][0].shape == (3, 16, 16)

    cfg = ExperimentConfig()
    cfg.data.cache, cfg.data.cache_dir, cfg.seed = "memory", str(tmp_path), 4
    stages = StageTrainers(cfg, data.train, data.train, None, torch.device("cpu"), 0, 1, None, False, "val")  # type: ignore[arg-type]
    batches = stages.batches(4)
    assert isinstance(batches, CachedBatches) and batches.source.path == cached.train.path
    assert_same_batches(list(CachedBatches(cached.train, 4, seed=4).epoch(0)), list(batches.epoch(0)))
    cfg.data.cache = "none"
    assert isinstance(stages.batches(4), LoaderBatches)


# --------------------------------------------------------------------------------------------------------
# (d) A mid-epoch resume replays the tail, augmentation included.


@pytest.mark.parametrize("case", ["utkface", "cifar100"])
def test_resume_mid_epoch_replays_the_tail(roots: dict[str, Path], case: str, tmp_path: Path) -> None:
    data = load(roots, case, "augmented")
    cached = cached_source(data.train, "device", "cpu", cache_dir=tmp_path)
    assert cached.pipeline.random
    batches = CachedBatches(cached, 3, seed=7)
    full = list(batches.epoch(4))
    assert len(full) == len(batches) == len(data.train) // 3
    for skip in (1, len(full) - 1):
        assert_same_batches(full[skip:], list(batches.epoch(4, skip=skip)))
    order, _ = epoch_order(len(cached), 7, 4)
    for (k, idx), (_, targets, _) in zip(global_batches(order, 3, True), full, strict=True):
        assert torch.equal(targets, cached.targets[idx])
        aug = draw_augmentation(cached.pipeline, 3, augmentation_generator(7, 4, k))
        assert isinstance(aug, Augmentation)
    assert not torch.equal(full[0][0], next(iter(batches.epoch(5)))[0])  # another epoch, other batches
