"""Paper mode against the reference code (github merajhashemi/balancing-act), rule by rule.

Each reference rule is re-implemented here from the reference's source, independently of the
library: the UTKFace split, the transforms, the EL update, the GMP schedule, the weight-decay
scope. The library's paper mode must give the same indices, tensors and multipliers.
"""

from __future__ import annotations

import json
import math
from collections import deque
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as tv

from constrained_fairness.cli import main
from constrained_fairness.config import DualConfig, FinetuneConfig, load_config
from constrained_fairness.constraints import AbsoluteEqualizedLoss, EqualizedLoss
from constrained_fairness.data.cifar100 import load_cifar100
from constrained_fairness.data.fairface import load_fairface
from constrained_fairness.data.utkface import load_utkface
from constrained_fairness.groups import Grouping
from constrained_fairness.models import build_model
from constrained_fairness.problem import FairnessProblem
from constrained_fairness.sparsity import MagnitudePruner, branch_epoch, prunable_layers, sparsity_schedule
from constrained_fairness.training.optimizers import (
    build_cooper_optimizer,
    build_dual_optimizer,
    build_primal_optimizer,
    sparse_optimizer,
)

from ..image_fixtures import make_cifar100, make_fairface, make_utkface

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
CIFAR_REF = ([0.507, 0.4865, 0.4409], [0.2673, 0.2564, 0.2761])
# the three files of the public UTKFace release with a missing label, which the reference removes
REFERENCE_CORRUPT = (
    "61_1_20170109150557335.jpg.chip.jpg",
    "61_1_20170109142408075.jpg.chip.jpg",
    "39_1_20170116174525125.jpg.chip.jpg",
)


# -- the UTKFace split ------------------------------------------------------------------------


def reference_utkface_split(
    folder: Path, test_ratio: float = 0.2, corrupt: tuple[str, ...] = REFERENCE_CORRUPT
) -> tuple[list[str], list[str]]:
    """``src/datasets/utkface.py``: sorted ``*.jpg``, the ``corrupt`` files removed, then
    ``RandomState(1357).permutation``; the first ``int(test_ratio N)`` are test."""
    files = sorted(folder.glob("*.jpg"))
    for name in corrupt:
        files.remove(folder / name)
    indices = np.random.RandomState(seed=1357).permutation(len(files))
    test_size = int(test_ratio * len(indices))
    return [files[i].name for i in indices[test_size:]], [files[i].name for i in indices[:test_size]]


def test_utkface_reference_split_matches_the_reference_rule(tmp_path: Path) -> None:
    root = make_utkface(tmp_path / "UTKFace", n=57, seed=3)
    rng = np.random.default_rng(0)
    for name in REFERENCE_CORRUPT:  # malformed: the race field is missing
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(root / name, "JPEG")
    with pytest.warns(UserWarning, match="skipped 3 of 60"):
        data = load_utkface(root, split="reference", val_fraction=0.0, transforms="reference")
    train, test = reference_utkface_split(root)
    assert len(data.test) == int(0.2 * 57) == 11  # truncated, not rounded (11.4)
    assert sorted(p.name for p in data.test.paths) == sorted(test)
    assert sorted(p.name for p in data.train.paths) == sorted(train)
    assert len(data.val) == 0
    # labels come from the names, as in the reference's _load_attrs (race is the third field)
    races = {name: int(name.split("_")[2]) for name in train}
    assert [races[p.name] for p in data.train.paths] == data.train.targets.tolist()
    # the seeded split is another one: the key matters
    with pytest.warns(UserWarning):
        seeded = load_utkface(root, split="seeded", val_fraction=0.0, seed=0)
    assert sorted(p.name for p in seeded.test.paths) != sorted(test)


def test_utkface_reference_split_with_val_keeps_the_papers_test(tmp_path: Path) -> None:
    root = make_utkface(tmp_path / "UTKFace", n=40)
    _, test = reference_utkface_split(root, corrupt=())
    data = load_utkface(root, split="reference", val_fraction=0.1)
    assert sorted(p.name for p in data.test.paths) == sorted(test)
    assert len(data.val) == 3 and not {p.name for p in data.val.paths} & set(test)


# -- transforms -------------------------------------------------------------------------------


def reference_pipeline(dataset: str, train: bool, size: int) -> tv.Compose:
    """``src/datasets/datasets.py``, build_UTKFace / build_FairFace / build_CIFAR100."""
    if dataset == "cifar100":
        return tv.Compose([tv.ToTensor(), tv.Normalize(*CIFAR_REF)])
    steps = [tv.Resize(size)] if dataset == "fairface" else []
    steps.append(tv.ToTensor())
    if train:
        steps.append(tv.RandomHorizontalFlip())
    steps.append(tv.Normalize(*IMAGENET))
    return tv.Compose(steps)


def describe(compose: tv.Compose) -> list[tuple[str, object]]:
    """Each step's class and parameters."""
    out = []
    for step in compose.transforms:
        params = {
            "Normalize": lambda s: (list(s.mean), list(s.std)),
            "Resize": lambda s: s.size,
            "RandomHorizontalFlip": lambda s: s.p,
        }.get(type(step).__name__, lambda s: None)(step)
        out.append((type(step).__name__, params))
    return out


def load_split(dataset: str, root: Path, size: int):
    if dataset == "utkface":
        return load_utkface(root, transforms="reference", split="reference", val_fraction=0.0)
    if dataset == "fairface":
        return load_fairface(root, transforms="reference", image_size=size, val_fraction=0.0)
    return load_cifar100(root, transforms="reference", val_fraction=0.0)


@pytest.mark.parametrize("dataset", ["utkface", "fairface", "cifar100"])
def test_reference_transforms_equal_the_references_steps_and_tensors(tmp_path: Path, dataset: str) -> None:
    size = 20  # FairFace: Resize(int) resizes the shorter side, here from the fixture's 12 pixels
    make = {"utkface": make_utkface, "fairface": make_fairface, "cifar100": make_cifar100}[dataset]
    root = make(tmp_path / dataset)
    data = load_split(dataset, root, size)
    for split, train in (("train", True), ("test", False)):
        ours = getattr(data, split).transform
        assert describe(ours.steps) == describe(reference_pipeline(dataset, train, size)), split
    # on a fixed image, decoded as the reference does (PIL, then its pipeline), same flip draw
    for split, train in (("train", True), ("test", False)):
        images = getattr(data, split)
        for index in range(3):
            if images.paths is not None:
                with Image.open(images.paths[index]) as pil:
                    pil.load()
                    source = pil.copy()
            else:  # CIFAR: torchvision's CIFAR100.__getitem__ makes a PIL image of the HWC array
                source = Image.fromarray(images.array[index].transpose(1, 2, 0))
            for seed in (0, 1, 2, 3):  # both flip outcomes occur over these seeds
                torch.manual_seed(seed)
                expected = reference_pipeline(dataset, train, size)(source)
                torch.manual_seed(seed)
                got = images[index][0]
                assert torch.equal(got, expected), (split, index, seed)


def test_paper_configs_name_every_reference_choice() -> None:
    for dataset in ("utkface", "fairface", "cifar100"):
        cfg = load_config(CONFIGS / dataset / "base.yaml")
        assert cfg.data.transforms == "reference" and cfg.data.val_fraction == 0.0
        assert cfg.pruning.schedule == "reference" and cfg.finetune.weight_decay_scope == "classifier"
        assert cfg.pruning.rounding == "ceil_pruned"
        assert cfg.el.form == "reference" and cfg.el.overall_estimate == "unweighted"
        assert cfg.ceag.overall_estimate == "unweighted"
        # the reference's total epochs: 60, 47, 50 (CIFAR's code runs 50, its text says 15 + 45)
        total = cfg.pruning.epochs + cfg.finetune.epochs
        assert total == {"utkface": 60, "fairface": 47, "cifar100": 50}[dataset]
        # LR milestones: the reference's int(m · total) epochs of its fractions
        fractions = {"utkface": (0.6, 0.8, 0.9), "fairface": (0.9,), "cifar100": (0.6, 0.8, 0.9)}[dataset]
        primal, schedule = sparse_optimizer(torch.nn.Linear(2, 2), cfg.finetune, total)
        assert sorted(schedule.milestones) == [int(m * total) for m in fractions]
        # the primal optimizer and batch: SGD 1e-2 m 0.9, 128; FairFace 1e-3 Nesterov 0.95, 256
        group = primal.param_groups[0]
        expected = {"utkface": (1e-2, 0.9, False, 128), "fairface": (1e-3, 0.95, True, 256)}
        lr, momentum, nesterov, batch = expected.get(dataset, (1e-2, 0.9, False, 128))
        assert isinstance(primal, torch.optim.SGD) and cfg.finetune.batch_size == batch
        assert (group["lr"], group["momentum"], group["nesterov"]) == (lr, momentum, nesterov)
        # the dual: plain SGD ascent (no momentum); its LR, ε and k per dataset
        dual = build_dual_optimizer([torch.nn.Parameter(torch.zeros(3))], cfg.ceag.dual)
        assert isinstance(dual, torch.optim.SGD) and dual.param_groups[0]["maximize"]
        assert dual.param_groups[0]["momentum"] == 0
        dual_lr, tolerance = {"utkface": (1e-4, 0.01), "fairface": (1e-4, 0.01), "cifar100": (1e-2, 0.1)}[
            dataset
        ]
        assert (dual.param_groups[0]["lr"], cfg.ceag.tolerance, cfg.ceag.buffer_size) == (
            dual_lr,
            tolerance,
            40,
        )
    assert load_config(CONFIGS / "utkface" / "base.yaml").data.split == "reference"
    adult = load_config(None)  # the tabular default keeps its calibrated choices
    assert (adult.pruning.schedule, adult.finetune.weight_decay_scope, adult.el.form) == (
        "one_ahead",
        "all",
        "tolerance",
    )


# -- EL ---------------------------------------------------------------------------------------


def reference_el_run(
    model: torch.nn.Module,
    batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    num_groups: int,
    dual_lr: float,
    lr: float,
    buffer: int,
) -> list[torch.Tensor]:
    """The reference's EL (``abs_equality_constraint=True``), written out by hand: per batch the
    group losses in a loop, ``λ[g] += η |L_g − L|`` (dual first, equality: no projection) over the
    observed rows, then SGD on ``L + Σ λ[g] |L_g − L|`` at the same θ. With ``buffer`` > 0 the dual
    uses per-group deques of the last ``buffer`` losses and their plain mean over full groups."""
    lam = torch.zeros(num_groups, dtype=torch.float64)
    deques = [deque(maxlen=buffer) for _ in range(num_groups)]
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    history = []
    for x, y, g in batches:
        losses = F.cross_entropy(model(x), y, reduction="none")
        overall = losses.mean()
        present = sorted(set(g.tolist()))
        proxy = {k: (losses[g == k].mean() - overall).abs() for k in present}
        if buffer == 0:
            strict = {k: float(v.detach()) for k, v in proxy.items()}
        else:
            for k in range(num_groups):
                deques[k].extend(losses.detach()[g == k].tolist())
            full = [k for k in range(num_groups) if len(deques[k]) == buffer]
            means = {k: sum(deques[k]) / buffer for k in full}
            avg = sum(means.values()) / len(full) if full else 0.0
            strict = {k: abs(means[k] - avg) for k in full}
        for k, v in strict.items():
            lam[k] += dual_lr * v
        lagrangian = overall + sum(float(lam[k]) * proxy[k] for k in present)
        optimizer.zero_grad()
        lagrangian.backward()
        optimizer.step()
        history.append(lam.clone())
    return history


@pytest.mark.parametrize("buffer", [0, 6])
def test_el_reference_form_matches_the_hand_written_reference_for_200_steps(buffer: int) -> None:
    torch.manual_seed(0)
    num_groups, n, d = 4, 400, 5
    x = torch.randn(n, d)
    y = (x[:, 0] + 0.5 * torch.randn(n) > 0).long()
    g = torch.randint(0, num_groups, (n,))
    order = [torch.randint(0, n, (16,), generator=torch.Generator().manual_seed(i)) for i in range(200)]
    batches = [(x[i], y[i], g[i]) for i in order]
    dual_lr, lr = 0.5, 0.05  # a large dual step, so that the multipliers visibly move
    reference = torch.nn.Linear(d, 2)
    ours = torch.nn.Linear(d, 2)
    ours.load_state_dict(reference.state_dict())
    expected = reference_el_run(reference, batches, num_groups, dual_lr, lr, buffer)

    frequency = torch.ones(num_groups)  # el.overall_estimate: unweighted
    constraint = AbsoluteEqualizedLoss(Grouping.single(num_groups), buffer, frequency)
    problem = FairnessProblem([constraint], ["el"])
    optimizer = build_cooper_optimizer(
        problem, torch.optim.SGD(ours.parameters(), lr=lr), [DualConfig(lr=dual_lr, optimizer="sgd")]
    )
    for step, (xb, yb, gb) in enumerate(batches):
        kwargs = {"model": ours, "inputs": xb, "targets": yb, "attributes": gb[:, None]}
        optimizer.roll(compute_cmp_state_kwargs=kwargs)
        got = constraint.multiplier_values().double()
        scale = float(expected[step].abs().max()) + 1e-12
        torch.testing.assert_close(got, expected[step], rtol=1e-5, atol=1e-6 * scale)
    final = expected[-1]
    assert float(final.min()) > 0.01  # every multiplier grew (never projected, never negative)
    for p_ours, p_ref in zip(ours.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p_ours, p_ref, rtol=1e-4, atol=1e-5 * float(p_ref.detach().abs().max()))


def test_el_tolerance_form_keeps_small_gaps_at_zero_where_the_reference_grows() -> None:
    """The issue's measurement in small: gaps below the tolerance leave our inequality
    multipliers at 0; the reference's equality multipliers grow by η|L_g − L| every step
    (and ours do too once the tolerance is below the gap)."""
    torch.manual_seed(1)
    x, y, g = torch.randn(64, 3), torch.randint(0, 2, (64,)), torch.randint(0, 2, (64,))
    outputs = {"model": torch.nn.Linear(3, 2), "inputs": x, "targets": y, "attributes": g[:, None]}
    with torch.no_grad():  # the primal LR is 0: the losses, and so the gaps, stay these
        losses = torch.nn.functional.cross_entropy(outputs["model"](x), y, reduction="none")
    gap = max(float((losses[g == k].mean() - losses.mean()).abs()) for k in (0, 1))
    assert gap > 0.01
    values = {}
    for name, constraint in (
        ("tolerance", EqualizedLoss(Grouping.single(2), gap + 0.01, 0)),
        ("below_gap", EqualizedLoss(Grouping.single(2), gap / 2, 0)),
        ("reference", AbsoluteEqualizedLoss(Grouping.single(2), 0)),
    ):
        problem = FairnessProblem([constraint], ["el"])
        primal = torch.optim.SGD(outputs["model"].parameters(), lr=0.0)
        optimizer = build_cooper_optimizer(problem, primal, [DualConfig(lr=1e-2)])
        for _ in range(20):
            optimizer.roll(compute_cmp_state_kwargs=outputs)
        values[name] = constraint.multiplier_values()
    assert torch.count_nonzero(values["tolerance"]) == 0
    assert float(values["below_gap"].max()) > 0
    assert bool((values["reference"] > 0).all())


# -- GMP schedule -----------------------------------------------------------------------------


def reference_sparsity(epoch: int, last: int, final: float, initial: float = 0.0) -> float:
    """``SparsityScheduler.sparsity_amount`` of the reference (init epoch 0, frequency 1)."""
    if epoch <= 0:
        return initial
    if epoch >= last:
        return final
    return final + (initial - final) * (1.0 - epoch / last) ** 3


def test_reference_schedule_prunes_epoch_e_to_s_e_for_e_0_to_T() -> None:
    for final in (0.9, 0.99):
        ours = sparsity_schedule("reference", 15, final)
        assert [ours(e) for e in range(20)] == pytest.approx(
            [reference_sparsity(e, 15, final) for e in range(20)], rel=1e-12, abs=1e-12
        )
        ahead = sparsity_schedule("one_ahead", 15, final)
        assert [ahead(e) for e in range(20)] == pytest.approx(
            [reference_sparsity(e + 1, 15, final) for e in range(20)], rel=1e-12, abs=1e-12
        )
    assert ours(0) == 0.0 and ours(15) == 0.99 and ours(14) < 0.99
    # the mitigation starts at the last pruning epoch: T for the reference, T - 1 for one_ahead
    assert (branch_epoch("reference", 15, False), branch_epoch("one_ahead", 15, False)) == (15, 14)
    assert branch_epoch("reference", 15, True) == 0


def test_a_run_in_reference_schedule_records_the_references_sparsity_per_epoch(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["run", "--output", str(out), "--quiet"]
    for item in (
        "methods=[nft, ceag]",
        "dense.epochs=1",
        "pruning.epochs=4",
        "pruning.schedule=reference",
        "pruning.sparsity=0.9",
        "finetune.epochs=2",
        "evaluation.bootstrap_resamples=2",
        "logging.wandb=disabled",
        "logging.tensorboard=false",
    ):
        args += ["--set", item]
    assert main(args) == 0
    records = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    # each method's history holds the shared pruning epochs 0..T-1, then its own from T = 4
    for method in ("nft", "ceag"):
        epochs = [(r["epoch"], r["sparsity"]) for r in records if r["stage"] == method]
        assert epochs == [(e, pytest.approx(reference_sparsity(e, 4, 0.9))) for e in range(6)], method
    # the sweeps' selection score is logged per epoch: accuracy - max(0, max EAG - eps)
    for r in records:
        if r["stage"] == "dense":
            continue
        train = r["splits"]["train"]
        expected = train["accuracy"] - max(0.0, train["max_eag"] - 0.01)
        assert train["score"] == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_sweeps_select_on_the_score_that_weighs_accuracy_against_max_eag() -> None:
    import yaml

    for path in sorted((CONFIGS / "sweeps").glob("*.yaml")):
        sweep = yaml.safe_load(path.read_text())
        assert sweep["metric"] == {"name": "ceag/splits/train/score", "goal": "maximize"}, path.name


def reference_layer_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """``unstructured_magnitude_prune_layer_``: the ``ceil(s n)`` smallest ``|w|`` are pruned."""
    k = math.ceil(sparsity * weight.numel())
    mask = torch.ones(weight.numel(), dtype=torch.bool)
    mask[torch.topk(weight.abs().flatten(), k=k, largest=False).indices] = False
    return mask.view_as(weight)


def test_ceil_pruned_rounding_prunes_the_references_weights_per_layer() -> None:
    torch.manual_seed(0)
    model = build_model("resnet56", None, 10, width=0.25)
    layers = prunable_layers(model)
    pruner = MagnitudePruner(model, "layerwise", ("first", "last"), rounding="ceil_pruned")
    differs = 0
    for sparsity in (0.3, 0.77, 0.9, 0.99):
        before = {n: m.weight.detach() * pruner.masks[n] for n, m in layers.items()}  # masked, as there
        pruner.prune_to(sparsity)
        for name, weight in before.items():
            expected = reference_layer_mask(weight, sparsity)
            assert torch.equal(pruner.masks[name], expected), (name, sparsity)
            nearest = round((1 - sparsity) * weight.numel())
            differs += int(expected.sum()) != nearest
    assert differs > 0  # the two rules do differ on these layers


# -- weight decay -----------------------------------------------------------------------------


def decayed_after_one_step(scope: str, weight_decay: float = 0.1, lr: float = 0.5) -> dict[str, bool]:
    """Which parameters a zero-gradient SGD step changes; each changed one must be
    ``θ (1 − lr · wd)``, the step of the reference's ``wd/2 ‖θ‖²`` loss term."""
    torch.manual_seed(0)
    model = build_model("resnet56", None, 10, width=0.25)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = FinetuneConfig(lr=lr, momentum=0.9, weight_decay=weight_decay, weight_decay_scope=scope)
    optimizer = build_primal_optimizer(model, cfg)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    changed = {}
    for n, p in model.named_parameters():
        changed[n] = not torch.equal(p, before[n])
        if changed[n]:
            torch.testing.assert_close(p, before[n] * (1 - lr * weight_decay))
    return changed


def test_weight_decay_classifier_scope_decays_only_the_last_layer() -> None:
    paper = load_config(CONFIGS / "fairface" / "base.yaml").finetune.weight_decay_scope
    changed = decayed_after_one_step(paper)
    assert {n for n, c in changed.items() if c} == {"fc.weight", "fc.bias"}
    everything = decayed_after_one_step("all")
    assert all(everything.values()) and len(everything) > 100
    no_norm_bias = {n for n, c in decayed_after_one_step("no_norm_bias").items() if c}
    model = build_model("resnet56", None, 10, width=0.25)
    weights = {
        f"{name}.weight"
        for name, m in model.named_modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
    }
    assert no_norm_bias == weights


# -- a declared excess_accuracy_gap constraint takes the overall estimate too ---------------------


def test_declared_excess_accuracy_gap_takes_overall_estimate() -> None:
    from constrained_fairness.config import ConstraintConfig
    from constrained_fairness.constraints.base import BatchOutputs
    from constrained_fairness.constraints.registry import BuildContext, build_constraint
    from constrained_fairness.errors import ConfigError

    torch.manual_seed(0)
    groups = torch.tensor([0] * 30 + [1] * 10)  # imbalanced, so the two estimates differ
    logits = torch.randn(40, 2)
    targets = torch.randint(0, 2, (40,))
    losses = F.cross_entropy(logits, targets, reduction="none")
    dense = BatchOutputs(logits, targets, groups[:, None], losses)
    context = BuildContext(2, dense)
    frequencies = {}
    for estimate in ("weighted", "unweighted"):
        spec = ConstraintConfig(type="excess_accuracy_gap", tolerance=0.01, overall_estimate=estimate)
        constraint = build_constraint(spec, Grouping.single(2), context)
        frequencies[estimate] = constraint.frequency
    torch.testing.assert_close(frequencies["unweighted"], torch.ones(2))
    torch.testing.assert_close(frequencies["weighted"], torch.tensor([0.75, 0.25]))
    with pytest.raises(ConfigError, match="overall_estimate"):
        load_config(None, ["constraints=[{type: excess_accuracy_gap, overall_estimate: plain}]"])
