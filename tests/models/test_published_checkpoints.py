"""The three published dense checkpoints the paper fine-tunes load exactly as downloaded.

Each file is rebuilt here with the published key names and shapes from a reference definition that does
not use the library's models (a CIFAR ResNet-56 written in this file, torchvision's ResNet-34 with an
18-way head, torchvision's MobileNetV2), filled with random weights and BN statistics, saved under the
published file name, loaded with ``load_model_weights`` into our ``build_model`` model, and compared logit
by logit with the reference network. The ``*_through_cfair_run_*`` tests then load each file with
``cfair run configs/<dataset>/dense.yaml --set model.checkpoint=FILE`` on the tiny on-disk fixtures and
compare the written ``checkpoints/dense.pt`` and the run's metrics with the reference network.
"""

from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision import models as tv
from torchvision import transforms as v1

from constrained_fairness.cli import main
from constrained_fairness.data.fairface import FAIRFACE_GENDERS, FAIRFACE_RACES
from constrained_fairness.errors import CheckpointError
from constrained_fairness.models import build_model
from constrained_fairness.training.checkpoint import load_model_weights

from ..image_fixtures import make_cifar100, make_fairface, make_utkface

CHENYAOFO_FILE = "cifar100_resnet56-f2eff4c8.pt"
FAIRFACE_FILE = "res34_fair_align_multi_7_20190809.pt"
UTKFACE_FILES = {5: "mobilenet_v2_utkface_race.pt", 2: "mobilenet_v2_utkface_gender.pt"}

# Rows of FairFace's 18-way head (dchen236/FairFace): 0-6 race, 7-8 gender, 9-17 age.
FAIRFACE_ROW = {
    "White": 0,
    "Black": 1,
    "Latino_Hispanic": 2,
    "East Asian": 3,
    "Southeast Asian": 4,
    "Indian": 5,
    "Middle Eastern": 6,
    "Male": 7,
    "Female": 8,
}
# The paper's reference code: its own race order and the head rows it takes (fc.weight[idx]).
PAPER_RACE_ORDER = [
    "East Asian",
    "Indian",
    "Black",
    "White",
    "Middle Eastern",
    "Latino_Hispanic",
    "Southeast Asian",
]
PAPER_RACE_ROWS = [3, 5, 1, 0, 6, 2, 4]


# -- reference networks ----------------------------------------------------------------------------
class RefBasicBlock(nn.Module):
    """A basic block of chenyaofo's CIFAR ResNet, written from its published layout."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class RefCifarResNet56(nn.Module):
    """chenyaofo's CIFAR ResNet-56: 3x3 stem, 3 stages of 9 basic blocks (16/32/64), avg pool, fc."""

    def __init__(self, num_classes: int = 100) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        cin = 16
        for stage, (cout, stride) in enumerate([(16, 1), (32, 2), (64, 2)], start=1):
            blocks = []
            for index in range(9):
                blocks.append(RefBasicBlock(cin, cout, stride if index == 0 else 1))
                cin = cout
            self.add_module(f"layer{stage}", nn.Sequential(*blocks))
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(x.mean(dim=(2, 3)))


def fairface_reference() -> nn.Module:
    model = tv.resnet34(weights=None)
    model.fc = nn.Linear(512, 18)
    return model


def randomise(model: nn.Module, seed: int) -> nn.Module:
    """Random weights, biases and BN running statistics (all differ from any initialisation)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "num_batches_tracked":
                tensor.fill_(int(torch.randint(1, 10_000, (1,), generator=gen)))
            elif leaf == "running_var":
                tensor.copy_(torch.rand(tensor.shape, generator=gen) * 1.5 + 0.5)
            elif leaf == "running_mean" or (leaf == "bias" and tensor.dim() == 1):
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.1)
            elif tensor.dim() == 1:  # BN weight
                tensor.copy_(torch.rand(tensor.shape, generator=gen) * 0.5 + 0.5)
            else:
                fan_in = tensor[0].numel()
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * (1.0 / fan_in) ** 0.5)
    return model.eval()


def images(size: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed))


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def assert_same_logits(ours: torch.Tensor, reference: torch.Tensor) -> None:
    scale = reference.abs().max().item()
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-5 * max(scale, 1.0))


def assert_one_line_error(info: pytest.ExceptionInfo, *parts: str) -> str:
    message = str(info.value)
    assert "\n" not in message, message
    for part in parts:
        assert part in message, message
    return message


# -- CIFAR-100: chenyaofo's ResNet-56 --------------------------------------------------------------
@pytest.fixture(scope="module")
def chenyaofo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Module]:
    reference = randomise(RefCifarResNet56(100), seed=0)
    path = tmp_path_factory.mktemp("chenyaofo") / CHENYAOFO_FILE
    torch.save(reference.state_dict(), path)
    return path, reference


def test_reference_cifar_resnet56_has_the_published_keys(chenyaofo):
    _, reference = chenyaofo
    state = reference.state_dict()
    assert tuple(state["fc.weight"].shape) == (100, 64)
    assert tuple(state["conv1.weight"].shape) == (16, 3, 3, 3)
    assert tuple(state["layer2.0.downsample.0.weight"].shape) == (32, 16, 1, 1)
    assert "layer2.0.downsample.1.num_batches_tracked" in state and "bn1.running_mean" in state
    assert not any(k.startswith("layer1.0.downsample") or k.startswith("layer4") for k in state)


def test_chenyaofo_cifar100_resnet56_loads_into_resnet56(chenyaofo):
    path, reference = chenyaofo
    model = build_model("resnet56", num_classes=100)
    x = images(32)
    fresh = logits(model, x)
    name = load_model_weights(model, path, model_name="resnet56", class_names=[f"c{i}" for i in range(100)])
    assert name == "chenyaofo_cifar100_resnet56"
    ours = logits(model, x)
    assert_same_logits(ours, logits(reference, x))
    assert not torch.allclose(fresh, ours)
    for key, tensor in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], tensor), key


def test_chenyaofo_file_loads_with_the_old_two_argument_call(chenyaofo):
    path, reference = chenyaofo
    model = build_model("resnet56", num_classes=100)
    assert load_model_weights(model, path) == "chenyaofo_cifar100_resnet56"
    x = images(32, seed=2)
    assert_same_logits(logits(model, x), logits(reference, x))


def test_chenyaofo_file_is_refused_by_option_a_network(chenyaofo):
    path, _ = chenyaofo
    with pytest.raises(CheckpointError) as info:
        load_model_weights(
            build_model("resnet56_option_a", num_classes=100), path, model_name="resnet56_option_a"
        )
    assert_one_line_error(
        info, str(path), "unexpected key 'layer2.0.downsample.0.weight'", "resnet56_option_a"
    )


def test_wrong_shape_names_the_key(chenyaofo, tmp_path):
    _, reference = chenyaofo
    state = dict(reference.state_dict())
    state["layer3.4.bn1.running_mean"] = torch.zeros(63)
    bad = tmp_path / CHENYAOFO_FILE
    torch.save(state, bad)
    with pytest.raises(CheckpointError) as info:
        load_model_weights(build_model("resnet56", num_classes=100), bad, model_name="resnet56")
    assert_one_line_error(
        info, str(bad), "'layer3.4.bn1.running_mean'", "(63,)", "(64,)", "expected a state dict"
    )


def test_wrong_class_count_names_the_classifier(chenyaofo):
    path, _ = chenyaofo
    with pytest.raises(CheckpointError) as info:
        load_model_weights(build_model("resnet56", num_classes=10), path, model_name="resnet56")
    assert_one_line_error(info, str(path), "'fc.weight'", "(100, 64)", "(10, 64)")


def test_unrelated_file_names_first_missing_and_unexpected_key(tmp_path):
    bad = tmp_path / "other.pt"
    torch.save(nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2)).state_dict(), bad)
    with pytest.raises(CheckpointError) as info:
        load_model_weights(build_model("resnet56", num_classes=100), bad, model_name="resnet56")
    assert_one_line_error(
        info,
        str(bad),
        "missing key 'conv1.weight'",
        "unexpected key '0.weight'",
        "expected a state dict of model 'resnet56' (chenyaofo's CIFAR ResNet-56 keys such as "
        "layer2.0.downsample.0.weight) or a dense.pt of a dense run",
        "does not match the model architecture",
    )


def test_option_a_state_dict_loads_into_option_a_but_not_into_resnet56(tmp_path):
    old = randomise(build_model("resnet56_option_a", num_classes=100), seed=3)
    path = tmp_path / "option_a.pt"
    torch.save(old.state_dict(), path)

    model = build_model("resnet56_option_a", num_classes=100)
    assert load_model_weights(model, path, model_name="resnet56_option_a") == "state_dict"
    x = images(32)
    assert_same_logits(logits(model, x), logits(old, x))

    with pytest.raises(CheckpointError) as info:
        load_model_weights(build_model("resnet56", num_classes=100), path, model_name="resnet56")
    assert_one_line_error(info, str(path), "missing key 'layer2.0.downsample.0.weight'", "model 'resnet56'")


def test_own_dense_checkpoint_and_dataparallel_prefix(tmp_path):
    source = randomise(build_model("resnet56", num_classes=7, width=0.25), seed=4)
    x = images(16)
    expected = logits(source, x)
    dense = tmp_path / "dense.pt"
    torch.save({"model": source.state_dict(), "epoch": 3, "stage": "dense"}, dense)
    prefixed = tmp_path / "module.pt"
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, prefixed)
    for path in (dense, prefixed):
        model = build_model("resnet56", num_classes=7, width=0.25)
        assert load_model_weights(model, path, model_name="resnet56") == "state_dict"
        assert_same_logits(logits(model, x), expected)


def test_non_state_dict_contents_are_one_line_errors(tmp_path):
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(CheckpointError) as info:
        load_model_weights(build_model("resnet56", num_classes=10, width=0.25), tensor, model_name="resnet56")
    assert_one_line_error(info, str(tensor), "not a state dict")

    strings = tmp_path / "strings.pt"
    torch.save({"conv1.weight": "not a tensor"}, strings)
    with pytest.raises(CheckpointError) as info:
        load_model_weights(build_model("resnet56", num_classes=10, width=0.25), strings)
    assert_one_line_error(info, str(strings), "'conv1.weight'", "not a tensor")


class _Pickled:
    """A custom class: ``weights_only=True`` must refuse to unpickle it."""


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save({"model": _Pickled()}, path)
    with pytest.raises(CheckpointError) as info:
        load_model_weights(build_model("resnet56", num_classes=10, width=0.25), path)
    assert_one_line_error(info, str(path), "cannot read checkpoint")


# -- FairFace: dchen236's 18-way ResNet-34 ---------------------------------------------------------
@pytest.fixture(scope="module")
def fairface_model() -> nn.Module:
    """The randomised 18-way reference network whose weights the FairFace file holds."""
    return randomise(fairface_reference(), seed=5)


@pytest.fixture(scope="module")
def fairface(tmp_path_factory: pytest.TempPathFactory, fairface_model: nn.Module):
    reference = fairface_model
    path = tmp_path_factory.mktemp("fairface") / FAIRFACE_FILE  # ~85 MB: removed after the module
    torch.save(reference.state_dict(), path)
    x = images(64)
    yield path, logits(reference, x), x
    path.unlink(missing_ok=True)


@pytest.mark.parametrize(
    "class_names",
    [list(FAIRFACE_RACES), list(FAIRFACE_GENDERS), PAPER_RACE_ORDER, ["Female", "Male"]],
    ids=["races", "genders", "paper_race_order", "genders_reversed"],
)
def test_fairface_head_rows_follow_class_names(fairface, class_names):
    path, reference, x = fairface
    model = build_model("resnet34", num_classes=len(class_names))
    name = load_model_weights(model, path, model_name="resnet34", class_names=class_names)
    assert name == "fairface_res34_18way"
    ours = logits(model, x)
    assert ours.shape == (2, len(class_names))
    for column, class_name in enumerate(class_names):
        assert_same_logits(ours[:, column], reference[:, FAIRFACE_ROW[class_name]])


def test_fairface_paper_reference_indices(fairface):
    path, reference, x = fairface
    model = build_model("resnet34", num_classes=7)
    load_model_weights(model, path, model_name="resnet34", class_names=PAPER_RACE_ORDER)
    assert_same_logits(logits(model, x), reference[:, PAPER_RACE_ROWS])
    gender = build_model("resnet34", num_classes=2)
    load_model_weights(gender, path, model_name="resnet34", class_names=["Male", "Female"])
    assert_same_logits(logits(gender, x), reference[:, [7, 8]])


def test_fairface_loader_class_order_is_the_head_order():
    assert list(FAIRFACE_RACES) == [n for n, row in FAIRFACE_ROW.items() if row < 7]
    assert list(FAIRFACE_GENDERS) == ["Male", "Female"]


def test_fairface_without_class_names_uses_the_loader_order(fairface):
    path, reference, x = fairface
    model = build_model("resnet34", num_classes=2)
    assert load_model_weights(model, path) == "fairface_res34_18way"
    assert_same_logits(logits(model, x), reference[:, [7, 8]])


@pytest.mark.parametrize(
    "class_names",
    [["White", "Black"], ["cat", "dog"], ["Male", "Male"], [*FAIRFACE_RACES[:6], "Asian"]],
)
def test_fairface_with_other_class_names_is_a_one_line_error(fairface, class_names):
    path, _, _ = fairface
    model = build_model("resnet34", num_classes=len(class_names))
    with pytest.raises(CheckpointError) as info:
        load_model_weights(model, path, model_name="resnet34", class_names=class_names)
    assert_one_line_error(info, str(path), str(class_names), "East Asian", "Male")


def test_fairface_file_for_another_model_is_a_one_line_error(fairface):
    path, _, _ = fairface
    with pytest.raises(CheckpointError) as info:
        load_model_weights(
            build_model("resnet18", num_classes=7), path, model_name="resnet18", class_names=FAIRFACE_RACES
        )
    assert_one_line_error(info, str(path), "fairface_res34_18way", "'resnet18'", "unexpected key")


# -- UTKFace: the authors' MobileNetV2 -------------------------------------------------------------
@pytest.mark.parametrize("num_classes", [5, 2])
def test_utkface_mobilenet_v2_loads_into_mobilenet_v2(tmp_path, num_classes):
    reference = randomise(tv.mobilenet_v2(weights=None, num_classes=num_classes), seed=6 + num_classes)
    state = reference.state_dict()
    assert "features.0.0.weight" in state and "features.18.1.running_var" in state
    assert tuple(state["classifier.1.weight"].shape) == (num_classes, 1280)
    path = tmp_path / UTKFACE_FILES[num_classes]
    torch.save(state, path)

    model = build_model("mobilenet_v2", num_classes=num_classes)
    x = images(64)
    fresh = logits(model, x)
    assert load_model_weights(model, path, model_name="mobilenet_v2") == "torchvision_mobilenet_v2"
    ours = logits(model, x)
    assert_same_logits(ours, logits(reference, x))
    assert not torch.allclose(fresh, ours)

    with pytest.raises(CheckpointError) as info:  # a gender file for a race model, or vice versa
        load_model_weights(
            build_model("mobilenet_v2", num_classes=7 - num_classes), path, model_name="mobilenet_v2"
        )
    assert_one_line_error(info, str(path), "'classifier.1.weight'", "torchvision MobileNetV2 keys")


# -- end to end: `cfair run configs/<dataset>/dense.yaml --set model.checkpoint=<published file>` ---
# A dense-only run with a checkpoint writes the loaded model in our format to checkpoints/dense.pt and
# evaluates it; here that dense.pt must give the reference network's logits, and the accuracy and loss in
# metrics.json must be those of the reference network on the fixture's splits, each image put through
# the paper's eval transform (rebuilt here from torchvision, not taken from the library's loaders).
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
CIFAR100_MEAN, CIFAR100_STD = [0.507, 0.4865, 0.4409], [0.2673, 0.2564, 0.2761]
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
CPU_RUN = [
    "device=cpu",
    "data.num_workers=0",
    "data.pin_memory=false",
    "logging.wandb=disabled",
    "logging.tensorboard=false",
    "logging.progress=never",
    "eval_batch_size=8",
]


@pytest.fixture
def one_thread():
    """One intra-op thread: on a 2-core machine shared with other jobs, two OpenMP threads made each
    small forward pass up to 30 times slower; one is as fast as two on an idle machine for these sizes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_dense(config: str, out: Path, root: Path, checkpoint: Path, extra: list[str], capsys) -> dict:
    """``cfair run configs/<config> --output out --quiet --set ...`` in-process; its metrics.json."""
    args = ["run", str(CONFIGS / config), "--output", str(out), "--quiet"]
    for item in [f"data.root={root}", f"model.checkpoint={checkpoint}", *CPU_RUN, *extra]:
        args += ["--set", item]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 0, f"cfair {' '.join(args)} exited with {code}; stderr:\n{err}"
    return json.loads((out / "metrics.json").read_text())


def written_dense_model(out: Path, name: str, num_classes: int) -> nn.Module:
    """Our ``build_model`` model with the state dict of the run's ``checkpoints/dense.pt`` (strict)."""
    saved = torch.load(out / "checkpoints" / "dense.pt", weights_only=True)
    model = build_model(name, None, num_classes)
    model.load_state_dict(saved["model"])
    return model.eval()


def assert_split_metrics(metrics: dict, split: str, reference: torch.Tensor, labels: torch.Tensor) -> None:
    """metrics.json's dense accuracy (exactly) and mean cross-entropy of ``split`` are the reference's."""
    top2 = reference.topk(2, dim=1).values
    margin = (top2[:, 0] - top2[:, 1]).min().item()
    # no near tie: logits within assert_same_logits' atol of these cannot change an argmax, so the
    # accuracy does not hinge on rounding (channels_last, another conv algorithm)
    assert margin > 2e-5 * max(reference.abs().max().item(), 1.0), margin
    accuracy = (reference.argmax(dim=1) == labels).double().mean().item()
    loss = F.cross_entropy(reference.double(), labels).item()
    assert metrics["dense"][split]["accuracy"] == accuracy, (split, metrics["dense"][split], accuracy)
    assert metrics["dense"][split]["loss"] == pytest.approx(loss, rel=1e-4), (split, loss)


def pil_images(arrays_or_paths, transform) -> torch.Tensor:
    """The paper's pipeline: each image as an RGB PIL image, then the torchvision (v1) transform."""
    out = []
    for item in arrays_or_paths:
        if isinstance(item, Path):
            with Image.open(item) as image:
                out.append(transform(image.convert("RGB")))
        else:
            out.append(transform(Image.fromarray(item)))
    return torch.stack(out)


def cifar_split(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A ``cifar-100-python`` pickle as the paper feeds it (torchvision's CIFAR100: HWC uint8 -> PIL)."""
    content = pickle.loads((root / "cifar-100-python" / split).read_bytes(), encoding="latin1")
    rows = np.asarray(content["data"]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    transform = v1.Compose([v1.ToTensor(), v1.Normalize(CIFAR100_MEAN, CIFAR100_STD)])
    return pil_images(list(rows), transform), torch.tensor(content["fine_labels"])


def cifar_features(model: RefCifarResNet56, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        h = F.relu(model.bn1(model.conv1(x)))
        return model.layer3(model.layer2(model.layer1(h))).mean(dim=(2, 3))


def fit_half_the_test_set(model: RefCifarResNet56, x: torch.Tensor, labels: torch.Tensor) -> None:
    """Set ``model.fc`` so that exactly half of ``x`` is classified right, each with a clear margin.

    Random weights put every image in one class (accuracy 1 %, which any constant classifier gets). Here
    row ``labels[i]`` holds the unit centred feature of image ``pi(i)``, with ``pi`` the identity on the
    first half and a cyclic shift on the second: image ``i`` scores highest on the row holding its own
    feature, which is its class in the first half only.
    """
    features = cifar_features(model, x)
    mean = features.mean(dim=0)
    centred = features - mean
    unit = centred / centred.norm(dim=1, keepdim=True)
    half = len(labels) // 2
    source = torch.cat([torch.arange(half), torch.arange(half, len(labels)).roll(1)])
    assert len(set(labels.tolist())) == len(labels) == model.fc.out_features  # one test image per class
    weight = torch.zeros_like(model.fc.weight)
    weight[labels] = 10.0 * unit[source]
    with torch.no_grad():
        model.fc.weight.copy_(weight)
        model.fc.bias.copy_(-weight @ mean)


def test_chenyaofo_file_through_cfair_run_cifar100_dense(tmp_path, capsys, one_thread):
    root = make_cifar100(tmp_path / "cifar100")
    test_x, test_y = cifar_split(root, "test")
    train_x, train_y = cifar_split(root, "train")
    reference = randomise(RefCifarResNet56(100), seed=20)
    fit_half_the_test_set(reference, test_x, test_y)
    checkpoint = tmp_path / "published" / CHENYAOFO_FILE
    checkpoint.parent.mkdir()
    torch.save(reference.state_dict(), checkpoint)

    out = tmp_path / "run"
    metrics = run_dense("cifar100/dense.yaml", out, root, checkpoint, [], capsys)
    assert metrics["methods"] == {}
    assert metrics["dense_checkpoint"] == {"path": str(checkpoint), "format": "chenyaofo_cifar100_resnet56"}

    ours = written_dense_model(out, "resnet56", 100)
    x = images(32, seed=21)
    assert_same_logits(logits(ours, x), logits(reference, x))
    for key, tensor in reference.state_dict().items():
        assert torch.equal(ours.state_dict()[key], tensor), key

    reference_test = logits(reference, test_x)
    assert (reference_test.argmax(dim=1) == test_y).double().mean().item() == 0.5
    assert_split_metrics(metrics, "test", reference_test, test_y)
    assert_split_metrics(metrics, "train", logits(reference, train_x), train_y)


def fairface_split(root: Path, csv_name: str, target: str, class_names: list[str], size: int):
    """A FairFace CSV's images through the paper's eval transform (Resize(size), ToTensor, Normalize)."""
    with open(root / csv_name, newline="") as handle:
        rows = list(csv.DictReader(handle))
    transform = v1.Compose([v1.Resize(size), v1.ToTensor(), v1.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    x = pil_images([root / row["file"] for row in rows], transform)
    return x, torch.tensor([class_names.index(row[target]) for row in rows])


@pytest.mark.parametrize(
    ("target", "class_names"),
    [
        ("gender", list(FAIRFACE_GENDERS)),  # the loader's class order; the head's is FAIRFACE_ROW
        ("race", list(FAIRFACE_RACES)),
    ],
)
def test_fairface_file_through_cfair_run_fairface_dense(
    fairface, fairface_model, tmp_path, capsys, one_thread, target, class_names
):
    path, reference_logits, x = fairface
    reference = fairface_model
    rows = [FAIRFACE_ROW[name] for name in class_names]
    root = make_fairface(tmp_path / "fairface")
    out = tmp_path / "run"
    extra = ["data.image_size=64"] + ([] if target == "gender" else [f"data.target={target}"])
    try:
        metrics = run_dense("fairface/dense.yaml", out, root, path, extra, capsys)
        assert metrics["dense_checkpoint"] == {"path": str(path), "format": "fairface_res34_18way"}
        ours = logits(written_dense_model(out, "resnet34", len(class_names)), x)
        assert ours.shape == (len(x), len(class_names))
        for column, name in enumerate(class_names):  # our class order, matched to the head by name
            assert_same_logits(ours[:, column], reference_logits[:, FAIRFACE_ROW[name]])
        for split, csv_name in (("test", "fairface_label_val.csv"), ("train", "fairface_label_train.csv")):
            split_x, split_y = fairface_split(root, csv_name, target, class_names, 64)
            assert_split_metrics(metrics, split, logits(reference, split_x)[:, rows], split_y)
    finally:  # the 18-way file stays for the module; dense.pt (~85 MB) goes now
        (out / "checkpoints" / "dense.pt").unlink(missing_ok=True)


def test_utkface_race_file_through_cfair_run_utkface_dense(tmp_path, capsys, one_thread):
    reference = randomise(tv.mobilenet_v2(weights=None, num_classes=5), seed=22)
    checkpoint = tmp_path / "published" / UTKFACE_FILES[5]
    checkpoint.parent.mkdir()
    torch.save(reference.state_dict(), checkpoint)
    root = make_utkface(tmp_path / "utkface", size=32)  # the reference keeps the native size

    out = tmp_path / "run"
    metrics = run_dense("utkface/dense.yaml", out, root, checkpoint, [], capsys)
    assert metrics["dense_checkpoint"] == {"path": str(checkpoint), "format": "torchvision_mobilenet_v2"}
    x = images(32, seed=23)
    assert_same_logits(logits(written_dense_model(out, "mobilenet_v2", 5), x), logits(reference, x))

    # the paper's split: sorted *.jpg, RandomState(1357).permutation, the first int(0.2 N) are test
    files = sorted(root.glob("*.jpg"), key=lambda p: p.name)
    perm = np.random.RandomState(1357).permutation(len(files))
    n_test = int(0.2 * len(files))
    transform = v1.Compose([v1.ToTensor(), v1.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    for split, rows in (("test", perm[:n_test]), ("train", perm[n_test:])):
        chosen = [files[i] for i in sorted(rows)]
        labels = torch.tensor([int(p.name.split("_")[2]) for p in chosen])  # [age]_[gender]_[race]_...
        assert_split_metrics(metrics, split, logits(reference, pil_images(chosen, transform)), labels)
