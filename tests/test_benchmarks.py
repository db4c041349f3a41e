"""Smoke test: every benchmark script runs with its smallest setting (timings are not checked)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def test_group_scaling_benchmark_runs(capsys):
    spec = importlib.util.spec_from_file_location("group_scaling", BENCHMARKS / "group_scaling.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--quick", "--groups", "50"])
    assert result["ratio"] > 0 and result["ms_2"] > 0 and result["ms_50"] > 0
    assert "ratio 50/2" in capsys.readouterr().out


def test_projection_speed_benchmark_runs(capsys):
    spec = importlib.util.spec_from_file_location("projection_speed", BENCHMARKS / "projection_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--quick"])
    assert result[64]["ours_ms"] > 0 and result["breakdown"]["dual solve"] > 0
    out = capsys.readouterr().out
    assert "P3 projection forward+backward" in out and "breakdown of ours at b=64" in out
