"""``data.cache`` in whole runs on the real-format fixtures: the paper's CIFAR-100 pipeline
(no augmentation) gives the same metrics.json from the DataLoader, the host cache and the
device cache; UTKFace's random flips are the same draws from either cache."""

from __future__ import annotations

from .test_paper_configs import FIXTURES, run_stage


def _metrics(tmp_path, dataset: str, cache: str, methods: str = "[nft,ceag]", stage: str = "ceag") -> bytes:
    root = tmp_path / "data"
    if not root.exists():
        FIXTURES[dataset][0](root)
    out = tmp_path / f"{stage}_{cache}"
    extra = [
        f"data.cache={cache}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "model.checkpoint=null",
        "methods=[nft,ceag]",
    ]
    assert run_stage(dataset, stage, out, root, extra) == 0
    return (out / "metrics.json").read_bytes()


def test_cifar100_paper_pipeline_is_the_same_from_the_loader_and_the_device_cache(tmp_path):
    plain = _metrics(tmp_path, "cifar100", "none", "[nft]")
    assert _metrics(tmp_path, "cifar100", "device", "[nft]") == plain


def test_utkface_flips_are_the_same_draws_from_either_cache(tmp_path):
    memory = _metrics(tmp_path, "utkface", "memory")
    assert _metrics(tmp_path, "utkface", "device") == memory
    assert (tmp_path / "cache").is_dir() and any((tmp_path / "cache").iterdir())
