"""Sweeps in the wandb sweep format, expanded and run locally.

A sweep file is what ``wandb sweep FILE`` reads::

    program: cfair
    method: grid                       # grid | random (bayes runs as random locally)
    metric: {name: ceag/train/max_eag, goal: minimize}
    parameters:
      ceag.buffer_size: {values: [10, 40, 160]}
      ceag.dual.lr: {distribution: log_uniform_values, min: 1.0e-5, max: 1.0e-2}
    run_cap: 8                         # random sweeps: number of runs
    command: [${env}, cfair, run, configs/utkface/ceag.yaml, ${args_no_hyphens}]

Parameter names are config keys; ``${args_no_hyphens}`` expands to ``key=value``
overrides, which ``cfair run`` accepts after the config path. ``wandb agent`` runs the
same command on any number of machines; ``cfair sweep FILE`` runs it here, one run
after another or ``--workers N`` at a time, each into its own folder.
"""

from __future__ import annotations

import itertools
import math
import random
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..config import read_yaml
from ..errors import ConfigError

DISTRIBUTIONS = ("uniform", "log_uniform_values", "int_uniform", "categorical")


@dataclass
class SweepRun:
    name: str
    overrides: list[str]
    argv: list[str]


def _format(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _grid_values(name: str, spec: Any) -> list[Any]:
    if not isinstance(spec, dict):
        raise ConfigError(
            f"sweep parameter {name!r} must be a mapping such as {{values: [...]}}, got {spec!r}"
        )
    if "values" in spec:
        if not isinstance(spec["values"], list) or not spec["values"]:
            raise ConfigError(f"sweep parameter {name!r}: values must be a non-empty list")
        return list(spec["values"])
    if "value" in spec:
        return [spec["value"]]
    raise ConfigError(f"sweep parameter {name!r} needs values: [...] or value: X for a grid sweep")


def _sample(name: str, spec: dict[str, Any], rng: random.Random) -> Any:
    if "values" in spec or "value" in spec:
        return rng.choice(_grid_values(name, spec))
    kind = spec.get("distribution")
    low, high = spec.get("min"), spec.get("max")
    if kind not in DISTRIBUTIONS or low is None or high is None:
        raise ConfigError(
            f"sweep parameter {name!r}: use values: [...], or distribution ({', '.join(DISTRIBUTIONS[:3])}) "
            "with min and max"
        )
    if kind == "int_uniform":
        return rng.randint(int(low), int(high))
    if kind == "log_uniform_values":
        return math.exp(rng.uniform(math.log(float(low)), math.log(float(high))))
    return rng.uniform(float(low), float(high))


def expand(sweep: dict[str, Any], count: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """The parameter assignments of a sweep: the full grid, or ``count`` random draws."""
    parameters = sweep.get("parameters")
    if not isinstance(parameters, dict) or not parameters:
        raise ConfigError("a sweep file needs parameters: {config.key: {values: [...]}, ...}")
    method = sweep.get("method", "grid")
    if method == "grid":
        names = list(parameters)
        grids = [_grid_values(n, parameters[n]) for n in names]
        return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*grids)]
    if method in ("random", "bayes"):
        n = count or sweep.get("run_cap")
        if not n:
            raise ConfigError(f"a {method} sweep needs run_cap: N in the file or --count N")
        rng = random.Random(seed)
        return [{k: _sample(k, v, rng) for k, v in parameters.items()} for _ in range(int(n))]
    raise ConfigError(f"sweep method must be grid, random or bayes, got {method!r}")


def build_runs(path: Path, out: Path, count: int | None = None, seed: int = 0) -> list[SweepRun]:
    """The command line of every run, from the sweep file's ``command``."""
    sweep = read_yaml(path)
    command = sweep.get("command")
    if not command:
        raise ConfigError(
            f"sweep file {path} has no command; add one such as "
            "[${env}, cfair, run, CONFIG, ${args_no_hyphens}]"
        )
    program = sweep.get("program", "cfair")
    runs = []
    for i, params in enumerate(expand(sweep, count, seed)):
        overrides = [f"{k}={_format(v)}" for k, v in params.items()]
        argv: list[str] = []
        for part in command:
            if part == "${env}":
                continue
            if part == "${interpreter}":
                argv.append(sys.executable)
                continue
            if part in ("${program}", "cfair", program):
                argv += [sys.executable, "-m", "constrained_fairness"]
            elif part == "${args_no_hyphens}":
                argv += overrides
            elif part in ("${args}", "${args_json}", "${args_json_file}"):
                raise ConfigError(f"sweep command: use ${{args_no_hyphens}} instead of {part} with cfair")
            else:
                argv.append(str(part))
        name = f"run{i:03d}"
        runs.append(SweepRun(name, overrides, [*argv, "--output", str(out / name), "--quiet"]))
    return runs


def run_sweep(runs: Sequence[SweepRun], workers: int = 1) -> list[int]:
    """Run the commands, ``workers`` at a time; returns their exit codes."""

    def launch(run: SweepRun) -> int:
        return subprocess.run(run.argv, check=False).returncode

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(launch, runs))
