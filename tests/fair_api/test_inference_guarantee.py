"""The inference guarantee of ``mean_pred`` (``fair_api/guarantee.py``), and the default enforcement.

The gaps and standard errors are recomputed here with plain per-attribute, per-value loops;
the guarantee itself is measured on Adult rows that neither training nor calibration saw.
"""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest
import torch
from torch import nn, optim

from constrained_fairness import FairModel, FairTrainer, create_stratified_dataloaders
from constrained_fairness.constraints.base import BatchOutputs
from constrained_fairness.fair_api import MeanPredictionGap, attribute_gaps
from constrained_fairness.fair_api.guarantee import gap_statistics, z_score
from constrained_fairness.projection import apply_offsets, projection_offsets

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from adult_guide import adult_guide_splits

pytestmark = pytest.mark.filterwarnings("ignore:.*training rows cannot fill")


def loop_statistics(scores: np.ndarray, groups: np.ndarray, sizes: list[int]) -> tuple[list, list]:
    """Gap and SE of each attribute by plain loops over values (the formulas of guarantee.py)."""
    gaps, ses = [], []
    for a, k in enumerate(sizes):
        n = len(scores)
        members = [scores[groups[:, a] == v] for v in range(k)]
        means = [float(np.mean(m)) for m in members]
        w = [float(np.var(m, ddof=1)) / len(m) for m in members]
        p = [len(m) / n for m in members]
        if k == 2:
            gaps.append(abs(means[0] - means[1]))
            ses.append(math.sqrt(w[0] + w[1]))
            continue
        overall = float(np.mean(scores))
        gaps.append(max(abs(m - overall) for m in means))
        rows = []
        for v in range(k):
            var = (1 - p[v]) ** 2 * w[v] + sum(p[u] ** 2 * w[u] for u in range(k) if u != v)
            rows.append(math.sqrt(var))
        ses.append(max(rows))
    return gaps, ses


def test_gap_statistics_match_a_per_value_loop_and_the_constraint():
    rng = np.random.default_rng(3)
    sizes = [2, 4, 3]
    groups = np.column_stack([rng.integers(0, k, 500) for k in sizes])
    scores = rng.normal(size=500) * 3 + groups[:, 0] - 0.5 * groups[:, 1]
    stats = gap_statistics(
        torch.tensor(scores, dtype=torch.float32), torch.tensor(groups), torch.tensor(sizes)
    )
    gaps, ses = loop_statistics(scores.astype(np.float32).astype(np.float64), groups, sizes)
    torch.testing.assert_close(stats.gaps, torch.tensor(gaps, dtype=torch.float64), rtol=1e-9, atol=0)
    torch.testing.assert_close(
        stats.standard_errors, torch.tensor(ses, dtype=torch.float64), rtol=1e-9, atol=0
    )
    assert stats.smallest_group.tolist() == [min(np.bincount(groups[:, a])) for a in range(3)]
    # z_a = Φ⁻¹(1 − 0.05 / (2·r_a)): two-sided, split over the rows (1, 4 and 3 of them)
    z = [1.959963984540054, NormalDist().inv_cdf(1 - 0.05 / 8), NormalDist().inv_cdf(1 - 0.05 / 6)]
    expected = torch.tensor(z, dtype=torch.float64) * stats.standard_errors
    torch.testing.assert_close(stats.allowances(0.95), expected)
    # the gaps are those of the library's mean_pred constraint
    model = FairModel(4, [4], 1, [0, 1, 2])
    model.set_groups(torch.tensor(groups))
    constraint = MeanPredictionGap(model.grouping(), 0.0)
    logits = torch.tensor(scores, dtype=torch.float32)[:, None]
    outputs = BatchOutputs(logits, torch.zeros(500), torch.tensor(groups), torch.zeros(500))
    torch.testing.assert_close(attribute_gaps(constraint, outputs), stats.gaps, rtol=1e-6, atol=1e-6)


def test_a_group_with_one_row_has_an_infinite_standard_error_and_is_reported():
    groups = torch.tensor([[0], [0], [0], [1]])
    stats = gap_statistics(torch.tensor([1.0, 2.0, 3.0, 4.0]), groups, torch.tensor([2]))
    assert math.isinf(float(stats.standard_errors[0])) and float(stats.gaps[0]) == 2.0
    model = FairModel(2, [4], 1, 0, fairness_tolerance=0.5)
    X = torch.tensor([[0.0, 1.0], [0.0, 2.0], [0.0, 3.0], [1.0, 4.0]])
    with pytest.warns(UserWarning, match=r"protected column 0: a group has fewer than 2 calibration rows"):
        model.calibrate(X)
    assert model.guarantee_problems() and math.isinf(float(model.calibration_margins[0]))


@pytest.mark.parametrize("case", ["narrowed", "widened"])
def test_calibration_gaps_meet_the_tightened_tolerance_when_bounds_clip(case):
    """Clipping after the plain projection offsets of the raw scores moves the gaps: below
    the target when moderate scores pass the bounds ("narrowed"), far above it when some rows
    lie far beyond them ("widened": their ``z − ŷ`` inflates the cell's mean offset). The
    offsets of the clipped scores, with the search over the projection's tolerance, bring
    every calibration gap to t = ε − max margin."""
    torch.manual_seed(0)
    n = 4000
    codes = torch.randint(0, 2, (n, 2))
    raw = 2.0 + 1.5 * codes[:, 0] - 1.0 * codes[:, 1] + 1.5 * torch.randn(n)
    if case == "narrowed":
        eps, bounds = 0.3, (0.0, 4.0)
    else:
        eps, bounds = 0.5, (-10.0, 10.0)
        far = (torch.rand(n) < 0.2) & (codes[:, 0] == 0)
        raw = torch.where(far, torch.full_like(raw, -30.0), raw)
    # the network's output is the third column of X
    model = FairModel.wrap(
        _Columns(2), [0, 1], 3, prediction_bounds=bounds, fairness_tolerance=eps, b_tau=10**6
    )
    X = torch.column_stack([codes.float(), raw])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the guarantee holds here: no warning
        model.calibrate(X)
    margins = model.calibration_margins
    stats = gap_statistics(raw.clamp(*bounds), codes, torch.tensor([2, 2]))
    torch.testing.assert_close(margins, z_score(0.95) * stats.standard_errors)
    target = eps - float(margins.max())
    assert 0 < target < eps
    sizes = torch.tensor([2, 2])
    plain = apply_offsets(
        raw[:, None], codes, projection_offsets(raw[:, None], codes, target, bounds), bounds
    )
    plain_gap = float(gap_statistics(plain, codes, sizes).gaps.max())
    assert (plain_gap < target - 1e-2) if case == "narrowed" else (plain_gap > target + 1e-2), plain_gap
    model.eval()
    with torch.no_grad():
        out = torch.cat([model(x) for x in X.split(7)])  # small batches: the offsets alone
    gaps = gap_statistics(out, codes, sizes).gaps
    assert target - 1e-4 <= float(gaps.max()) <= target + 1e-5, (gaps, target)
    assert float(out.min()) >= bounds[0] and float(out.max()) <= bounds[1]


def _draw_rows(generator: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``X = [a, b, score]``: a binary ``a`` (30 % ones), ``b`` of 4 values (40/30/20/10 %),
    and a score that depends on both, with unit noise; and the ``(n, 2)`` codes."""
    a = (torch.rand(n, generator=generator) < 0.3).long()
    b = torch.multinomial(torch.tensor([0.4, 0.3, 0.2, 0.1]), n, replacement=True, generator=generator)
    score = 1.0 * a - 0.5 * b + torch.randn(n, generator=generator)
    return torch.column_stack([a.float(), b.float(), score]), torch.column_stack([a, b])


def test_the_guarantee_fails_at_most_one_minus_the_confidence_of_the_time():
    """The probability statement itself, by simulation: each trial draws 2,000 calibration
    rows and 64 new rows (one small batch) from a fixed distribution, calibrates, and checks
    gap_a(D) ≤ ε + z_a·SE_a(D) per attribute. ε = 0.2 is just above the larger margin (about
    0.19, of the 4-valued attribute), where the bound is tightest. The failure rate of each
    attribute must be within two binomial standard errors of 1 − c = 5 % (judged by the
    allowance of a one-sided z of 1.645 without the union bound, the 4-valued attribute
    fails 9.2 % of these draws)."""
    generator = torch.Generator().manual_seed(0)
    eps, trials, sizes = 0.2, 200, torch.tensor([2, 4])
    failures, held = torch.zeros(2), 0
    for _ in range(trials):
        model = FairModel.wrap(_Columns(2), [0, 1], 3, fairness_tolerance=eps, b_tau=10**9)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a trial whose margin exceeds ε is left out below
            model.calibrate(_draw_rows(generator, 2000)[0])
        new_rows, codes = _draw_rows(generator, 64)
        if model.guarantee_problems():
            continue
        held += 1
        model.eval()
        with torch.no_grad():
            stats = gap_statistics(model(new_rows), codes, sizes)
        failures += (stats.gaps > eps + stats.allowances(0.95)).float()
    assert held >= 0.8 * trials, held  # the condition held in most trials: the test is not vacuous
    limit = 0.05 + 2 * math.sqrt(0.05 * 0.95 / held)
    assert (failures / held <= limit).all(), (failures / held, limit)


class _Columns(nn.Module):
    """The network's output is column ``index`` of X."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.index : self.index + 1] + 0 * self.unused


def fit_adult(seed: int, eps: float, epochs: int = 4, **model_kwargs) -> tuple[FairTrainer, object]:
    torch.manual_seed(seed)
    data = adult_guide_splits(seed)
    train, val, test = create_stratified_dataloaders(
        data.X_train, data.y_train, data.X_val, data.y_val, data.X_test, data.y_test,
        protected_attr_idx=[0, 1], batch_size_train=2000, batch_size_eval=64, seed=seed,
    )  # fmt: skip
    model = FairModel(
        data.X_train.shape[1], [64, 32], 1, [0, 1], (-10.0, 10.0), eps, b_tau=2000, **model_kwargs
    )
    opt = optim.Adam(model.parameters(), lr=1e-3)
    trainer = FairTrainer(model, nn.BCEWithLogitsLoss(), opt, early_stopping_patience=None, device="cpu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(train, val, epochs=epochs, verbose=0)
    trainer.fit_warnings = [str(w.message) for w in caught if "inference guarantee" in str(w.message)]
    return trainer, test


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_held_out_gap_in_batches_of_64_is_within_eps_plus_the_allowance(seed):
    """Adult test rows (used neither to fit nor to calibrate), predicted in batches of 64:
    each attribute's pooled gap is at most ε + z_a·SE_a, the allowance of guarantee.py."""
    eps = 0.2  # on the logit scale; the margins of Adult's 6,032 validation rows are below it
    trainer, test = fit_adult(seed, eps)
    assert trainer.fit_warnings == [] and not trainer.model.guarantee_problems()
    result = trainer.evaluate(test)  # batches of 64 (< b_tau): the offsets only
    model = trainer.model
    preds, codes = [], []
    with torch.no_grad():
        for x, _ in test:
            preds.append(model(x).reshape(-1))
            codes.append(x[:, :2].long())
    stats = gap_statistics(torch.cat(preds), torch.cat(codes), torch.tensor([2, 2]))
    loop_gaps, loop_ses = loop_statistics(torch.cat(preds).double().numpy(), torch.cat(codes).numpy(), [2, 2])
    np.testing.assert_allclose(list(result["attribute_gaps"].values()), loop_gaps, rtol=1e-5, atol=1e-6)
    allowances = [z_score(0.95) * se for se in loop_ses]
    np.testing.assert_allclose(list(result["attribute_allowances"].values()), allowances, rtol=1e-6)
    assert all(g <= eps + a for g, a in zip(loop_gaps, allowances, strict=True)), (loop_gaps, allowances)
    assert result["within_guarantee"] is True
    assert float(stats.gaps.max()) > 0  # a real gap was measured, not a degenerate output


def test_fit_warns_once_when_the_calibration_split_is_too_small_for_eps():
    trainer, _ = fit_adult(0, 0.001, epochs=1)
    assert len(trainer.fit_warnings) == 1
    assert (
        "calibration margin" in trainer.fit_warnings[0]
        and "fairness_tolerance=0.001" in trainer.fit_warnings[0]
    )
    assert trainer.model.guarantee_problems()


def test_default_enforcement_is_projection_for_mean_pred_and_lagrangian_otherwise():
    assert FairModel(4, [4], 1, 0).enforcement == "projection"
    assert FairModel(4, [4], 2, 0, fairness_metric="demographic_parity").enforcement == "lagrangian"
    assert FairModel(4, [4], 1, 0, enforcement="lagrangian").enforcement == "lagrangian"


def test_a_state_dict_without_calibration_margins_still_loads():
    model = FairModel(3, [4], 1, [0])
    model.calibrate(torch.tensor([[0.0, 1.0, 2.0], [0.0, 2.0, 1.0], [1.0, 0.0, 1.0], [1.0, 3.0, 0.5]]))
    state = model.state_dict()
    del state["calibration_margins"]  # a checkpoint written before the margins existed
    fresh = FairModel(3, [4], 1, [0])
    fresh.load_state_dict(state)
    assert fresh.calibration_margins.numel() == 0 and fresh.guarantee_problems() == []
    torch.testing.assert_close(fresh.offset_values, model.offset_values)


def test_a_calibration_gap_left_by_clipping_is_reported():
    """The guarantee's condition is gap_cal + margin ≤ ε per attribute: a gap that the
    offsets could not bring down (clipping) is reported even with a margin below ε."""
    model = FairModel(3, [4], 1, [0, 1], prediction_bounds=(0.0, 1.0), fairness_tolerance=0.05)
    model.calibration_margins = torch.tensor([0.02, 0.02], dtype=torch.float64)
    model.calibration_gaps = torch.tensor([0.03, 0.04], dtype=torch.float64)
    problems = model.guarantee_problems()
    assert len(problems) == 1 and problems[0].startswith("protected column 1: clipping")
    model.calibration_gaps = torch.tensor([0.03, 0.03], dtype=torch.float64)
    assert model.guarantee_problems() == []
