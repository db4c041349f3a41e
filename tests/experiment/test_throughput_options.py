"""The throughput options of issue #15 inside a whole run (tiny CSV): ``guards.check_every``
and ``guards.fixed_shapes`` change no result on CPU, ``evaluation.every_epochs`` evaluates
every N-th epoch and the last, and ``model.compile`` compiles each model of the run in place
(checkpoints keep their keys); a compiled model's steps match eager ones."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch

from constrained_fairness.config.loading import load_config
from constrained_fairness.constraints.accuracy_gap import ExcessAccuracyGap
from constrained_fairness.constraints.reference import DenseReference
from constrained_fairness.experiment.runner import run_experiment
from constrained_fairness.groups import Grouping
from constrained_fairness.problem import FairnessProblem
from constrained_fairness.training.optimizers import build_cooper_optimizer
from constrained_fairness.training.step import TrainingStep

from ..helpers import tiny_config


def _metrics(tmp_path, name: str, **sections: str) -> bytes:
    folder = tmp_path / name
    folder.mkdir()
    cfg = load_config(tiny_config(folder, methods="[nft, nft_es, el_rb, ceag]", **sections))
    run_experiment(cfg, output=folder / "run")
    return (folder / "run" / "metrics.json").read_bytes()


def test_the_deferred_guard_and_fixed_shapes_leave_a_run_bit_identical(tmp_path):
    """CEAG's dual is SGD in the tiny config, so fixed shapes apply; el_rb too."""
    plain = _metrics(tmp_path, "plain")
    fast = _metrics(tmp_path, "fast", guards="{check_every: 5, fixed_shapes: 'on'}")
    assert plain == fast


def test_evaluation_every_n_epochs(tmp_path):
    cfg = load_config(tiny_config(tmp_path, methods="[nft]", evaluation="{every_epochs: 3}"))
    run_experiment(cfg, output=tmp_path / "run")
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    evaluated = {(r["stage"], r["epoch"]): bool(r["splits"]) for r in history}
    # dense: 2 epochs (the last is evaluated); sparse: GMP epochs 0-1, then NFT 2-3
    assert evaluated[("dense", 0)] is False and evaluated[("dense", 1)] is True
    assert [evaluated[("nft", e)] for e in (2, 3)] == [True, True]  # epoch 2: (2+1) % 3 == 0; 3: the last
    assert (tmp_path / "run" / "metrics.json").exists()


def test_model_compile_compiles_every_model_of_the_run_in_place(tmp_path, monkeypatch):
    compiled = []
    monkeypatch.setattr(
        torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(type(self).__name__)
    )
    cfg = load_config(
        tiny_config(tmp_path, methods="[nft]", model="{name: mlp, hidden: [16, 16], compile: true}")
    )
    run_experiment(cfg, output=tmp_path / "run")
    assert compiled and set(compiled) == {"MLP"}
    state = torch.load(next((tmp_path / "run" / "checkpoints").glob("nft*.pt")), weights_only=True)
    assert not any("_orig_mod" in key for key in state["model"])


@pytest.mark.skipif(
    shutil.which("cc") is None and shutil.which("gcc") is None, reason="inductor needs a C compiler"
)
def test_compiled_ceag_steps_match_eager_ones():
    """Three CEAG steps of a compiled MLP and of its eager copy: parameters within
    1e-5 relative (inductor may fuse and reorder float32 arithmetic), multipliers alike."""
    torch.manual_seed(0)
    inputs, targets = torch.randn(96, 6), torch.randint(0, 2, (96,))
    attributes = torch.randint(0, 4, (96, 1))
    eager = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    compiled = copy.deepcopy(eager)
    compiled.compile()
    runs = []
    for model in (eager, compiled):
        reference = DenseReference(
            torch.full((4,), 0.8), torch.full((4,), 0.5), 0.8, 0.5, torch.full((4,), 0.25)
        )
        problem = FairnessProblem(
            [ExcessAccuracyGap(reference, 0.0, 4, grouping=Grouping.single(4))], ["ceag"]
        )
        from constrained_fairness.config import DualConfig

        optimizer = build_cooper_optimizer(
            problem, torch.optim.SGD(model.parameters(), lr=0.1), [DualConfig(lr=0.5)]
        )
        step = TrainingStep(model, problem, optimizer)
        for b in range(3):
            rows = slice(32 * b, 32 * (b + 1))
            step(model=model, inputs=inputs[rows], targets=targets[rows], attributes=attributes[rows])
        runs.append((model, problem))
    (a, pa), (b, pb) = runs
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.allclose(p, q, rtol=1e-5, atol=1e-5 * float(p.detach().abs().max()))
    assert torch.allclose(pa.ceag.multiplier_values(), pb.ceag.multiplier_values(), rtol=1e-5, atol=1e-6)
    assert pa.ceag.multiplier_values().max() > 0
