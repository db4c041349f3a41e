"""The package as a whole: importing it changes no global state, numba is optional, and a
checkpoint loads in a fresh process through the one documented function."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

# every module of the library, imported after its dependencies, in a fresh interpreter
IMPORT_ALL = """
import importlib, pkgutil, warnings
import torch, cooper, numpy, yaml, matplotlib  # their own filters are not ours
filters, safe = list(warnings.filters), list(torch.serialization.get_safe_globals())
import constrained_fairness
names = [
    m.name
    for m in pkgutil.walk_packages(constrained_fairness.__path__, "constrained_fairness.")
    if m.name != "constrained_fairness.__main__"  # runs the CLI
]
for name in names:
    importlib.import_module(name)
added = [f for f in warnings.filters if f not in filters]
assert not added, f"warning filters set at import: {added}"
assert list(torch.serialization.get_safe_globals()) == safe, "safe globals registered at import"
print(len(names))
"""


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True)


def test_importing_every_module_sets_no_warning_filter_and_no_safe_global():
    result = run_python(IMPORT_ALL)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) > 40  # the walk reached the subpackages


def test_the_package_works_without_numba():
    """numba is optional: blocked, the projection runs on the numpy solver and gives the same
    projection as with the compiled kernels (to rounding)."""
    code = """
    import sys
    sys.modules["numba"] = None  # any import of numba now raises ImportError
    import torch
    from constrained_fairness import FairModel, fair_projection
    from constrained_fairness.projection import function
    assert function._kernels() is None
    g = torch.Generator().manual_seed(0)
    y = torch.rand(64, generator=g, dtype=torch.float64)
    a = torch.randint(0, 3, (64, 2), generator=g)
    z = fair_projection(y, a, 0.01, (0.0, 1.0))
    FairModel(input_dim=4, hidden_dims=[8], output_dim=1)
    print(" ".join(repr(v) for v in z.tolist()))
    """
    pytest.importorskip("numba")  # the other side: the compiled kernels, in this process
    from constrained_fairness import fair_projection
    from constrained_fairness.projection import function

    assert function._kernels() is not None
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    without = torch.tensor([float(v) for v in result.stdout.split()], dtype=torch.float64)

    g = torch.Generator().manual_seed(0)
    y = torch.rand(64, generator=g, dtype=torch.float64)
    a = torch.randint(0, 3, (64, 2), generator=g)
    with_default = fair_projection(y, a, 0.01, (0.0, 1.0))
    assert torch.allclose(without, with_default, rtol=0, atol=1e-9 * max(1.0, float(y.abs().max())))


def test_a_checkpoint_with_a_nupi_state_loads_in_a_fresh_process(tmp_path):
    """A checkpoint holds only tensors and primitives, nuPI's init enum as a tagged string: a
    fresh process reads it with plain ``torch.load(weights_only=True)``, nothing imported
    first, and ``load_checkpoint`` gives the enum back."""
    from cooper.optim import nuPI
    from cooper.optim.torch_optimizers.nupi_optimizer import nuPIInitType

    from constrained_fairness.training.checkpoint import load_checkpoint, save_atomic

    multipliers = torch.nn.Parameter(torch.zeros(3))
    dual = nuPI([multipliers], lr=0.1, Kp=0.0, Ki=1.0, maximize=True)
    state = {"dual": dual.state_dict(), "model": {"w": torch.ones(2)}}
    assert any(isinstance(v, nuPIInitType) for g in state["dual"]["param_groups"] for v in g.values())
    path = tmp_path / "state.pt"
    save_atomic(state, path)
    code = f"""
    import torch
    state = torch.load({str(path)!r}, weights_only=True)
    print(float(state["model"]["w"].sum()), state["dual"]["param_groups"][0]["init_type"])
    """
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "2.0"
    loaded = load_checkpoint(path)
    assert loaded["dual"]["param_groups"] == state["dual"]["param_groups"]
    restored = torch.optim.SGD([torch.nn.Parameter(torch.zeros(3))], lr=1.0)
    restored = nuPI(restored.param_groups[0]["params"], lr=0.1, Kp=0.0, Ki=1.0, maximize=True)
    restored.load_state_dict(loaded["dual"])  # resumes as the original
    assert restored.param_groups[0]["init_type"] is dual.param_groups[0]["init_type"]
