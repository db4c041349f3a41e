"""Resume: N epochs straight equals N/2, save, load into fresh objects, N/2 more (bit-identical)."""

import os
from pathlib import Path

import pytest
import torch

from constrained_fairness.config import DualConfig
from constrained_fairness.constraints import DenseReference, ExcessAccuracyGap
from constrained_fairness.errors import CheckpointError, TrainingDiverged
from constrained_fairness.groups import Grouping
from constrained_fairness.metrics import GroupStats
from constrained_fairness.models import MLP
from constrained_fairness.problem import FairnessProblem
from constrained_fairness.sparsity import MagnitudePruner, cubic_sparsity
from constrained_fairness.training import Evaluator, TensorBatches, Trainer, load_checkpoint, save_atomic
from constrained_fairness.training.checkpoint import Checkpointer
from constrained_fairness.training.optimizers import build_cooper_optimizer

G = 4


def data():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(300, 6, generator=gen)
    y = (x[:, 0] + 0.3 * torch.randn(300, generator=gen) > 0).long()
    g = torch.randint(0, G, (300,), generator=gen)
    return x, y, g


def build(dual_optimizer: str) -> Trainer:
    torch.manual_seed(0)
    x, y, g = data()
    model = MLP(6, [16, 16], 2)
    with torch.no_grad():
        logits = model(x)
    stats = GroupStats.from_outputs(
        (logits.argmax(1) == y).float(), torch.nn.functional.cross_entropy(logits, y, reduction="none"), g, G
    )
    grouping = Grouping.single(G)
    reference = DenseReference.from_stats(stats)
    problem = FairnessProblem([ExcessAccuracyGap(reference, 0.0, buffer_size=5, grouping=grouping)], ["ceag"])
    primal = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(primal, milestones=[2, 3], gamma=0.5)
    optimizer = build_cooper_optimizer(problem, primal, [DualConfig(lr=0.5, optimizer=dual_optimizer)])
    a = g.unsqueeze(1)
    evaluator = Evaluator({"train": (x, y, a), "val": (x[:50], y[:50], a[:50])}, grouping)
    evaluator.set_dense_reference(model)
    return Trainer(
        "ceag",
        model,
        problem,
        optimizer,
        TensorBatches(x, y, a, 32, seed=3),
        evaluator,
        scheduler=scheduler,
        pruner=MagnitudePruner(model),
        sparsity_at=lambda e: cubic_sparsity(e + 1, 2, 0.8),
    )


def assert_same(a: Trainer, b: Trainer) -> None:
    for (name, p), q in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    assert torch.equal(a.problem.ceag.multiplier_values(), b.problem.ceag.multiplier_values())
    assert torch.equal(a.problem.ceag.buffer.values, b.problem.ceag.buffer.values)
    assert a.history == b.history
    assert a.step == b.step and a.epoch == b.epoch
    assert a.best["epoch"] == b.best["epoch"]


def check_resume(tmp_path, dual_optimizer: str) -> None:
    straight = build(dual_optimizer)
    straight.run(4)
    assert float(straight.problem.ceag.multiplier_values().max()) > 0  # the duals did move

    first = build(dual_optimizer)
    first.run(2)
    save_atomic(first.state_dict(), tmp_path / "ckpt.pt")
    second = build(dual_optimizer)
    torch.manual_seed(123)  # the checkpoint must restore everything, RNG included
    second.load_state_dict(load_checkpoint(tmp_path / "ckpt.pt"))
    second.run(4)
    assert_same(straight, second)


def test_resume_is_bit_identical_sgd_dual(tmp_path):
    check_resume(tmp_path, "sgd")


def test_resume_is_bit_identical_nupi_dual(tmp_path):
    check_resume(tmp_path, "nupi")


def test_checkpoint_loads_with_weights_only(tmp_path):
    trainer = build("sgd")
    trainer.run(1)
    save_atomic(trainer.state_dict(), tmp_path / "c.pt")
    state = torch.load(tmp_path / "c.pt", weights_only=True)
    assert set(state) >= {"model", "optimizer", "problem", "pruner", "scheduler", "history", "rng", "best"}
    assert not list(tmp_path.glob(".c.pt.*"))  # no temporary file left behind


class _Killed(Exception):
    pass


class _DyingCheckpointer(Checkpointer):
    """Simulates a kill right after the ``after``-th save."""

    def __init__(self, *args, after: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.after, self.saves = after, 0

    def save(self, state, epoch, batch):
        path = super().save(state, epoch, batch)
        self.saves += 1
        if self.saves == self.after:
            raise _Killed
        return path


def test_mid_epoch_resume_is_identical_to_an_uninterrupted_run(tmp_path):
    straight = build("nupi")
    straight.every_steps = 4
    straight.run(4, Checkpointer(tmp_path / "a", "ceag", keep_last=2, config_hash="h"))
    interrupted = build("nupi")
    interrupted.every_steps = 4
    dying = _DyingCheckpointer(tmp_path / "b", "ceag", keep_last=2, config_hash="h", after=4)
    with pytest.raises(_Killed):
        interrupted.run(4, dying)
    state = Checkpointer(tmp_path / "b", "ceag", keep_last=2, config_hash="h").load_latest()
    assert 0 < state["batch"] < 10 and state["epoch"] == 1  # 10 batches per epoch: stopped mid-epoch
    resumed = build("nupi")
    resumed.every_steps = 4
    resumed.load_state_dict(state)
    resumed.run(4, Checkpointer(tmp_path / "b", "ceag", keep_last=2, config_hash="h"))
    assert_same(straight, resumed)
    assert straight.history == resumed.history


@pytest.mark.filterwarnings("ignore:cannot read checkpoint")
def test_keep_last_and_fallback_past_a_corrupt_checkpoint(tmp_path):
    trainer = build("sgd")
    trainer.every_steps = 5
    checkpoints = Checkpointer(tmp_path, "ceag", keep_last=3, config_hash="h")
    trainer.run(2, checkpoints)
    names = [p.name for p in checkpoints.candidates()]
    assert names == ["ceag-e00002-b000000.pt", "ceag-e00001-b000010.pt", "ceag-e00001-b000005.pt"]
    assert (tmp_path / "ceag.pt").samefile(tmp_path / names[0])  # the finished stage, published
    newest = tmp_path / names[0]
    newest.write_bytes(newest.read_bytes()[:100])  # truncated, as by a crash outside save_atomic
    with pytest.warns(UserWarning, match=rf"cannot read checkpoint {newest}.*falling back"):
        state = checkpoints.load_latest()
    assert (state["epoch"], state["batch"]) == (1, 10)
    other = Checkpointer(tmp_path, "ceag", keep_last=3, config_hash="another")
    with pytest.raises(CheckpointError, match=r"written with another config.*--force"):
        other.load_latest()
    with pytest.warns(UserWarning, match="resuming anyway because of --force"):
        assert other.load_latest(force=True)["epoch"] == 1


def test_non_finite_batches_stop_or_are_skipped_and_counted(tmp_path):
    stopped = build("sgd")
    stopped.batches.inputs[40, 0] = float("nan")  # batch 1 of some epoch holds a NaN row
    checkpoints = Checkpointer(tmp_path, "ceag", keep_last=2, config_hash="h")
    with pytest.raises(TrainingDiverged, match=r"non-finite loss in stage 'ceag', epoch 0, batch \d+;.*skip"):
        stopped.run(3, checkpoints)
    assert all(bool(torch.isfinite(p).all()) for p in stopped.model.parameters())  # stopped before the step
    skipping = build("sgd")
    skipping.nonfinite = "skip"
    skipping.batches.inputs[40, 0] = float("nan")
    skipping.run(3)
    assert skipping.skipped == 3  # that batch, once per epoch
    assert skipping.history[-1]["skipped_batches"] == 3
    assert all(bool(torch.isfinite(p).all()) for p in skipping.model.parameters())


def test_a_skipped_batch_leaves_the_replay_buffers_as_they_were():
    """EL+RB buffers per-sample losses: the skipped batch's NaN loss must not enter the buffer
    (it would make every later strict violation non-finite, and those batches skipped too)."""
    from constrained_fairness.constraints import EqualizedLoss

    trainer = build("sgd")
    equalized = EqualizedLoss(Grouping.single(G), 0.05, buffer_size=40)
    trainer.problem = FairnessProblem([equalized], ["el"])
    trainer.optimizer = build_cooper_optimizer(
        trainer.problem, trainer.primal_optimizer, [DualConfig(lr=0.5)]
    )
    trainer.nonfinite = "skip"
    trainer.batches.inputs[40, 0] = float("nan")  # one row: one batch of each epoch
    # the samples of every batch without the NaN row, over the 2 epochs
    pushed = sum(len(y) for e in range(2) for x, y, _ in trainer.batches.epoch(e) if not x.isnan().any())
    trainer.run(2)
    assert trainer.skipped == 2  # that batch, once per epoch, and no other
    assert bool(torch.isfinite(equalized.buffer.values).all())
    assert float(equalized.seen.sum()) == pushed


def test_a_large_multiplier_is_reported_once():
    trainer = build("sgd")
    trainer.multiplier_warning = 1e-9
    with pytest.warns(
        UserWarning, match=r"a multiplier of constraint 'ceag' reached .* guards.multiplier_warning"
    ) as w:
        trainer.run(3)
    assert sum("guards.multiplier_warning" in str(x.message) for x in w) == 1


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full to simulate a full disk")
def test_full_disk_is_a_one_line_checkpoint_error_and_keeps_the_old_file(tmp_path, monkeypatch):
    """A full disk while writing (ENOSPC, which torch wraps in a RuntimeError) is a one-line
    CheckpointError naming the file and the fix; the previous checkpoint and no temp file remain."""
    import constrained_fairness.files as files

    trainer = build("sgd")
    trainer.run(1)
    target = tmp_path / "c.pt"
    save_atomic(trainer.state_dict(), target)
    before = target.read_bytes()

    def to_full_disk(fd: int, mode: str, encoding: str | None = None):
        os.close(fd)
        return open("/dev/full", mode, encoding=encoding)  # every flush fails with ENOSPC, as on a full disk

    monkeypatch.setattr(files.os, "fdopen", to_full_disk)
    with pytest.raises(CheckpointError) as info:
        save_atomic({"model": {"w": torch.zeros(1 << 20)}}, target)
    message = str(info.value)
    assert "\n" not in message
    assert f"cannot write checkpoint {target}: No space left on device" in message
    assert "checkpoint.keep_last=1" in message
    assert target.read_bytes() == before
    assert not list(tmp_path.glob(".c.pt.*"))


def test_other_write_errors_are_not_disguised(tmp_path, monkeypatch):
    import constrained_fairness.training.checkpoint as checkpoint

    def broken(obj, handle):
        raise TypeError("cannot pickle a lambda")

    monkeypatch.setattr(checkpoint.torch, "save", broken)
    with pytest.raises(TypeError, match="cannot pickle a lambda"):
        save_atomic({"f": 1}, tmp_path / "c.pt")
    assert not list(tmp_path.glob(".c.pt.*"))


@pytest.mark.parametrize("skip", [0, 2, 4, 9])
def test_loader_batches_resumed_mid_epoch_are_the_rest_of_the_epoch(skip):
    """Image loaders resume inside an epoch: ``epoch(e, skip)`` is ``epoch(e)`` without its first
    ``skip`` batches, in the same seeded order (300 rows: 9 batches, the last 12 rows dropped)."""
    from constrained_fairness.training.batches import LoaderBatches

    x, y, g = data()
    dataset = torch.utils.data.TensorDataset(x, y, g.unsqueeze(1))
    batches = LoaderBatches(dataset, 32, seed=5)
    whole = list(batches.epoch(3))
    assert len(whole) == 9
    rest = list(batches.epoch(3, skip=skip))
    assert len(rest) == max(0, 9 - skip)
    for got, want in zip(rest, whole[skip:], strict=True):
        assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
