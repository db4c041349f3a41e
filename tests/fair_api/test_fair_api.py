"""FairModel and FairTrainer: the fairness_training guide, and the eight PEERS.md weaknesses.

Gaps are recomputed here with plain per-attribute, per-value loops over numpy arrays,
independently of the library's vectorized ``attribute_gaps``.
"""

from __future__ import annotations

import inspect
import math
import subprocess
import sys
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn, optim
from torch.optim.lr_scheduler import ReduceLROnPlateau

from constrained_fairness import FairModel, FairTrainer, create_stratified_dataloaders
from constrained_fairness.constraints.base import BatchOutputs
from constrained_fairness.errors import CheckpointError, ConfigError, DataError
from constrained_fairness.fair_api import EarlyStopping, MeanPredictionGap, attribute_gaps

from ..helpers import tensorboard_scalars

pytestmark = pytest.mark.filterwarnings("ignore:.*training rows cannot fill")

EPS = 0.05

# The guide of PEERS.md, verbatim (its import already names constrained_fairness).
GUIDE = """
from constrained_fairness import create_stratified_dataloaders, FairModel, FairTrainer

train_loader, val_loader = create_stratified_dataloaders(
    X_train, y_train, X_val, y_val,
    protected_attr_idx=[0, 1],          # int or list: columns of X holding protected attributes
    batch_size_train=1000, batch_size_eval=1000)

model = FairModel(input_dim=X_train.shape[1], hidden_dims=[128, 64, 32], output_dim=1,
                  protected_attr_idx=[0, 1], prediction_bounds=(-100.0, 100.0),
                  fairness_tolerance=0.05, b_tau=500, fairness_metric='mean_pred')

trainer = FairTrainer(model, nn.BCEWithLogitsLoss(), optim.Adam(model.parameters(), lr=1e-3),
                      scheduler=ReduceLROnPlateau(optimizer, patience=5, factor=0.5),
                      early_stopping_patience=15, early_stopping_delta=1e-5)
history = trainer.fit(train_loader, val_loader, epochs=100, verbose=1, log_interval=10)

# custom logging loop used in their guide:
train_loss, train_gap = trainer._train_epoch(train_loader)
val_loss, val_gap = trainer._validate(val_loader)

trainer.save_checkpoint('model_checkpoint.pt', include_history=True)
trainer.load_checkpoint('model_checkpoint.pt')
"""


def make_data(
    n: int, rng: np.random.Generator, values: tuple[int, ...] = (2, 2)
) -> tuple[np.ndarray, np.ndarray]:
    """Protected columns first (codes), then 6 features; the label depends on the attributes."""
    attrs = [rng.integers(0, k, n) for k in values]
    shift = sum((0.8 - 0.5 * i) * a for i, a in enumerate(attrs))
    f = rng.normal(size=(n, 6)) + shift[:, None]
    logit = f[:, 0] + 0.5 * f[:, 1] - 0.3 * f[:, 2] + shift
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    return np.column_stack([*attrs, f]).astype(np.float32), y


def brute_force_gaps(pred: np.ndarray, codes: np.ndarray) -> list[float]:
    """|m_0 − m_1| for a binary attribute, max_v |m_v − m̄| otherwise, by plain loops."""
    gaps = []
    for a in range(codes.shape[1]):
        values = sorted(set(codes[:, a].tolist()))
        means = [
            float(np.mean([p for p, c in zip(pred, codes[:, a], strict=True) if c == v])) for v in values
        ]
        if len(values) == 2:
            gaps.append(abs(means[0] - means[1]))
        else:
            gaps.append(max(abs(m - float(np.mean(pred))) for m in means))
    return gaps


def inference_outputs(model: FairModel, loader) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    preds, codes = [], []
    with torch.no_grad():
        for x, _ in loader:
            preds.append(model(x).reshape(-1).double().numpy())
            codes.append(x[:, model.protected_attr_idx].long().numpy())
    return np.concatenate(preds), np.concatenate(codes)


def run_guide(tmp_path, monkeypatch, enforcement: str, seed: int = 0) -> dict:
    """Execute GUIDE unchanged. Its scheduler refers to ``optimizer``, the Adam instance
    created inline; the ``optim`` shim binds that name as the guide implies."""
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    X_train, y_train = make_data(4000, rng)
    X_val, y_val = make_data(2000, rng)
    ns: dict = {}

    def adam(*args, **kwargs):
        ns["optimizer"] = optim.Adam(*args, **kwargs)
        return ns["optimizer"]

    guide = GUIDE  # "default": verbatim, so FairModel's default enforcement (projection here)
    if enforcement != "default":
        guide = guide.replace(
            "fairness_metric='mean_pred')", f"fairness_metric='mean_pred', enforcement='{enforcement}')"
        )
    ns.update(
        X_train=X_train, y_train=y_train, X_val=X_val, y_val=y_val, nn=nn, ReduceLROnPlateau=ReduceLROnPlateau
    )
    ns["optim"] = SimpleNamespace(Adam=adam)
    fit = FairTrainer.fit

    def fit_and_check(self, *args, **kwargs):  # record the state right after fit, as the acceptance asks
        history = fit(self, *args, **kwargs)
        ns["after_fit"] = inference_outputs(self.model, args[1])
        ns["after_fit_eval"] = self.evaluate(args[1])
        return history

    monkeypatch.setattr(FairTrainer, "fit", fit_and_check)
    exec(compile(guide, "guide", "exec"), ns)
    return ns


@pytest.mark.parametrize("enforcement", ["default", "lagrangian"])
def test_guide_runs_and_the_pooled_validation_gap_of_each_attribute_is_within_tolerance(
    tmp_path, monkeypatch, enforcement
):
    ns = run_guide(tmp_path, monkeypatch, enforcement)
    trainer, history = ns["trainer"], ns["history"]
    assert trainer.model.enforcement == ("projection" if enforcement == "default" else enforcement)
    assert trainer.optimizer is ns["optimizer"]  # the scheduler steps the trainer's optimizer
    for key in (
        "train_loss",
        "val_loss",
        "train_fairness_gap",
        "val_fairness_gap",
        "learning_rate",
        "multipliers",
    ):
        assert len(history[key]) == len(history["train_loss"]) >= 1
    pred, codes = ns["after_fit"]
    assert len(pred) == 2000  # every validation row
    gaps = brute_force_gaps(pred, codes)
    assert len(gaps) == 2 and max(gaps) <= EPS, gaps
    library = list(ns["after_fit_eval"]["attribute_gaps"].values())
    np.testing.assert_allclose(library, gaps, atol=1e-6)
    if enforcement == "lagrangian":
        assert len(history["multipliers"][-1]) == 8  # 2 attributes x 2 values x (above, below)
        assert any(m > 0 for ms in history["multipliers"] for m in ms)
    else:
        assert history["multipliers"][-1] == []
    # the guide's tail ran: the checkpoint exists and reloads
    assert (tmp_path / "model_checkpoint.pt").is_file()
    assert isinstance(ns["val_loss"], float) and isinstance(ns["val_gap"], float)


# -- small fixtures for the weakness tests ------------------------------------------------


def small_setup(
    enforcement="lagrangian",
    metric="mean_pred",
    bounds=(-100.0, 100.0),
    values=(2, 2),
    seed=0,
    **trainer_kwargs,
):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    X_train, y_train = make_data(1200, rng, values)
    X_val, y_val = make_data(601, rng, values)
    train, val = create_stratified_dataloaders(
        X_train,
        y_train,
        X_val,
        y_val,
        protected_attr_idx=list(range(len(values))),
        batch_size_train=200,
        batch_size_eval=200,
    )
    model = FairModel(
        X_train.shape[1],
        [16],
        1,
        list(range(len(values))),
        bounds,
        EPS,
        b_tau=100,
        fairness_metric=metric,
        enforcement=enforcement,
    )
    opt = optim.Adam(model.parameters(), lr=3e-3)
    criterion = nn.BCELoss() if bounds == (0.0, 1.0) else nn.BCEWithLogitsLoss()
    trainer = FairTrainer(model, criterion, opt, device="cpu", **trainer_kwargs)
    return trainer, train, val, (X_val, y_val)


def test_weakness1_no_cvxpy_layer_is_built_and_projection_training_is_exact():
    # in a fresh interpreter (the test suite itself imports cvxpy for its cross-checks)
    script = (
        "import sys, torch; from constrained_fairness import fair_projection; "
        "y = torch.rand(64, requires_grad=True); "
        "z = fair_projection(y, torch.randint(0, 2, (64, 2)), 0.01, (0.0, 1.0)); "
        "z.sum().backward(); print(sorted(m for m in sys.modules if 'cvx' in m))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    trainer, train, val, _ = small_setup("projection")
    trainer.fit(train, val, epochs=3, verbose=0)
    trainer.model.train()
    x, _ = next(iter(train))
    out = trainer.model(x).detach().reshape(-1).double().numpy()
    assert (
        max(brute_force_gaps(out, x[:, :2].long().numpy())) <= EPS + 1e-6
    )  # each training batch is feasible


def test_weakness2_bounds_hold_exactly_with_bce_loss_and_outputs_are_float32():
    trainer, train, val, _ = small_setup("projection", bounds=(0.0, 1.0))
    with torch.no_grad():  # push raw outputs far outside [0, 1]
        trainer.model.network[-1].bias.fill_(5.0)
    trainer.fit(train, val, epochs=3, verbose=0)  # BCELoss would raise on any value outside [0, 1]
    for mode in (True, False):
        trainer.model.train(mode)
        for x, _ in val:
            out = trainer.model(x).detach()
            assert out.dtype == torch.float32
            assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_weakness3_checkpoint_after_fit_loads_with_weights_only(tmp_path):
    trainer, train, val, _ = small_setup()
    history = trainer.fit(train, val, epochs=3, verbose=0)
    history["train_loss"][0] = np.float64(history["train_loss"][0])  # numpy scalars must not leak in
    trainer.save_checkpoint(tmp_path / "ck.pt")
    state = torch.load(tmp_path / "ck.pt", weights_only=True)
    assert all(type(v) is float for v in state["history"]["train_loss"])
    assert state["history"]["val_loss"] == [pytest.approx(v) for v in history["val_loss"]]


def test_weakness4_batches_change_between_epochs_and_no_evaluation_row_is_dropped():
    trainer, train, val, (X_val, _) = small_setup()
    first, second = [x for x, _ in train], [x for x, _ in train]
    assert not all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    trainer.fit(train, val, epochs=1, verbose=0)
    result = trainer.evaluate(val)
    assert result["n"] == len(X_val) == 601
    pred, _ = inference_outputs(trainer.model, val)
    assert len(pred) == 601


def test_weakness5_many_multi_valued_attributes_missing_groups_and_batch_size_one():
    trainer, train, val, (X_val, _) = small_setup(values=(3, 2, 4))
    history = trainer.fit(train, val, epochs=3, verbose=0)
    assert len(history["val_attribute_gaps"][-1]) == 3
    assert len(trainer.multipliers()) == 2 * (3 + 2 + 4)
    model = trainer.model.eval()
    x = torch.as_tensor(X_val[:300])
    one_by_one = torch.cat([model(x[i : i + 1]) for i in range(len(x))])
    small_batch = model(x[:50])  # < b_tau: offsets, row by row deterministic
    # equal up to the network's own float32 rounding, which BLAS varies with the batch size
    torch.testing.assert_close(one_by_one[:50], small_batch, rtol=0, atol=1e-6)
    # the offsets are the calibration's per-cell mean shift, added to the network's output
    cells = {
        tuple(c): float(o) for c, o in zip(model.offset_cells.tolist(), model.offset_values, strict=True)
    }
    raw = model.network(x).reshape(-1)
    expected = torch.stack([raw[i] + cells[tuple(x[i, :3].long().tolist())] for i in range(len(x))])
    torch.testing.assert_close(one_by_one.reshape(-1), expected.clamp(-100, 100), rtol=0, atol=1e-6)
    # a large batch missing a value of attribute 0 is not projected with that constraint dropped
    missing = x[x[:, 0] != 2][:120]
    assert len(missing) >= model.b_tau
    torch.testing.assert_close(model(missing), one_by_one[(x[:, 0] != 2)][:120], rtol=0, atol=1e-6)
    # a large batch with every value is projected: every attribute's batch gap is within ε
    full = torch.as_tensor(X_val[300:])
    gaps = brute_force_gaps(model(full).reshape(-1).double().detach().numpy(), full[:, :3].long().numpy())
    assert max(gaps) <= EPS + 1e-6


@pytest.mark.parametrize("metric", ["equalized_odds", "mean_residual"])
def test_weakness6_inference_never_reads_labels(metric):
    assert list(inspect.signature(FairModel.forward).parameters) == ["self", "x"]
    trainer, train, val, (X_val, y_val) = small_setup(metric=metric)
    trainer.fit(train, val, epochs=2, verbose=0)
    x = torch.as_tensor(X_val)
    a = trainer.model.predict(x)
    y_flipped = torch.as_tensor(1 - y_val)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y_flipped), batch_size=200)
    b = torch.cat([trainer.model.predict(bx) for bx, _ in loader])
    torch.testing.assert_close(a, b, rtol=0, atol=0)  # same predictions whatever the labels
    torch.testing.assert_close(a, trainer.model.network(x).clamp(-100, 100), rtol=0, atol=0)


def test_weakness7_multipliers_and_offsets_survive_save_and_load(tmp_path):
    trainer, train, val, (X_val, _) = small_setup()
    trainer.fit(train, val, epochs=4, verbose=0)
    multipliers = trainer.multipliers()
    assert any(m > 0 for m in multipliers)
    x = torch.as_tensor(X_val[:7])
    expected = trainer.model.predict(x)
    torch.save(trainer.model.state_dict(), tmp_path / "model.pt")
    fresh = FairModel(X_val.shape[1], [16], 1, [0, 1], (-100.0, 100.0), EPS, b_tau=100)
    fresh.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))
    assert fresh.multipliers.tolist() == multipliers
    torch.testing.assert_close(fresh.predict(x), expected, rtol=0, atol=0)
    # the trainer checkpoint restores them into Cooper's multiplier too
    trainer.save_checkpoint(tmp_path / "ck.pt")
    other, *_ = small_setup(seed=1)
    other.load_checkpoint(tmp_path / "ck.pt")
    assert other._constraint.multiplier_values().tolist() == multipliers
    torch.testing.assert_close(other.model.predict(x), expected, rtol=0, atol=0)


def test_weakness8_best_feasible_weights_are_restored_without_patience_running_out():
    trainer, train, val, _ = small_setup(early_stopping_patience=None)
    snapshots = []
    original = trainer.early_stopping.update

    def spy(epoch, loss, gap):
        snapshots.append({k: v.clone() for k, v in trainer.model.state_dict().items()})
        return original(epoch, loss, gap)

    trainer.early_stopping.update = spy
    history = trainer.fit(train, val, epochs=8, verbose=0)
    feasible = [g <= EPS + 1e-6 for g in history["val_fairness_gap"]]
    assert any(feasible)
    losses = [loss if ok else np.inf for loss, ok in zip(history["val_loss"], feasible, strict=True)]
    best = int(np.argmin(losses))  # lowest validation loss among feasible epochs (δ = 1e-5 aside)
    assert trainer.early_stopping.best_epoch == best + 1
    for key, value in trainer.model.state_dict().items():
        torch.testing.assert_close(value, snapshots[best][key], rtol=0, atol=0)


# -- the pieces ------------------------------------------------------------------------------


def test_mean_prediction_gap_rows_and_attribute_gaps_match_brute_force():
    rng = np.random.default_rng(3)
    codes = np.column_stack([rng.integers(0, 2, 300), rng.integers(0, 3, 300)])
    pred = rng.normal(size=300)
    model = FairModel(2, [], 1, [0, 1], fairness_tolerance=0.1)
    model.set_groups(torch.as_tensor(codes))
    constraint = MeanPredictionGap(model.grouping(), 0.1)
    outputs = BatchOutputs(
        torch.as_tensor(pred).float().unsqueeze(1), torch.zeros(300), torch.as_tensor(codes), torch.zeros(300)
    )
    np.testing.assert_allclose(
        attribute_gaps(constraint, outputs).numpy(), brute_force_gaps(pred, codes), atol=1e-6
    )
    rows = constraint.evaluate(outputs)  # (above/below, groups a0=0, a0=1, a1=0, a1=1, a1=2)
    m = [pred[codes[:, 0] == v].mean() for v in (0, 1)] + [pred[codes[:, 1] == v].mean() for v in (0, 1, 2)]
    ref = [m[1], m[0], *([pred.mean()] * 3)]
    np.testing.assert_allclose(rows[0].numpy(), np.array(m) - ref - 0.1, atol=1e-6)
    np.testing.assert_allclose(rows[1].numpy(), np.array(ref) - m - 0.1, atol=1e-6)


def test_early_stopping_ranks_feasible_epochs_by_loss_and_falls_back_to_least_violating():
    stop = EarlyStopping(patience=2, delta=0.0, metric="best_feasible", tolerance=0.1)
    assert stop.update(1, loss=0.5, gap=0.3)  # infeasible: best so far
    assert stop.update(2, loss=0.9, gap=0.2)  # less violating
    assert stop.update(3, loss=0.9, gap=0.05)  # first feasible beats any infeasible
    assert not stop.update(4, loss=0.1, gap=0.15)  # infeasible never beats feasible
    assert stop.update(5, loss=0.8, gap=0.1)  # feasible, lower loss
    assert not stop.update(6, loss=0.85, gap=0.0)
    assert not stop.should_stop
    assert not stop.update(7, loss=0.8, gap=0.0)
    assert stop.should_stop and stop.best_epoch == 5
    by_loss = EarlyStopping(patience=None, delta=0.01, metric="loss", tolerance=0.1)
    assert by_loss.update(1, 0.5, 9.0) and not by_loss.update(2, 0.495, 0.0) and by_loss.update(3, 0.48, 9.0)


def test_resume_from_checkpoint_continues_bit_identically(tmp_path):
    a, train_a, val_a, _ = small_setup()
    a.fit(train_a, val_a, epochs=2, verbose=0)
    a.save_checkpoint(tmp_path / "ck.pt")
    a.fit(train_a, val_a, epochs=2, verbose=0)
    b, train_b, val_b, _ = small_setup()
    b.load_checkpoint(tmp_path / "ck.pt")
    for _ in range(2):  # advance the fresh loader's epoch counter as far as a's
        iter(train_b).__next__()
    b.fit(train_b, val_b, epochs=2, verbose=0)
    assert a.history == b.history
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        torch.testing.assert_close(va, vb, rtol=0, atol=0, msg=k)


def test_class_metric_demographic_parity_trains_and_reduces_the_gap():
    results = {}
    for name, tol in (("loose", 1.0), ("tight", 0.02)):
        torch.manual_seed(0)
        rng = np.random.default_rng(0)
        X, y = make_data(2000, rng, (2,))
        (train,) = create_stratified_dataloaders(X, y, protected_attr_idx=0, batch_size_train=250)
        model = FairModel(
            X.shape[1], [16], 1, 0, fairness_tolerance=tol, fairness_metric="demographic_parity"
        )
        trainer = FairTrainer(
            model, nn.BCEWithLogitsLoss(), optim.Adam(model.parameters(), lr=1e-2), device="cpu"
        )
        trainer.fit(train, epochs=15, verbose=0)
        pred = (model.predict(torch.as_tensor(X))[:, 0] > 0).double().numpy()
        results[name] = brute_force_gaps(pred, X[:, :1].astype(int))[0]
    assert results["tight"] < 0.5 * results["loose"], results


def test_logging_writes_history_and_tensorboard(tmp_path):
    trainer, train, val, _ = small_setup(log_dir=tmp_path / "logs", tensorboard=True)
    trainer.fit(train, val, epochs=2, verbose=0)
    lines = (tmp_path / "logs" / "history.jsonl").read_text().splitlines()
    assert len(lines) == 2 and '"val_fairness_gap"' in lines[0]
    scalars = tensorboard_scalars(tmp_path / "logs" / "tensorboard" / "fair_trainer")
    losses = scalars["fair_trainer/train_loss"]
    assert losses == [
        (1, pytest.approx(trainer.history["train_loss"][0])),
        (2, pytest.approx(trainer.history["train_loss"][1])),
    ]


def test_tensorboard_after_loading_a_checkpoint_shows_each_epoch_once(tmp_path, monkeypatch):
    """fit 2 epochs, checkpoint, fit 2 more, reload the checkpoint and fit 2 again: TensorBoard
    shows epochs 1-4 once each, epochs 3-4 from the last fit (the earlier ones are purged).

    The event-file counter starts at 9, so the three files' counters (9, 10, 11) would sort
    out of order as text if they were opened within the same second."""
    from tensorboard.summary.writer import event_file_writer

    monkeypatch.setattr(event_file_writer, "_global_uid", event_file_writer.AtomicCounter(9))
    trainer, train, val, _ = small_setup(log_dir=tmp_path / "logs", tensorboard=True)
    trainer.fit(train, val, epochs=2, verbose=0)
    trainer.save_checkpoint(tmp_path / "c.pt")
    trainer.fit(train, val, epochs=2, verbose=0)
    first_attempt = trainer.history["train_loss"][2:]
    trainer.load_checkpoint(tmp_path / "c.pt")
    trainer.optimizer.param_groups[0]["lr"] *= 3  # so that the second attempt's losses differ
    trainer.fit(train, val, epochs=2, verbose=0)
    second_attempt = trainer.history["train_loss"][2:]
    assert second_attempt != first_attempt
    shown = tensorboard_scalars(tmp_path / "logs" / "tensorboard" / "fair_trainer")["fair_trainer/train_loss"]
    assert [step for step, _ in shown] == [1, 2, 3, 4]
    assert [value for _, value in shown[2:]] == pytest.approx(second_attempt)


def test_verbose_prints_every_log_interval(capsys):
    trainer, train, val, _ = small_setup(early_stopping_patience=None)
    trainer.fit(train, val, epochs=4, verbose=1, log_interval=2)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Epoch")]
    assert [line.split(" |")[0] for line in lines] == ["Epoch 1", "Epoch 2", "Epoch 4"]


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"protected_attr_idx": 8}, ConfigError, "protected_attr_idx 8 is out of range for input_dim=8"),
        ({"protected_attr_idx": [0, 0]}, ConfigError, "names a column twice"),
        ({"prediction_bounds": (1.0, 1.0)}, ConfigError, "lb must be < ub"),
        ({"prediction_bounds": (2.0, -1.0)}, ConfigError, "lb must be < ub"),
        ({"fairness_tolerance": -0.1}, ConfigError, "fairness_tolerance must be a finite number >= 0"),
        ({"fairness_metric": "mean_prd"}, ConfigError, "did you mean 'mean_pred'"),
        (
            {"enforcement": "projection", "fairness_metric": "demographic_parity"},
            ConfigError,
            "needs enforcement",
        ),
        ({"output_dim": 3}, ConfigError, "use output_dim=1"),
        ({"b_tau": 1}, ConfigError, "b_tau must be an integer >= 2"),
    ],
)
def test_bad_model_arguments_are_one_line_errors(kwargs, error, message):
    args = {"input_dim": 8, "hidden_dims": [4], **kwargs}
    with pytest.raises(error, match=message) as info:
        FairModel(**args)
    assert "\n" not in str(info.value)


def test_non_discrete_protected_column_and_unknown_values_are_one_line_errors():
    rng = np.random.default_rng(0)
    X, y = make_data(400, rng)
    X[:, 1] = rng.normal(size=400)  # not codes
    model = FairModel(8, [4], 1, [0, 1])
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.as_tensor(X), torch.as_tensor(y)), 100
    )
    trainer = FairTrainer(model, nn.BCEWithLogitsLoss(), optim.Adam(model.parameters()), device="cpu")
    with pytest.raises(DataError, match="protected column 1 of X is not discrete"):
        trainer.train_epoch(loader)
    good = FairModel(8, [4], 1, [0])
    good.set_groups(torch.tensor([[0], [1]]))
    with pytest.raises(DataError, match="has value 5, which the training data did not have"):
        good.group_indices(torch.tensor([[5]]))
    with pytest.raises(DataError, match="has a single value 0"):
        good.set_groups(torch.zeros(3, 1, dtype=torch.long))


def test_infeasible_batches_cannot_arise_and_a_foreign_checkpoint_is_rejected(tmp_path):
    """With lb < ub the constant vector z = t satisfies every mean-gap constraint, so no batch is
    infeasible within valid bounds; bounds without room (lb >= ub) are rejected up front (above).
    An extreme batch is still projected exactly."""
    model = FairModel(3, [], 1, [0], prediction_bounds=(0.0, 1e-6), fairness_tolerance=0.0, b_tau=2)
    with torch.no_grad():
        model.network[0].weight.fill_(1e3)
    x = torch.tensor([[0.0, 5.0, -5.0], [1.0, -9.0, 9.0], [1.0, 2.0, 3.0]])
    out = model.predict(x).reshape(-1).double().numpy()
    assert brute_force_gaps(out, np.array([[0], [1], [1]]))[0] <= 1e-6
    torch.save({"format": "something else"}, tmp_path / "foreign.pt")
    trainer = FairTrainer(model, nn.BCELoss(), optim.SGD(model.parameters(), lr=0.1), device="cpu")
    with pytest.raises(CheckpointError, match="is not a FairTrainer checkpoint"):
        trainer.load_checkpoint(tmp_path / "foreign.pt")


def test_uncalibrated_small_batches_warn_once():
    model = FairModel(3, [4], 1, [0]).eval()
    x = torch.tensor([[0.0, 1.0, 2.0]])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model(x)
        model(x)
    assert sum("no inference offsets yet" in str(w.message) for w in caught) == 1


class _PoisonedLoader(torch.utils.data.DataLoader):
    """The batches of ``loader`` with one feature of the first row of batch ``index`` set to
    NaN (its dataset, which calibration and the group scan read, stays clean)."""

    def __init__(self, loader: torch.utils.data.DataLoader, index: int = 1) -> None:
        super().__init__(loader.dataset, batch_sampler=loader.batch_sampler)
        self.index = index

    def __iter__(self):
        for i, (x, y) in enumerate(super().__iter__()):
            if i == self.index:
                x = x.clone()
                x[0, -1] = float("nan")
            yield x, y


def test_fair_trainer_stops_or_skips_a_non_finite_batch_as_the_protocol_does():
    """The shared training step: ``stop`` raises one line before the bad step, ``skip`` drops
    the batch, counts it, and leaves parameters and multipliers finite. (With projection
    enforcement the projection itself refuses NaN predictions, with a one-line DataError.)"""
    from constrained_fairness.errors import TrainingDiverged

    projecting, train, val, _ = small_setup("projection", nonfinite="skip")
    with pytest.raises(DataError, match=r"^predictions contain NaN or inf"):
        projecting.fit(_PoisonedLoader(train, index=0), val, epochs=1, verbose=0)
    enforcement = "lagrangian"
    trainer, train, val, _ = small_setup(enforcement)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    with pytest.raises(TrainingDiverged, match=r"^non-finite loss in epoch 1; .*nonfinite='skip'") as caught:
        trainer.fit(_PoisonedLoader(train, index=0), val, epochs=1, verbose=0)
    assert "\n" not in str(caught.value)
    assert all(torch.equal(p, q) for p, q in zip(trainer.model.parameters(), before, strict=True))
    skipping, train, val, _ = small_setup(enforcement, nonfinite="skip")
    skipping.fit(_PoisonedLoader(train), val, epochs=2, verbose=0)
    assert skipping.skipped == 2  # one batch per epoch
    assert all(bool(torch.isfinite(p).all()) for p in skipping.model.parameters())
    assert all(math.isfinite(m) for m in skipping.multipliers())


def test_fair_trainer_runs_its_forward_pass_in_bf16_with_precision_bf16():
    trainer, train, _, _ = small_setup(precision="bf16")
    dtypes: list[torch.dtype] = []
    first = next(m for m in trainer.model.modules() if isinstance(m, nn.Linear))
    hook = first.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    loss, _ = trainer.train_epoch(train, calibrate=False)
    hook.remove()
    assert dtypes and set(dtypes) == {torch.bfloat16}  # every training forward pass
    assert math.isfinite(loss)
    full, train, _, _ = small_setup()
    dtypes.clear()
    first = next(m for m in full.model.modules() if isinstance(m, nn.Linear))
    hook = first.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    full.train_epoch(train, calibrate=False)
    hook.remove()
    assert set(dtypes) == {torch.float32}
    with pytest.raises(ConfigError, match="precision must be one of fp32, bf16, fp16"):
        small_setup(precision="fp8")
