"""DDP: two gloo processes on CPU take the same CEAG steps as one process on the global batches."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from constrained_fairness.config import DualConfig
from constrained_fairness.constraints import DemographicParity, DenseReference, ExcessAccuracyGap
from constrained_fairness.groups import Grouping
from constrained_fairness.metrics import GroupStats
from constrained_fairness.models import MLP
from constrained_fairness.problem import FairnessProblem
from constrained_fairness.training.optimizers import build_cooper_optimizer

G, STEPS, GLOBAL_BATCH = 4, 6, 32


def setup(distributed: bool):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(STEPS * GLOBAL_BATCH, 5, generator=gen)
    y = (x[:, 0] + 0.5 * torch.randn(len(x), generator=gen) > 0).long()
    a = torch.randint(0, G, (len(x), 1), generator=gen)
    torch.manual_seed(0)
    model = MLP(5, [16], 2)
    with torch.no_grad():
        logits = model(x)
    stats = GroupStats.from_outputs(
        (logits.argmax(1) == y).float(), F.cross_entropy(logits, y, reduction="none"), a[:, 0], G
    )
    grouping = Grouping.single(G)
    constraints = [
        ExcessAccuracyGap(DenseReference.from_stats(stats), 0.0, buffer_size=4, grouping=grouping),
        DemographicParity(grouping, 0.0, 2, buffer_size=3),
    ]
    problem = FairnessProblem(constraints, ["ceag", "dp"])
    net = DistributedDataParallel(model) if distributed else model
    primal = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    optimizer = build_cooper_optimizer(
        problem, primal, [DualConfig(lr=0.5), DualConfig(lr=0.5, optimizer="nupi")]
    )
    return (x, y, a), model, net, problem, optimizer


def train(rank: int, world: int) -> dict[str, torch.Tensor]:
    (x, y, a), model, net, problem, optimizer = setup(world > 1)
    local = GLOBAL_BATCH // world
    for step in range(STEPS):
        start = step * GLOBAL_BATCH + rank * local
        batch = slice(start, start + local)
        optimizer.roll({"model": net, "inputs": x[batch], "targets": y[batch], "attributes": a[batch]})
    return {
        "ceag": problem.ceag.multiplier_values(),
        "dp": problem.dp.multiplier_values(),
        **{f"param/{k}": v.detach().clone() for k, v in model.state_dict().items()},
    }


def worker(rank: int, world: int, init_file: str, out: str, run: Callable = train) -> None:
    """One gloo rank: ``run(rank, world)`` saved to ``out/rank<rank>.pt``. A rank left waiting
    in a collective fails after 60 s instead of hanging the suite."""
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world, timeout=timedelta(seconds=60)
    )
    try:
        torch.save(run(rank, world), Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_multipliers_are_identical_across_ranks_and_match_one_process(tmp_path):
    mp.spawn(worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    single = train(0, 1)
    assert float(single["ceag"].max()) > 0 and float(single["dp"].max()) > 0  # the duals did move
    for key in single:
        assert torch.equal(ranks[0][key], ranks[1][key]), key
        assert torch.allclose(ranks[0][key], single[key], atol=1e-5), key


def test_torchrun_two_cpu_processes_match_one_process(tmp_path):
    """The whole protocol under ``torchrun --nproc_per_node 2`` (gloo) against one process."""
    import json
    import os
    import subprocess
    import sys

    from ..helpers import tiny_config

    config = tiny_config(tmp_path, methods="[nft, ceag]")
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    base = [sys.executable, "-m", "constrained_fairness", "run", str(config), "--quiet"]
    subprocess.run([*base, "--output", str(single)], check=True, env=env, timeout=300)
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29533",
    ]
    result = subprocess.run(
        [*torchrun, "-m", "constrained_fairness", "run", str(config), "--quiet", "--output", str(ddp)],
        env=env,
        timeout=300,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    a = json.loads((single / "metrics.json").read_text())
    b = json.loads((ddp / "metrics.json").read_text())
    assert b["world_size"] == 2
    for method in ("nft", "ceag"):
        for split in ("train", "test"):
            assert b["methods"][method][split]["accuracy"] == pytest.approx(
                a["methods"][method][split]["accuracy"], abs=0.005
            )
            assert b["methods"][method][split]["loss"] == pytest.approx(
                a["methods"][method][split]["loss"], rel=1e-4
            )
    assert b["methods"]["ceag"]["multipliers"]["ceag"] == pytest.approx(
        a["methods"]["ceag"]["multipliers"]["ceag"], abs=1e-4
    )


def test_ddp_shards_drop_the_incomplete_global_batch():
    from constrained_fairness.training.batches import TensorBatches

    x, y, a = torch.arange(10.0).unsqueeze(1), torch.zeros(10).long(), torch.zeros(10, 1).long()
    shards = [list(TensorBatches(x, y, a, 4, shuffle=False, rank=r, world=2).epoch(0)) for r in (0, 1)]
    assert [len(s) for s in shards] == [2, 2]  # 10 rows: 2 full global batches of 4, the last 2 rows dropped
    together = torch.cat([torch.cat([shards[0][k][0], shards[1][k][0]]) for k in range(2)]).flatten()
    assert together.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    assert len(list(TensorBatches(x, y, a, 4, shuffle=False).epoch(0))) == 3  # one process keeps it


NAN_STEP = 2


def train_skipping(rank: int, world: int) -> dict[str, torch.Tensor]:
    """NFT (no constraint: nothing else is all-reduced before the check) where only rank 1's
    batch ``NAN_STEP`` holds a NaN; a batch that raises NonFiniteBatch is skipped, as the
    trainer's ``skip`` policy does."""
    from constrained_fairness.problem import NonFiniteBatch

    (x, y, a), model, net, _, _ = setup(world > 1)
    problem = FairnessProblem([], [])
    optimizer = build_cooper_optimizer(problem, torch.optim.SGD(model.parameters(), lr=0.1), [])
    local = GLOBAL_BATCH // world
    skipped = []
    for step in range(STEPS):
        start = step * GLOBAL_BATCH + rank * local
        inputs = x[start : start + local].clone()
        if rank == 1 and step == NAN_STEP:
            inputs[0, 0] = float("nan")
        batch = slice(start, start + local)
        try:
            optimizer.roll({"model": net, "inputs": inputs, "targets": y[batch], "attributes": a[batch]})
        except NonFiniteBatch:
            optimizer.zero_grad()
            skipped.append(step)
    return {
        "skipped": torch.tensor(skipped),
        **{k: v.detach().clone() for k, v in model.state_dict().items()},
    }


def test_a_non_finite_batch_on_one_rank_is_skipped_on_every_rank(tmp_path):
    mp.spawn(worker, args=(2, str(tmp_path / "init"), str(tmp_path), train_skipping), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert ranks[0]["skipped"].tolist() == ranks[1]["skipped"].tolist() == [NAN_STEP]
    for key in ranks[0]:
        assert torch.equal(ranks[0][key], ranks[1][key]), key
    assert all(torch.isfinite(v).all() for k, v in ranks[0].items() if k != "skipped")


@pytest.mark.parametrize(
    ("backend", "expected"),
    [("gloo", "cpu"), ("cpu:gloo,cuda:nccl", "cpu"), ("nccl", "cuda:3")],
)
def test_host_flags_go_where_the_backend_serves_them(monkeypatch, backend, expected):
    """An NCCL-only group has no CPU backend: the epoch's divergence flag must go to the GPU."""
    from constrained_fairness.runtime import distributed

    monkeypatch.setattr(distributed.dist, "get_backend", lambda group=None: backend)
    monkeypatch.setattr(distributed.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(distributed.torch.cuda, "current_device", lambda: 3)
    assert distributed._collective_device() == torch.device(expected)
