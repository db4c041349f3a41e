"""The paper configs: every file loads and validates; each dataset's dense stage and its
table of methods (nft, nft_es, el, el_rb, ceag) run end to end on tiny fixtures in the
datasets' real formats, with the image size and model width overridden down to tiny."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from constrained_fairness.cli import main
from constrained_fairness.config import flatten_config, load_config

from ..image_fixtures import make_cifar100, make_fairface, make_utkface

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
STAGES = ("dense", "nft", "nft_es", "el", "el_rb", "ceag")
TINY = [
    "data.image_size=16",
    "data.num_workers=0",
    "data.pin_memory=false",
    "device=cpu",
    "dense.epochs=1",
    "pruning.epochs=1",
    "finetune.epochs=1",
    "dense.batch_size=8",
    "finetune.batch_size=8",
    "eval_batch_size=16",
    "logging.wandb=disabled",
    "logging.tensorboard=false",
    "logging.progress=never",
]
FIXTURES = {
    # the paper's UTKFace transform keeps the native size (no resize), so the fixture is 32 x 32
    "utkface": (lambda root: make_utkface(root, size=32), ["model.width=0.25"]),
    # The paper's ResNet-34 checkpoint (weights, momentum, masks) is 267 MB, and this pipeline
    # writes about twenty of them: 5 GB, more than CI's disk holds. MobileNetV2 at width 0.25
    # runs the same FairFace data path; ResNet-34 itself is built and stepped in test_models.
    "fairface": (make_fairface, ["model.name=mobilenet_v2", "model.width=0.25"]),
    "cifar100": (make_cifar100, ["model.width=0.25", "ceag.buffer_size=2", "el.buffer_size=2"]),
}


# Each stage file is run on its own on this dataset only (the fastest fixture): the others run
# their table, and test_each_stage_file_is_the_table_run_of_its_one_method ties the files to it.
STAGE_FILES_RUN_ON = "utkface"

EXPERIMENTS = sorted(p for p in CONFIGS.rglob("*.yaml") if p.parent.name != "sweeps")


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_config_loads_and_validates(path):
    cfg = load_config(path)
    if path.parent.name in FIXTURES and path.stem in STAGES:
        assert cfg.methods == ([] if path.stem == "dense" else [path.stem])


@pytest.mark.parametrize("dataset", list(FIXTURES))
def test_each_stage_file_is_the_table_run_of_its_one_method(dataset):
    """A stage file changes only ``name``, ``methods`` and the dense checkpoint's path: so the
    table run on each dataset covers what its stage files run, and one dataset runs them all."""
    table = flatten_config(load_config(CONFIGS / dataset / "table.yaml").to_dict())
    assert table["methods"] == list(STAGES[1:])
    for stage in STAGES[1:]:
        flat = flatten_config(load_config(CONFIGS / dataset / f"{stage}.yaml").to_dict())
        changed = {key for key in table.keys() | flat.keys() if table.get(key) != flat.get(key)}
        assert changed <= {"name", "methods", "model.checkpoint"}, (stage, changed)
        assert flat["methods"] == [stage]
        assert flat["model.checkpoint"] == f"runs/{dataset}_dense/checkpoints/dense.pt"


def overrides(dataset: str, root: Path, extra: list[str]) -> list[str]:
    args = []
    for item in [f"data.root={root}", *TINY, *FIXTURES[dataset][1], *extra]:
        args += ["--set", item]
    return args


def run_stage(dataset: str, stage: str, out: Path, root: Path, extra: list[str]) -> int:
    """``cfair run configs/<dataset>/<stage>.yaml`` on the fixture, tiny, into ``out``."""
    config = str(CONFIGS / dataset / f"{stage}.yaml")
    return main(["run", config, "--output", str(out), "--quiet", *overrides(dataset, root, extra)])


@pytest.mark.parametrize("dataset", list(FIXTURES))
def test_paper_pipeline_runs_on_tiny_fixtures(tmp_path, dataset):
    root = FIXTURES[dataset][0](tmp_path / dataset)
    dense_dir, table_dir = tmp_path / "dense", tmp_path / "table"
    assert run_stage(dataset, "dense", dense_dir, root, []) == 0
    assert json.loads((dense_dir / "metrics.json").read_text())["methods"] == {}
    from_dense = [f"model.checkpoint={dense_dir / 'checkpoints' / 'dense.pt'}"]
    assert run_stage(dataset, "table", table_dir, root, from_dense) == 0
    metrics = json.loads((table_dir / "metrics.json").read_text())
    # paper mode trains on the whole training split: no val split, NFT+ES picked on test, by name
    assert metrics["splits"] == ["train", "test"]
    assert list(metrics["methods"]) == ["nft", "nft_es_test", "el", "el_rb", "ceag"]
    assert metrics["methods"]["nft_es_test"]["selected_on"] == "test"
    assert all("val" not in entry for entry in metrics["methods"].values())
    assert metrics["dense"] == json.loads((dense_dir / "metrics.json").read_text())["dense"]
    assert not (table_dir / "checkpoints" / "dense.pt").exists()  # the dense model came from the checkpoint
    if dataset != STAGE_FILES_RUN_ON:
        return  # the stage files differ from the table only by name (test above); one dataset runs them
    for stage in STAGES[1:]:  # each stage file on its own, from the same dense checkpoint
        assert run_stage(dataset, stage, tmp_path / stage, root, from_dense) == 0, stage
        expected = "nft_es_test" if stage == "nft_es" else stage
        assert list(json.loads((tmp_path / stage / "metrics.json").read_text())["methods"]) == [expected]


def _corrupt_one_image(root: Path) -> str:
    victim = sorted(root.glob("*.jpg"))[0]
    victim.write_bytes(b"not a jpeg at all")
    return victim.name


@pytest.mark.parametrize("case", ["missing_root", "empty_folder", "corrupt_image", "csv_missing_column"])
def test_bad_image_data_gives_one_line_naming_the_path(tmp_path, case, capsys):
    dataset = "fairface" if case == "csv_missing_column" else "utkface"
    root = tmp_path / "data"
    expected = str(root)
    if case == "empty_folder":
        root.mkdir()
    elif case == "corrupt_image":
        expected = _corrupt_one_image(make_utkface(root))
    elif case == "csv_missing_column":
        make_fairface(root)
        csv = root / "fairface_label_train.csv"
        csv.write_text(csv.read_text().replace(",gender,", ",sex,"))
        expected = "fairface_label_train.csv"
    code = run_stage(
        dataset, "table", tmp_path / "run", root, ["model.width=1.0"] if dataset == "fairface" else []
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and expected in err[0], err
    assert not (tmp_path / "run" / "metrics.json").exists()
