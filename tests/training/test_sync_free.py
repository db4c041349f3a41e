"""The step without host synchronisation (issue #15): the sync counter itself, the documented
number of host reads per steady-state step of NFT and CEAG, the fixed-shape statistics
against the present-groups ones (bit-identical on CPU with SGD duals), the deferred guard
and the restore it does, and evaluation every N epochs."""

from __future__ import annotations

import warnings

import pytest
import torch

from constrained_fairness.buffer import ReplayBuffer
from constrained_fairness.config import DualConfig
from constrained_fairness.constraints import accuracy_gap, ceag_fused, equalized_loss, rates
from constrained_fairness.constraints.reference import DenseReference
from constrained_fairness.errors import ConfigError, TrainingDiverged
from constrained_fairness.groups import GroupIndex, Grouping
from constrained_fairness.problem import FairnessProblem
from constrained_fairness.runtime.syncs import HostSyncCounter, cuda_sync_debug
from constrained_fairness.training.batches import TensorBatches
from constrained_fairness.training.optimizers import build_cooper_optimizer, fixed_shapes
from constrained_fairness.training.trainer import Trainer

BATCH = 8
INDEX = GroupIndex.from_lists(["a", "b"], [["x", "y", "z"], ["u", "v"]])


# -- the counter ---------------------------------------------------------------------------
_X = torch.arange(-3.0, 7.0)
PRIMITIVES = {
    "item": lambda: _X.sum().item(),
    "bool": lambda: bool(_X.sum() > 0),
    "int": lambda: int(_X.argmax()),
    "float": lambda: float(_X.max()),
    "tolist": lambda: _X.tolist(),
    "cpu": lambda: _X.cpu(),
    "numpy": lambda: _X.numpy(),
    "nonzero": lambda: torch.nonzero(_X > 0),
    "mask index": lambda: _X[_X > 0],
    "where(cond)": lambda: torch.where(_X > 0),
    "bincount": lambda: torch.bincount(torch.tensor([0, 2]), minlength=3),
    "repeat_interleave by tensor": lambda: torch.arange(3).repeat_interleave(torch.tensor([1, 2, 3])),
}
NOT_SYNCING = {
    "arithmetic": lambda: _X * 2 + 1,
    "isfinite().all()": lambda: torch.isfinite(_X).all(),
    "index_select": lambda: _X.index_select(0, torch.tensor([1, 2])),
    "index_add": lambda: torch.zeros(3).index_add_(0, torch.tensor([0, 2]), torch.ones(2)),
    "sort": lambda: torch.sort(_X, stable=True),
    "repeat_interleave by int": lambda: torch.arange(3).repeat_interleave(2),
    "where(cond, a, b)": lambda: torch.where(_X > 0, _X, 0.0),
}


@pytest.mark.parametrize("name", sorted(PRIMITIVES))
def test_the_counter_counts_each_host_read_once(name):
    with HostSyncCounter() as syncs:
        PRIMITIVES[name]()
    assert syncs.count == 1, syncs.report()


@pytest.mark.parametrize("name", sorted(NOT_SYNCING))
def test_the_counter_ignores_device_only_work(name):
    with HostSyncCounter() as syncs:
        NOT_SYNCING[name]()
    assert syncs.count == 0, syncs.report()


def test_the_counter_restores_the_tensor_methods():
    before = torch.Tensor.tolist
    with HostSyncCounter():
        assert torch.Tensor.tolist is not before
    assert torch.Tensor.tolist is before


# -- trainers -----------------------------------------------------------------------------
def _data(n_batches: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n = n_batches * BATCH
    inputs = torch.randn(n, 5, generator=g)
    targets = torch.randint(0, 2, (n,), generator=g)
    attributes = torch.stack(
        [torch.randint(0, 3, (n,), generator=g), torch.randint(0, 2, (n,), generator=g)], 1
    )
    attributes[attributes[:, 0] == 2, 1] = 0  # group (z, v) never occurs: an absent group every step
    return inputs, targets, attributes


def _constraint(kind: str):
    inter = Grouping.create(INDEX, ["a", "b"], "intersectional")
    marginal = Grouping.create(INDEX, ["a", "b"], "marginal")
    groups = inter.num_groups
    reference = DenseReference(
        torch.linspace(0.6, 0.8, groups),
        torch.linspace(0.5, 0.7, groups),
        0.7,
        0.6,
        torch.full((groups,), 1 / groups),
    )
    return {
        # buffer 5 < 8 per batch: the overflow path of the push
        "ceag": lambda: accuracy_gap.ExcessAccuracyGap(reference, 0.0, buffer_size=5, grouping=inter),
        "demographic_parity marginal": lambda: rates.DemographicParity(marginal, 0.0, 2, buffer_size=3),
        "equal_opportunity max_min": lambda: rates.EqualOpportunity(
            inter, 0.0, 2, form="max_min", buffer_size=0
        ),
        "equalized_odds marginal": lambda: rates.EqualizedOdds(marginal, 0.0, 2, buffer_size=4),
        "equalized_loss": lambda: equalized_loss.EqualizedLoss(inter, 0.0, buffer_size=0),
        "absolute equalized_loss": lambda: equalized_loss.AbsoluteEqualizedLoss(inter, buffer_size=6),
    }[kind]()


def _trainer(
    kind: str | None,
    data: tuple[torch.Tensor, ...],
    *,
    fixed: bool = False,
    check_every: int = 1,
    nonfinite: str = "stop",
    eval_every: int = 1,
    evaluate=lambda model: {},
) -> Trainer:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    constraints = [] if kind is None else [_constraint(kind)]
    problem = FairnessProblem(constraints, ["c"] * len(constraints))
    problem.use_fixed_shapes(fixed)
    primal = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    optimizer = build_cooper_optimizer(problem, primal, [DualConfig(lr=0.05)] * len(constraints))
    return Trainer(
        kind or "nft",
        model,
        problem,
        optimizer,
        TensorBatches(*data, BATCH, shuffle=False),
        evaluate=evaluate,
        check_every=check_every,
        nonfinite=nonfinite,
        eval_every=eval_every,
    )


def _epoch_syncs(kind: str | None, n_batches: int, **options) -> HostSyncCounter:
    """Host reads of the second epoch (the buffers are full: the steady state)."""
    trainer = _trainer(kind, _data(n_batches), **options)
    trainer.train_epoch()
    trainer.epoch += 1
    with HostSyncCounter() as syncs:
        trainer.train_epoch()
    return syncs


def _per_step(kind: str | None, **options) -> tuple[float, float, HostSyncCounter]:
    """``(reads per step, reads per epoch besides them)`` from epochs of 8 and 16 steps."""
    short, long = _epoch_syncs(kind, 8, **options), _epoch_syncs(kind, 16, **options)
    per_step = (long.count - short.count) / 8
    return per_step, short.count - 8 * per_step, long


# The documented numbers (README, "GPU throughput"): with fixed shapes and the deferred guard
# a steady-state step reads nothing; the guard reads once per check_every steps, and the
# epoch's mean loss once per epoch. These count the tensor path, the one an accelerator runs:
# on the CPU, CEAG's rows come from compiled kernels over numpy views of the same memory
# (constraints/ceag_fused.py), which the counter would count as copies to the host.
@pytest.mark.parametrize("kind", [None, "ceag"], ids=["nft", "ceag"])
def test_a_steady_state_step_reads_nothing_but_the_deferred_guard(kind, monkeypatch):
    monkeypatch.setattr(ceag_fused, "kernels", lambda: None)
    per_step, per_epoch, syncs = _per_step(kind, fixed=True, check_every=4)
    assert per_step == 1 / 4, syncs.report()
    assert per_epoch == 1, syncs.report()  # the epoch's mean loss
    assert all(
        where.startswith("constrained_fairness/training/step.py")
        for (_, where), n in syncs.sites.items()
        if n > 1
    )


def test_the_present_groups_path_reads_every_step():
    """Without fixed shapes and with the guard each step: NFT reads the guard, CEAG also the
    present groups, the full buffers and the buffer's overflow test (the CPU default)."""
    nft, _, _ = _per_step(None)
    ceag, _, syncs = _per_step("ceag")
    assert nft == 1
    sites = {what for what, _ in syncs.sites}
    assert ceag >= 6 and {"aten.nonzero", "aten.bincount", "aten._local_scalar_dense"} <= sites


@pytest.mark.parametrize(
    "kind",
    [
        "ceag",
        "demographic_parity marginal",
        "equal_opportunity max_min",
        "equalized_odds marginal",
        "equalized_loss",
        "absolute equalized_loss",
    ],
)
def test_fixed_shapes_train_bit_identically_with_sgd_duals(kind):
    runs = []
    for fixed in (False, True):
        trainer = _trainer(kind, _data(12), fixed=fixed)
        for _ in range(3):
            trainer.train_epoch()
            trainer.epoch += 1
        runs.append(trainer)
    indexed, fixed_run = runs
    for p, q in zip(indexed.model.parameters(), fixed_run.model.parameters(), strict=True):
        assert torch.equal(p, q)
    multipliers = indexed.problem.c.multiplier_values()
    assert multipliers.max() > 0  # the constraint did something
    assert torch.equal(multipliers, fixed_run.problem.c.multiplier_values())
    a, b = indexed.problem.c.state_dict(), fixed_run.problem.c.state_dict()
    assert torch.equal(a["seen"], b["seen"])
    if "buffer" in a:
        for key in a["buffer"]:
            assert torch.equal(a["buffer"][key], b["buffer"][key])


def test_push_fixed_equals_push_with_overflow_and_dropped_samples():
    g = torch.Generator().manual_seed(3)
    plain, fixed = ReplayBuffer(5, 4), ReplayBuffer(5, 4)
    for step in range(30):
        n = int(torch.randint(0, 25, (1,), generator=g))
        groups = torch.randint(0, 6, (n,), generator=g)  # id 5 = dropped
        values = torch.rand(n, generator=g)
        kept = groups < 5
        plain.push(values[kept], groups[kept])
        counts = torch.bincount(groups, minlength=6)
        fixed.push_fixed(values, groups, counts)
        for a, b in zip(plain.state_dict().values(), fixed.state_dict().values(), strict=True):
            assert torch.equal(a, b), step


# -- the deferred guard -------------------------------------------------------------------
def test_a_failed_deferred_check_restores_the_state_before_its_window():
    """NaN inputs in batch 6 (step 6): the check after step 8 fails, and the model, the
    optimizers, the multipliers and the buffer are those after step 4, as a run of 4 steps."""
    data = _data(10)
    data[0][5 * BATCH + 2] = float("nan")
    trainer = _trainer("ceag", data, check_every=4)
    message = r"in stage .ceag., epoch 0, batch 7 or one of the 3 steps before it .* guards.check_every=4"
    with pytest.raises(TrainingDiverged, match=message):
        trainer.train_epoch()
    reference = _trainer("ceag", tuple(t[: 4 * BATCH] for t in data))
    reference.train_epoch()
    for p, q in zip(trainer.model.parameters(), reference.model.parameters(), strict=True):
        assert torch.equal(p, q)
    assert torch.equal(trainer.problem.c.multiplier_values(), reference.problem.c.multiplier_values())
    assert torch.equal(trainer.problem.c.buffer.values, reference.problem.c.buffer.values)
    momentum = [trainer.primal_optimizer.state[p]["momentum_buffer"] for p in trainer.model.parameters()]
    expected = [reference.primal_optimizer.state[p]["momentum_buffer"] for p in reference.model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(momentum, expected, strict=True))


def test_the_deferred_guard_changes_nothing_in_a_finite_run():
    every, deferred = _trainer("ceag", _data(10)), _trainer("ceag", _data(10), check_every=3)
    for trainer in (every, deferred):
        trainer.train_epoch()
    for p, q in zip(every.model.parameters(), deferred.model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_the_skip_policy_keeps_the_check_of_every_step():
    data = _data(6)
    data[0][2 * BATCH] = float("nan")
    trainer = _trainer("ceag", data, check_every=4, nonfinite="skip")
    assert trainer.training_step.check_every == 1
    trainer.train_epoch()
    assert trainer.skipped == 1 and trainer.step == 5


def test_check_every_and_fixed_shapes_are_validated():
    with pytest.raises(ConfigError, match="check_every must be >= 1"):
        _trainer(None, _data(2), check_every=0)
    sgd, nupi = DualConfig(optimizer="sgd"), DualConfig(optimizer="nupi")
    assert fixed_shapes("auto", [sgd]) and fixed_shapes("auto", []) and not fixed_shapes("off", [sgd])
    assert not fixed_shapes("auto", [sgd, nupi]) and fixed_shapes("on", [])
    with pytest.raises(ConfigError, match="needs plain SGD dual"):
        fixed_shapes("on", [nupi])


def test_evaluation_every_n_epochs_and_after_the_last():
    calls = []
    trainer = _trainer(None, _data(2), eval_every=2, evaluate=lambda model: calls.append(1) or {})
    trainer.run(5)
    assert len(calls) == 3  # after epochs 1, 3 and 4 (0-based)
    assert [bool(r["splits"]) for r in trainer.history] == [False] * 5  # the stub evaluates nothing


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind", [None, "ceag"], ids=["nft", "ceag"])
def test_on_a_gpu_the_steady_state_step_synchronises_once_per_check(kind):
    """``torch.cuda.set_sync_debug_mode`` warns at each synchronisation: 16 steps with the
    guard read every 4 give 4, plus the epoch's mean loss."""
    device = torch.device("cuda")
    data = tuple(t.to(device) for t in _data(16))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2)).to(device)
    constraints = []
    if kind == "ceag":
        groups = Grouping.create(INDEX, ["a", "b"], "intersectional")
        n = groups.num_groups
        reference = DenseReference(
            torch.full((n,), 0.7), torch.full((n,), 0.6), 0.7, 0.6, torch.full((n,), 1 / n)
        )
        constraints = [
            accuracy_gap.ExcessAccuracyGap(reference.to(device), 0.0, buffer_size=5, grouping=groups)
        ]
    problem = FairnessProblem(constraints, ["c"] * len(constraints))
    problem.use_fixed_shapes(True)
    optimizer = build_cooper_optimizer(
        problem, torch.optim.SGD(model.parameters(), lr=0.02), [DualConfig(lr=0.05)] * len(constraints)
    )
    batches = TensorBatches(*data, BATCH, shuffle=False)
    trainer = Trainer("gpu", model, problem, optimizer, batches, evaluate=lambda m: {}, check_every=4)
    trainer.train_epoch()
    with warnings.catch_warnings(record=True) as caught, cuda_sync_debug("warn"):
        warnings.simplefilter("always")
        trainer.train_epoch()
    syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
    assert len(syncs) <= 16 // 4 + 1, [str(w.message) for w in syncs]
