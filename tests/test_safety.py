"""Safety of the package's own code: safe YAML only, weights_only checkpoints, no eval/exec."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "constrained_fairness"


def calls(tree: ast.AST) -> list[tuple[str, ast.Call]]:
    """Every call with its name: ``eval``, ``yaml.load``, ``<expr>.eval`` (a method of an expression)."""
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name):
            name = func.id
        elif isinstance(func, ast.Attribute):
            owner = func.value.id if isinstance(func.value, ast.Name) else "<expr>"
            name = f"{owner}.{func.attr}"
        else:
            name = "<call>"
        out.append((name, node))
    return out


BANNED = ("eval", "exec", "compile", "yaml.load", "yaml.unsafe_load", "yaml.full_load")


def problems(tree: ast.AST, where: str) -> list[str]:
    """The banned calls in ``tree``, and ``torch.load`` calls without ``weights_only=True``."""
    out = []
    for name, node in calls(tree):
        if name in BANNED:
            out.append(f"{where}:{node.lineno} calls {name}")
        if name == "torch.load":
            weights_only = [k for k in node.keywords if k.arg == "weights_only"]
            if not weights_only or not (
                isinstance(weights_only[0].value, ast.Constant) and weights_only[0].value.value is True
            ):
                out.append(f"{where}:{node.lineno} calls torch.load without weights_only=True")
    return out


def test_no_eval_exec_unsafe_yaml_or_pickled_checkpoints():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        found += problems(ast.parse(path.read_text(), str(path)), str(path.relative_to(PACKAGE.parent)))
    assert not found, found


def test_the_scan_finds_what_it_looks_for():
    bad = ast.parse(
        "import yaml, torch\neval('1')\nyaml.load(s)\ntorch.load(p)\ntorch.load(p, weights_only=True)"
    )
    names = [name for name, _ in calls(bad)]
    assert names == ["eval", "yaml.load", "torch.load", "torch.load"]
    assert problems(bad, "x") == [
        "x:2 calls eval",
        "x:3 calls yaml.load",
        "x:4 calls torch.load without weights_only=True",
    ]
