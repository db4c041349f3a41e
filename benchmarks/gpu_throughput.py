"""GPU throughput of the three paper settings, per data path, and what each paper table costs.

Settings (synthetic images of the real shapes, random labels, the paper's batch sizes):

* ``cifar100``: CIFAR ResNet-56, 32x32, batch 128, 100 classes = 100 groups;
* ``utkface``: MobileNetV2, 200x200, batch 128, 5 classes, 5 race groups;
* ``fairface``: ResNet-34, 224x224, batch 256, 2 classes, 7 race groups.

Each is trained as the protocol does (:class:`~constrained_fairness.training.trainer.Trainer`,
SGD momentum 0.9, 95 %-sparse GMP masks re-applied each step; on CUDA in bf16 autocast with
channels_last), from each data path:

* ``none``: a ``DataLoader`` decoding JPEG files (``data.num_workers`` = the cores, up to 8);
* ``memory``: the uint8 image cache gathered on the host and copied;
* ``device``: the cache on the training device, gathered, flipped and normalised there.

For each it prints images/s of NFT and of CEAG (k = 40 replay buffers, SGD duals, fixed-shape
statistics and the deferred guard as ``guards.check_every`` sets it) and their ratio; images/s
of the data path alone (its batches, no model); host synchronisations per steady-state step
(``torch.cuda.set_sync_debug_mode`` warnings on CUDA, :class:`HostSyncCounter` calls on CPU,
counted on the tensor path an accelerator runs, not CEAG's CPU kernels);
peak memory (CUDA: ``max_memory_allocated``; CPU: the process's peak RSS); evaluation images/s
(forward only, ``eval_batch_size``) and evaluation's share of an epoch; the cost of the
guard's snapshot; and the projected GPU-hours of each paper table:

    run   = [T + F] · N_train / r_NFT  +  3 F · N_train / r_CEAG          (GMP + NFT; EL, EL+RB, CEAG)
          + (T + 4 F) · (N_train + N_test) / r_eval                         (every split, every epoch)
    table = 3 seeds × 4 sparsities × run

with the paper configs' epochs (``T`` pruning, ``F`` fine-tuning; EL and EL+RB costed at the
CEAG rate) and the dense stage excluded (the published checkpoints are loaded).

    python benchmarks/gpu_throughput.py                  # full setting (meant for a GPU)
    python benchmarks/gpu_throughput.py --paths device   # one data path
    python benchmarks/gpu_throughput.py --quick          # tiny shapes on the CPU (smoke test)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image

from constrained_fairness.config import DualConfig
from constrained_fairness.constraints import DenseReference, ExcessAccuracyGap, ceag_fused
from constrained_fairness.data.cache import cached_source
from constrained_fairness.data.images import LabeledImages
from constrained_fairness.data.transforms import batch_pipeline, dataset_transforms
from constrained_fairness.groups import Grouping
from constrained_fairness.models import build_model
from constrained_fairness.problem import FairnessProblem
from constrained_fairness.runtime.syncs import HostSyncCounter, cuda_sync_debug
from constrained_fairness.sparsity import MagnitudePruner
from constrained_fairness.training.batches import CachedBatches, LoaderBatches
from constrained_fairness.training.optimizers import build_cooper_optimizer
from constrained_fairness.training.trainer import Trainer

PATHS = ("none", "memory", "device")
SEEDS, SPARSITIES = 3, 4  # a paper table: 3 seeds x 4 sparsities, 5 methods (NFT+ES costs nothing)


class Setting(NamedTuple):
    label: str
    dataset: str  # the data set whose pipeline (resize, flip, normalisation) the batches use
    model: str
    size: int
    batch: int
    classes: int
    groups: int
    n_train: int  # images of the paper's training split
    n_test: int
    pruning_epochs: int  # T of the paper config
    finetune_epochs: int  # F
    width: float = 1.0
    eval_batch: int = 512


FULL = {
    "cifar100": Setting(
        "ResNet-56 32x32 b128", "cifar100", "resnet56", 32, 128, 100, 100, 50_000, 10_000, 15, 35
    ),
    "utkface": Setting(
        "MobileNetV2 200x200 b128", "utkface", "mobilenet_v2", 200, 128, 5, 5, 18_964, 4_741, 15, 45
    ),
    "fairface": Setting(
        "ResNet-34 224x224 b256", "fairface", "resnet34", 224, 256, 2, 7, 86_744, 10_954, 15, 32
    ),
}
QUICK = {
    "cifar100": FULL["cifar100"]._replace(label="ResNet-56 w0.25 16x16 b8", size=16, batch=8, width=0.25),
    "utkface": FULL["utkface"]._replace(label="MobileNetV2 w0.25 32x32 b8", size=32, batch=8, width=0.25),
    # ResNet-34 has no width: the smoke test runs its data path with a narrow MobileNetV2
    "fairface": FULL["fairface"]._replace(
        label="(MobileNetV2 w0.25) 32x32 b4", model="mobilenet_v2", size=32, batch=4, width=0.25
    ),
}


def _jpegs(folder: Path, setting: Setting, count: int, distinct: int) -> list[Path]:
    """``count`` paths over ``distinct`` random JPEG files of the setting's size."""
    rng = np.random.default_rng(0)
    files = []
    for i in range(distinct):
        path = folder / f"{setting.dataset}_{setting.size}_{i}.jpg"
        if not path.exists():
            pixels = rng.integers(0, 256, (setting.size, setting.size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(path, quality=90)
        files.append(path)
    return [files[i % distinct] for i in range(count)]


def _dataset(folder: Path, setting: Setting, count: int) -> LabeledImages:
    g = torch.Generator().manual_seed(0)
    targets = torch.randint(0, setting.classes, (count,), generator=g)
    attributes = (
        targets.unsqueeze(1)
        if setting.groups == setting.classes
        else torch.randint(0, setting.groups, (count, 1))
    )
    # the augmented train pipelines: resize (a no-op at the native size), CIFAR-100's crop, flips
    transform = dataset_transforms(setting.dataset, setting.size, True, "augmented")
    pipeline = batch_pipeline(setting.dataset, setting.size, True, "augmented")
    paths = _jpegs(folder, setting, count, min(count, 64))
    return LabeledImages(paths, targets, attributes, transform, pipeline=pipeline)


def _batches(path: str, data: LabeledImages, setting: Setting, device: torch.device, workers: int) -> Any:
    if path == "none":
        return LoaderBatches(data, setting.batch, True, 0, workers, device.type == "cuda")
    source = cached_source(data, path, device, cache_dir=data.paths[0].parent / ".cache", progress=False)
    return CachedBatches(source, setting.batch, True, 0)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _data_rate(batches: Any, device: torch.device) -> float:
    """Images/s of one epoch of batches moved to the device, without a model."""
    images, start = 0, time.perf_counter()
    for inputs, _, _ in batches.epoch(1):
        inputs = inputs.to(device, non_blocking=True)
        images += len(inputs)
    _synchronize(device)
    return images / (time.perf_counter() - start)


def _trainer(method: str, setting: Setting, batches: Any, device: torch.device, check_every: int) -> Trainer:
    torch.manual_seed(0)
    model = build_model(setting.model, num_classes=setting.classes, width=setting.width).to(device)
    cuda = device.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    constraints, duals = [], []
    if method == "ceag":
        g = setting.groups
        reference = DenseReference(
            torch.full((g,), 0.8), torch.full((g,), 0.5), 0.8, 0.5, torch.full((g,), 1.0 / g)
        ).to(device)
        constraints = [ExcessAccuracyGap(reference, 0.01, 40, grouping=Grouping.single(g))]
        duals = [DualConfig(optimizer="sgd", lr=1e-4)]
    problem = FairnessProblem(constraints, [method] * len(constraints))
    problem.autocast_dtype = torch.bfloat16 if cuda else None
    problem.channels_last = cuda
    problem.use_fixed_shapes(True)
    primal = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9, weight_decay=1e-4)
    pruner = MagnitudePruner(model)
    pruner.prune_to(0.95)
    optimizer = build_cooper_optimizer(problem, primal, duals)
    return Trainer(
        method,
        model,
        problem,
        optimizer,
        batches,
        evaluate=lambda m: {},
        pruner=pruner,
        check_every=check_every,
    )


@contextlib.contextmanager
def _syncs(device: torch.device) -> Iterator[dict[str, int]]:
    out = {"count": 0}
    if device.type == "cuda":
        with warnings.catch_warnings(record=True) as caught, cuda_sync_debug("warn"):
            warnings.simplefilter("always")
            yield out
        out["count"] = sum("synchroniz" in str(w.message).lower() for w in caught)
    else:  # the tensor path, which an accelerator runs: CEAG's CPU kernels read numpy views
        with HostSyncCounter() as counter, _without_cpu_kernels():
            yield out
        out["count"] = counter.count


@contextlib.contextmanager
def _without_cpu_kernels() -> Iterator[None]:
    """CEAG's rows from tensor ops instead of the CPU kernels (:mod:`.constraints.ceag_fused`)."""
    kernels = ceag_fused.kernels
    ceag_fused.kernels = lambda: None
    try:
        yield
    finally:
        ceag_fused.kernels = kernels


class _Prepared:
    """Batches already on the device: an epoch of training steps without the data path."""

    def __init__(self, batches: list) -> None:
        self.batches, self.batch_size = batches, len(batches[0][1])

    def __len__(self) -> int:
        return len(self.batches)

    def epoch(self, epoch: int, skip: int = 0) -> Iterator:
        return iter(self.batches[skip:])


def _train_rate(trainer: Trainer, device: torch.device) -> tuple[float, float]:
    """``(images/s, host syncs per step)``: an epoch from the data path after a warm-up epoch,
    then the syncs of an epoch of the same steps from prepared batches (the step's own, with
    the epoch's one loss read spread over its steps)."""
    trainer.train_epoch()
    trainer.epoch += 1
    _synchronize(device)
    data = trainer.batches
    steps, images = len(data), len(data) * data.batch_size
    start = time.perf_counter()
    trainer.train_epoch()
    _synchronize(device)
    elapsed = time.perf_counter() - start
    trainer.epoch += 1
    trainer.batches = _Prepared([tuple(t.to(device) for t in b) for b in data.epoch(trainer.epoch)])
    with _syncs(device) as syncs:
        trainer.train_epoch()
    trainer.batches = data
    return images / elapsed, syncs["count"] / steps


@torch.inference_mode()
def _eval_rate(trainer: Trainer, setting: Setting, device: torch.device, repeats: int) -> float:
    model = trainer.model.eval()
    shape = (min(setting.eval_batch, 4 * setting.batch), 3, setting.size, setting.size)
    inputs = torch.randn(shape, device=device)
    if device.type == "cuda":
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    dtype = torch.bfloat16 if device.type == "cuda" else None
    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        model(inputs)
        _synchronize(device)
        start = time.perf_counter()
        for _ in range(repeats):
            model(inputs)
        _synchronize(device)
    trainer.model.train()
    return repeats * shape[0] / (time.perf_counter() - start)


def _snapshot_ms(trainer: Trainer, device: torch.device, repeats: int = 5) -> float:
    step = trainer.training_step
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        step._snapshot()
    _synchronize(device)
    return 1e3 * (time.perf_counter() - start) / repeats


def _peak_memory(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def table_hours(setting: Setting, nft: float, ceag: float, evaluation: float) -> float:
    """The formula of the module docstring, in hours."""
    t, f = setting.pruning_epochs, setting.finetune_epochs
    run = (t + f) * setting.n_train / nft + 3 * f * setting.n_train / ceag
    run += (t + 4 * f) * (setting.n_train + setting.n_test) / evaluation
    return SEEDS * SPARSITIES * run / 3600


def measure(
    setting: Setting, path: str, folder: Path, device: torch.device, steps: int, check_every: int
) -> dict:
    workers = min(8, os.cpu_count() or 1) if device.type == "cuda" else 0
    data = _dataset(folder, setting, steps * setting.batch)
    batches = _batches(path, data, setting, device, workers)
    out: dict[str, Any] = {"data_ips": _data_rate(batches, device)}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for method in ("nft", "ceag"):
        trainer = _trainer(method, setting, batches, device, check_every)
        out[f"{method}_ips"], out[f"{method}_syncs"] = _train_rate(trainer, device)
    out["ratio"] = out["ceag_ips"] / out["nft_ips"]
    out["peak_gib"] = _peak_memory(device)
    out["eval_ips"] = _eval_rate(trainer, setting, device, repeats=max(2, steps // 2))
    epoch_train = setting.n_train / out["ceag_ips"]
    epoch_eval = (setting.n_train + setting.n_test) / out["eval_ips"]
    out["eval_share"] = epoch_eval / (epoch_train + epoch_eval)
    out["snapshot_ms"] = _snapshot_ms(trainer, device)
    out["step_ms"] = 1e3 * setting.batch / out["ceag_ips"]
    out["table_h"] = table_hours(setting, out["nft_ips"], out["ceag_ips"], out["eval_ips"])
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes on the CPU (smoke test)")
    parser.add_argument("--settings", nargs="+", choices=tuple(FULL), default=list(FULL))
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    parser.add_argument("--steps", type=int, default=None, help="timed steps per epoch (default 40; quick 3)")
    parser.add_argument(
        "--check-every", type=int, default=None, help="guards.check_every (default: the config's)"
    )
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    from constrained_fairness.config.schema import GuardsConfig

    check_every = args.check_every or GuardsConfig().check_every
    device = torch.device("cpu") if args.quick or args.device == "cpu" else None
    if device is None:
        device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else args.device)
        if args.device == "auto" and device.type != "cuda":
            device = torch.device("cpu")
    settings = QUICK if args.quick else FULL
    steps = args.steps or (3 if args.quick else 40)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    precision = "bf16 autocast, channels_last" if device.type == "cuda" else "fp32"
    print(f"gpu_throughput on {name}, {precision}, {steps} timed steps per epoch, check_every={check_every}")
    memory = "GiB" if device.type == "cuda" else "GiB RSS"
    print(
        f"{'setting':<28} {'path':<7} {'NFT img/s':>10} {'CEAG img/s':>11} {'ratio':>6} {'data img/s':>11} "
        f"{'syncs/step N/C':>15} {'peak ' + memory:>12} {'eval img/s':>11} {'eval %':>7} {'snap ms':>8} "
        f"{'table GPU-h':>12}"
    )
    results: dict = {"device": name, "check_every": check_every}
    with tempfile.TemporaryDirectory() as tmp:
        for key in args.settings:
            setting = settings[key]
            for path in args.paths:
                r = measure(setting, path, Path(tmp), device, steps, check_every)
                results[(key, path)] = r
                print(
                    f"{setting.label:<28} {path:<7} {r['nft_ips']:>10.0f} {r['ceag_ips']:>11.0f} "
                    f"{r['ratio']:>6.3f} {r['data_ips']:>11.0f} "
                    f"{r['nft_syncs']:>7.2f}/{r['ceag_syncs']:<7.2f} {r['peak_gib']:>12.2f} "
                    f"{r['eval_ips']:>11.0f} {100 * r['eval_share']:>6.1f}% {r['snapshot_ms']:>8.2f} "
                    f"{r['table_h']:>12.1f}"
                )
    print(
        "table GPU-h = 3 seeds x 4 sparsities x [(T+F) N_train / r_NFT + 3 F N_train / r_CEAG + (T+4F)"
        " (N_train+N_test) / r_eval] / 3600, the paper configs' T, F and split sizes"
        + (" (quick: tiny shapes, not a projection)" if args.quick else "")
    )
    return results


if __name__ == "__main__":
    main()
