"""Registries: datasets, models, methods and constraint types of one's own, by decorator or
by import path, from Python or from a config, without touching the library."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from constrained_fairness.config import ConstraintConfig, load_config
from constrained_fairness.constraints import DemographicParity, EqualizedLoss
from constrained_fairness.constraints.registry import BuildContext, build_constraint
from constrained_fairness.data.custom import from_dataset
from constrained_fairness.errors import ConfigError, DataError
from constrained_fairness.experiment import run_experiment
from constrained_fairness.experiment.methods import MethodSetup
from constrained_fairness.groups import Grouping
from constrained_fairness.registry import DATASETS, Registry

from .helpers import cfair


class Blobs(torch.utils.data.Dataset):
    """Two Gaussian classes in 6 dimensions; a binary attribute that shifts one class."""

    def __init__(self, n: int = 400, seed: int = 0, names: bool = True) -> None:
        g = torch.Generator().manual_seed(seed)
        self.targets = torch.randint(0, 2, (n,), generator=g)
        self.attributes = torch.randint(0, 2, (n, 1), generator=g)
        shift = self.targets[:, None] * 1.5 + self.attributes * 0.5
        self.inputs = torch.randn(n, 6, generator=g) + shift
        if names:
            self.attribute_names = ["side"]
            self.attribute_values = [["left", "right"]]
            self.class_names = ["no", "yes"]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return self.inputs[i], self.targets[i], self.attributes[i]


@DATASETS.register("test_blobs")
def blobs(data, seed: int) -> Blobs:
    return Blobs(seed=seed)


def tiny_net(model, *, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    return nn.Sequential(
        nn.Linear(input_shape[0], 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, num_classes)
    )


def loss_gap(context) -> MethodSetup:
    """A method of one's own: equalized loss with a tolerance of 0.05."""
    el = EqualizedLoss(
        context.grouping, 0.05, 0, context.reference.overall_weights("weighted"), context.device
    )
    return MethodSetup([el], ["loss_gap"], [context.cfg.ceag.dual])


TINY = [
    "data.protected=[side]",
    "dense.epochs=2",
    "dense.batch_size=50",
    "pruning.epochs=2",
    "pruning.sparsity=0.5",
    "finetune.epochs=2",
    "finetune.batch_size=50",
    "ceag.buffer_size=5",
    "evaluation.bootstrap_resamples=50",
    "logging.wandb=disabled",
    "logging.tensorboard=false",
    "logging.progress=never",
]


def test_a_dataset_and_a_model_from_python_run_the_whole_protocol(tmp_path):
    cfg = load_config(
        None, [*TINY, "methods=[nft,ceag,tests.test_registry:loss_gap]", f"output_dir={tmp_path}"]
    )
    result = run_experiment(cfg, data=Blobs(), model=tiny_net(None, num_classes=2, input_shape=(6,)))
    methods = result.metrics["methods"]
    assert list(methods) == ["nft", "ceag", "loss_gap"]
    assert result.metrics["groups"] == ["left", "right"]
    assert len(methods["loss_gap"]["multipliers"]["loss_gap"]) == 4  # two rows (±) per group
    n = {s: sum(g["n"] for g in methods["nft"][s]["groups"].values()) for s in ("train", "val", "test")}
    assert n == {"train": 256, "val": 64, "test": 80}  # test 0.2 of 400, val 0.2 of the rest
    # pruned to 50 % (the first and last layers stay dense)
    assert result.metrics["achieved_sparsity"]["overall"] == pytest.approx(0.5, abs=0.01)
    assert (result.run_dir / "report.md").is_file()


def test_registered_names_and_import_paths_from_a_config(tmp_path):
    """The CLI, with ``data.name`` registered by a module on the path and the model named by
    import path: the run is the one the same objects give from Python."""
    config = tmp_path / "custom.yaml"
    config.write_text(
        "name: custom\n"
        f"output_dir: {tmp_path / 'runs'}\n"
        "data: {name: 'tests.test_registry:blobs', protected: [side]}\n"
        "model: {name: 'tests.test_registry:tiny_net'}\n"
        "methods: [nft]\n"
    )
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    result = cfair("run", str(config), *TINY, "--quiet", cwd=root, env={"PYTHONPATH": str(root)})
    assert result.returncode == 0, result.stderr
    cli = json.loads((tmp_path / "runs" / "custom" / "metrics.json").read_text())
    cfg = load_config(config, TINY)
    direct = run_experiment(cfg, output=tmp_path / "direct").run_dir / "metrics.json"
    assert cli == json.loads(direct.read_text())


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("data.name=imagenet", r"^unknown dataset 'imagenet' in data\.name; choose one of adult, csv"),
        ("data.name=adlt", r"did you mean 'adult'\?"),
        (
            "model.name=no_such_module:net",
            r"model\.name 'no_such_module:net': cannot import module 'no_such_module'",
        ),
        ("model.name=tests.test_registry:missing", r"has no function 'missing'"),
        ("methods=[nft,magic]", r"^unknown method 'magic' in methods; choose one of nft"),
        ("methods=[nft,ceag,nft]", r"methods names 'nft' twice"),
    ],
)
def test_unknown_names_are_one_line_config_errors(tmp_path, setting, message):
    with pytest.raises(ConfigError, match=message):
        cfg = load_config(None, [*TINY, setting, f"output_dir={tmp_path}"])
        run_experiment(cfg, data=Blobs())


def test_registry_rejects_names_that_look_like_import_paths():
    registry = Registry("thing", "thing.name")
    with pytest.raises(ConfigError, match="without ':'"):
        registry.register("a:b")


def halved_parity(spec, grouping, context):
    """A user's constraint type, named in a config by its import path."""
    return DemographicParity(grouping, spec.tolerance / 2, context.num_classes, device=context.device)


def test_a_constraint_type_is_a_registered_name_or_an_import_path():
    grouping, context = Grouping.single(2), BuildContext(2)
    own = build_constraint(
        ConstraintConfig(type="tests.test_registry:halved_parity", tolerance=0.1), grouping, context
    )
    assert isinstance(own, DemographicParity) and own.tolerance == pytest.approx(0.05)
    builtin = build_constraint(ConstraintConfig(type="demographic_parity", tolerance=0.1), grouping, context)
    assert isinstance(builtin, DemographicParity) and builtin.tolerance == pytest.approx(0.1)
    with pytest.raises(
        ConfigError, match=r"^unknown constraint type 'demographic_parityy' .*'demographic_parity'\?"
    ):
        build_constraint(ConstraintConfig(type="demographic_parityy"), grouping, context)
    with pytest.raises(ConfigError, match="has no function 'missing'"):
        build_constraint(ConstraintConfig(type="tests.test_registry:missing"), grouping, context)


def test_from_dataset_names_and_splits():
    """Names come from the dataset, else from the arguments, else from the codes; the split is
    seeded, disjoint and complete."""
    data = from_dataset(
        Blobs(names=False), seed=3, val_fraction=0.25, test_fraction=0.25, attribute_names=["side"]
    )
    assert data.class_names == ["0", "1"] and data.attribute_values == [["0", "1"]]
    parts = [sorted(data.split(s).indices) for s in ("train", "val", "test")]
    assert sorted(i for part in parts for i in part) == list(range(400))
    assert [len(p) for p in parts] == [225, 75, 100]  # test: 0.25 of 400; val: 0.25 of the rest
    again = from_dataset(
        Blobs(names=False), seed=3, val_fraction=0.25, test_fraction=0.25, attribute_names=["side"]
    )
    assert sorted(again.test.indices) == parts[2]
    named = from_dataset(Blobs(), seed=3)
    assert named.attribute_names == ["side"] and named.class_names == ["no", "yes"]
    with pytest.raises(DataError, match=r"1 attribute column\(s\) but 2 name\(s\)"):
        from_dataset(Blobs(names=False), attribute_names=["a", "b"])


def test_the_cfair_script_finds_a_module_in_the_working_folder(tmp_path):
    """``cfair run`` from a project folder imports ``data.name: my_data:load`` from there, as
    ``python -m`` would, though the script itself lives in the venv's bin/."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "my_data.py").write_text(
        "from tests.test_registry import Blobs\n\ndef load(data, seed):\n    return Blobs(seed=seed)\n"
    )
    root = Path(__file__).resolve().parent.parent
    script = Path(sys.executable).with_name("cfair")
    settings = [*TINY, "data.name=my_data:load", "model.name=tests.test_registry:tiny_net", "methods=[nft]"]
    result = subprocess.run(
        [str(script), "run", *settings, "--output", str(tmp_path / "run"), "--quiet"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(root), "WANDB_MODE": "disabled"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "run" / "metrics.json").is_file()
