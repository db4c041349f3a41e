import pytest
import torch
from torch import nn

from constrained_fairness.models import MLP
from constrained_fairness.sparsity import MagnitudePruner, cubic_sparsity


def test_cubic_schedule_values():
    T, sf = 15, 0.9
    for t in range(T + 1):
        assert cubic_sparsity(t, T, sf) == pytest.approx(sf + (0 - sf) * (1 - t / T) ** 3)
    assert cubic_sparsity(0, T, sf) == 0.0
    assert cubic_sparsity(T, T, sf) == pytest.approx(sf)
    assert cubic_sparsity(T + 5, T, sf) == pytest.approx(sf)
    assert cubic_sparsity(5, 10, 0.8) == pytest.approx(0.8 * (1 - 0.5**3))


def test_layerwise_sparsity_with_first_and_last_dense():
    model = MLP(10, [32, 16, 8], 2)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    first, last = linears[0].weight.clone(), linears[-1].weight.clone()
    pruner = MagnitudePruner(model, "layerwise", ["first", "last"])
    assert len(pruner.layers) == 2
    pruner.prune_to(0.75)
    for name, s in pruner.layer_sparsity().items():
        numel = pruner.layers[name].weight.numel()
        assert s == pytest.approx(round(0.75 * numel) / numel)
    assert torch.equal(linears[0].weight, first) and torch.equal(linears[-1].weight, last)


def test_kept_weights_are_the_largest_magnitudes():
    layer_model = MLP(4, [6, 5], 2)
    pruner = MagnitudePruner(layer_model, "layerwise", ["first", "last"])
    ((_name, layer),) = pruner.layers.items()
    w = layer.weight.detach().abs().flatten().clone()
    pruner.prune_to(0.5)
    kept = layer.weight.detach().abs().flatten()
    threshold = torch.sort(w).values[len(w) - 15]
    assert int((kept != 0).sum()) == 15
    assert bool((kept[kept != 0] >= threshold).all())


def test_global_scope_counts_all_layers_together():
    model = MLP(8, [40, 20, 10], 2)
    pruner = MagnitudePruner(model, "global", ["first", "last"])
    pruner.prune_to(0.9)
    total = sum(m.weight.numel() for m in pruner.layers.values())
    zeros = sum(int((m.weight == 0).sum()) for m in pruner.layers.values())
    assert zeros == round(0.9 * total)


def test_masks_survive_optimizer_steps_and_state_dict():
    model = MLP(5, [16, 16], 2)
    pruner = MagnitudePruner(model)
    pruner.prune_to(0.8)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    for _ in range(5):
        opt.zero_grad()
        model(torch.randn(8, 5)).sum().backward()
        opt.step()
        pruner.apply()
    ((name, layer),) = pruner.layers.items()
    assert torch.equal(layer.weight == 0, ~pruner.masks[name])
    fresh = MLP(5, [16, 16], 2)
    other = MagnitudePruner(fresh)
    other.load_state_dict(pruner.state_dict())
    assert torch.equal(other.masks[name], pruner.masks[name])
    assert pruner.layer_sparsity()[name] == pytest.approx(0.8, abs=1 / 256)
