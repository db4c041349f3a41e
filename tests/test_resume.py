"""Resume: N epochs straight equals N/2, save, load into fresh objects, N/2 more (bit-identical)."""

import torch

from constrained_fairness.config import DualConfig
from constrained_fairness.constraints import DenseReference, ExcessAccuracyGap
from constrained_fairness.groups import Grouping
from constrained_fairness.metrics import GroupStats
from constrained_fairness.models import MLP
from constrained_fairness.problem import FairnessProblem
from constrained_fairness.sparsity import MagnitudePruner, cubic_sparsity
from constrained_fairness.training import Evaluator, TensorBatches, Trainer, load_checkpoint, save_atomic
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
