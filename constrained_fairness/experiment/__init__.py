"""The paper's protocol as a run.

:mod:`.runner` (the stages, top to bottom), :mod:`.stages` (each stage's trainer),
:mod:`.methods` (the method registry), :mod:`.results` (each method's results),
:mod:`.budget` (batches scaled to the data), :mod:`.validation` (checks before training),
:mod:`.diagnosis` (why CEAG ended infeasible), :mod:`.run_dir` (the folder, resume),
:mod:`.outputs` (the files a run leaves) and :mod:`.sweep` (sweeps of runs).
"""

from .runner import RunResult, run_experiment

__all__ = ["RunResult", "run_experiment"]
