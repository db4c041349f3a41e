"""Model factory and the CIFAR ResNet (projection and option-A shortcuts): parameter counts, state-dict
keys, shapes, layer order, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from constrained_fairness.errors import ConfigError
from constrained_fairness.models import BUILTIN_MODELS, MLP, CifarResNet, build_model, resnet56
from constrained_fairness.models.resnet_cifar import scaled_channels
from constrained_fairness.sparsity import prunable_layers

NUM_CLASSES = 7
# Small widths keep the forward passes fast; torchvision ResNets only accept width 1.0.
FAST_WIDTH = {
    "mlp": 1.0,
    "resnet56": 0.25,
    "resnet56_option_a": 0.25,
    "mobilenet_v2": 0.25,
    "resnet18": 1.0,
    "resnet34": 1.0,
}
BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to download weights fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a model tried to download weights: {args}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


def cifar_resnet_param_count(
    depth: int, num_classes: int, channels: tuple[int, int, int], shortcut: str = "option_a"
) -> int:
    """Parameters of the CIFAR ResNet, counted from the architecture.

    Stem 3x3 conv (no bias) + BN (γ, β); per BasicBlock two 3x3 convs (no bias) + two BNs; option-A
    shortcuts have no parameters, projection shortcuts (only where the channels change) a 1x1 conv
    (no bias) + BN; classifier weight + bias.
    """
    n = (depth - 2) // 6
    c1, _, c3 = channels
    total = 3 * 3 * 3 * c1 + 2 * c1  # stem conv + BN
    c_in = c1
    for c in channels:
        for _ in range(n):
            total += 3 * 3 * c_in * c + 2 * c  # conv1 + bn1
            total += 3 * 3 * c * c + 2 * c  # conv2 + bn2
            if shortcut == "projection" and c_in != c:
                total += c_in * c + 2 * c  # downsample.0 (1x1 conv) + downsample.1 (BN)
            c_in = c
    return total + c3 * num_classes + num_classes  # fc


def reference_resnet56_keys() -> list[str]:
    """State-dict keys of chenyaofo's CIFAR ResNet-56, written out from its published layout."""
    keys = ["conv1.weight", *(f"bn1.{k}" for k in BN_KEYS)]
    for stage in (1, 2, 3):
        for block in range(9):
            prefix = f"layer{stage}.{block}"
            keys += [f"{prefix}.conv1.weight", *(f"{prefix}.bn1.{k}" for k in BN_KEYS)]
            keys += [f"{prefix}.conv2.weight", *(f"{prefix}.bn2.{k}" for k in BN_KEYS)]
            if stage > 1 and block == 0:
                keys += [f"{prefix}.downsample.0.weight", *(f"{prefix}.downsample.1.{k}" for k in BN_KEYS)]
    return [*keys, "fc.weight", "fc.bias"]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def weighted_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Conv2d/Linear modules in definition order, as the pruner enumerates them."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def test_resnet56_option_a_parameter_count_matches_architecture():
    model = build_model("resnet56_option_a", num_classes=100)
    expected = cifar_resnet_param_count(56, 100, (16, 32, 64), "option_a")
    assert n_params(model) == expected == 858_868
    assert 850_000 <= n_params(model) <= 860_000
    # 10 classes: the 0.85M of the paper's Table 6.
    assert n_params(resnet56(num_classes=10, shortcut="option_a")) == 853_018
    assert cifar_resnet_param_count(56, 10, (16, 32, 64), "option_a") == 853_018


def test_resnet56_projection_parameter_count_matches_architecture():
    model = build_model("resnet56", num_classes=100)
    # Option A plus two 1x1 projections with BN: 16 -> 32 (512 + 64) and 32 -> 64 (2048 + 128).
    expected = cifar_resnet_param_count(56, 100, (16, 32, 64), "projection")
    assert n_params(model) == expected == 858_868 + 576 + 2_176
    assert n_params(resnet56(num_classes=100)) == expected


@pytest.mark.parametrize("shortcut", ["projection", "option_a"])
@pytest.mark.parametrize(("depth", "width"), [(8, 1.0), (20, 0.5), (32, 0.25), (56, 0.3)])
def test_cifar_resnet_parameter_count_other_depths_and_widths(depth, width, shortcut):
    model = CifarResNet(depth=depth, num_classes=NUM_CLASSES, width=width, shortcut=shortcut)
    expected = cifar_resnet_param_count(depth, NUM_CLASSES, scaled_channels(width), shortcut)
    assert n_params(model) == expected


def test_option_a_has_depth_weighted_layers_and_parameter_free_shortcuts():
    model = build_model("resnet56_option_a", num_classes=10)
    layers = weighted_layers(model)
    assert len(layers) == 56  # 55 convolutions + the classifier: the "56" in ResNet-56
    assert sum(isinstance(m, nn.Linear) for _, m in layers) == 1
    blocks = [block for stage in (model.layer1, model.layer2, model.layer3) for block in stage]
    assert all(block.downsample is None or n_params(block.downsample) == 0 for block in blocks)
    assert sum(block.downsample is not None for block in blocks) == 2
    assert not any("downsample" in key for key in model.state_dict())


def test_projection_resnet56_has_two_1x1_downsample_convolutions():
    model = build_model("resnet56", num_classes=10)
    layers = weighted_layers(model)
    assert len(layers) == 58  # the 56 of option A + layer2.0 and layer3.0 projections
    projections = [(name, m) for name, m in layers if "downsample" in name]
    assert [name for name, _ in projections] == ["layer2.0.downsample.0", "layer3.0.downsample.0"]
    assert [(m.in_channels, m.out_channels, m.kernel_size, m.stride) for _, m in projections] == [
        (16, 32, (1, 1), (2, 2)),
        (32, 64, (1, 1), (2, 2)),
    ]
    assert all(m.bias is None for _, m in projections)
    assert isinstance(model.layer2[0].downsample[1], nn.BatchNorm2d)


def test_projection_resnet56_state_dict_keys_are_chenyaofos():
    state = build_model("resnet56", num_classes=100).state_dict()
    assert list(state) == reference_resnet56_keys()
    assert tuple(state["fc.weight"].shape) == (100, 64)
    assert tuple(state["conv1.weight"].shape) == (16, 3, 3, 3)
    assert tuple(state["layer2.0.downsample.0.weight"].shape) == (32, 16, 1, 1)
    assert tuple(state["layer3.0.downsample.1.running_var"].shape) == (64,)


@pytest.mark.parametrize("name", ["resnet56", "resnet56_option_a"])
def test_resnet56_first_and_last_prunable_layers_are_conv1_and_fc(name):
    model = build_model(name, num_classes=100)
    names = [layer_name for layer_name, _ in weighted_layers(model)]
    assert names[0] == "conv1" and names[-1] == "fc"
    kept = prunable_layers(model, ("first", "last"))
    assert "conv1" not in kept and "fc" not in kept
    assert ("layer2.0.downsample.0" in kept) == (name == "resnet56")


def test_width_scales_channels_with_rounding_and_floor_of_one():
    assert scaled_channels(1.0) == (16, 32, 64)
    assert scaled_channels(0.25) == (4, 8, 16)
    assert scaled_channels(0.3) == (5, 10, 19)
    assert scaled_channels(0.001) == (1, 1, 1)
    for shortcut in ("projection", "option_a"):
        tiny = CifarResNet(depth=8, num_classes=3, width=0.001, shortcut=shortcut)
        assert tiny(torch.randn(2, 3, 8, 8)).shape == (2, 3)


@pytest.mark.parametrize("depth", [0, 7, 10, 54, 57, -4, 56.0, True, "56"])
def test_cifar_resnet_rejects_depth_not_6n_plus_2(depth):
    with pytest.raises(ConfigError, match=r"depth must be 6n\+2.*got"):
        CifarResNet(depth=depth)


@pytest.mark.parametrize(("shortcut", "fan"), [("projection", 32 * 9), ("option_a", 16 * 9)])
def test_cifar_resnet_kaiming_init_and_bn_identity(shortcut, fan):
    torch.manual_seed(0)
    model = CifarResNet(depth=20, num_classes=10, shortcut=shortcut)
    conv = model.layer2[0].conv1  # 16 → 32: fan_in = 144, fan_out = 288
    assert conv.weight.std().item() == pytest.approx((2 / fan) ** 0.5, rel=0.05)
    assert torch.all(model.bn1.weight == 1) and torch.all(model.bn1.bias == 0)


def test_cifar_resnet_rejects_unknown_shortcut():
    with pytest.raises(ConfigError, match=r"shortcut must be one of projection, option_a, got 'B'"):
        CifarResNet(depth=8, shortcut="B")


@pytest.mark.parametrize("name", BUILTIN_MODELS)
def test_factory_builds_every_model_and_forward_shape(name):
    model = build_model(name, 16 * 16 * 3, NUM_CLASSES, (8,), width=FAST_WIDTH[name])
    x = torch.randn(2, 3, 16, 16)
    if name == "mlp":
        x = x.flatten(1)
    assert model(x).shape == (2, NUM_CLASSES)


@pytest.mark.parametrize("name", [n for n in BUILTIN_MODELS if n != "mlp"])
@pytest.mark.parametrize("size", [(8, 8), (9, 13), (32, 32)])
def test_image_models_accept_any_input_size_from_8x8(name, size):
    model = build_model(name, num_classes=NUM_CLASSES, width=FAST_WIDTH[name]).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, *size)).shape == (2, NUM_CLASSES)


@pytest.mark.parametrize("name", BUILTIN_MODELS)
def test_first_and_last_weighted_layers_in_definition_order(name):
    model = build_model(name, 12, NUM_CLASSES, (8,), width=FAST_WIDTH[name])
    layers = weighted_layers(model)
    first, last = layers[0][1], layers[-1][1]
    if name == "mlp":
        assert isinstance(first, nn.Linear) and first.in_features == 12
    else:
        assert isinstance(first, nn.Conv2d) and first.in_channels == 3
    assert isinstance(last, nn.Linear) and last.out_features == NUM_CLASSES
    assert sum(isinstance(m, nn.Linear) and m.out_features == NUM_CLASSES for _, m in layers) == 1
    # The pruner keeps exactly these two dense.
    kept = prunable_layers(model, ("first", "last"))
    assert layers[0][0] not in kept and layers[-1][0] not in kept and len(kept) == len(layers) - 2


def test_mlp_positional_call_unchanged():
    model = build_model("mlp", 5, 3, (8, 4))
    assert isinstance(model, MLP)
    assert [m.out_features for m in model if isinstance(m, nn.Linear)] == [8, 4, 3]


def test_mlp_needs_input_dim():
    with pytest.raises(ConfigError, match="'mlp' needs input_dim"):
        build_model("mlp", num_classes=2)


def test_unknown_model_names_the_choices():
    with pytest.raises(
        ConfigError,
        match=r"unknown model 'vgg16'; choose one of mlp, resnet56, resnet56_option_a, mobilenet_v2",
    ):
        build_model("vgg16", None, 10)


@pytest.mark.parametrize("name", BUILTIN_MODELS)
def test_pretrained_is_refused(name):
    with pytest.raises(ConfigError, match=r"pretrained=True is not supported.*model\.checkpoint"):
        build_model(name, 4, 10, pretrained=True)


@pytest.mark.parametrize("name", ["mlp", "resnet18", "resnet34"])
def test_width_must_be_one_for_unscaled_models(name):
    with pytest.raises(ConfigError, match=rf"width must be 1.0 for '{name}', got 0.5"):
        build_model(name, 4, 10, width=0.5)


@pytest.mark.parametrize("width", [0, -1.0, float("nan"), float("inf"), "wide"])
def test_invalid_width(width):
    with pytest.raises(ConfigError, match="width must be a finite number > 0"):
        build_model("resnet56", num_classes=10, width=width)


@pytest.mark.parametrize("num_classes", [0, -3, 2.5])
def test_invalid_num_classes(num_classes):
    with pytest.raises(ConfigError, match="num_classes must be an int >= 1"):
        build_model("resnet56", num_classes=num_classes)
