"""The paper's protocol as a run: stages, methods, the run folder, and sweeps of runs."""

from .runner import RunResult, run_experiment

__all__ = ["RunResult", "run_experiment"]
