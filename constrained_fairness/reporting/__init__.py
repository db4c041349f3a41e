"""Reporting: per-group evaluation with bootstrap intervals, and the files a run leaves.

- :mod:`.group_evaluation`: per-group statistics, intervals and verdicts of one split;
- :mod:`.bootstrap`: the vectorized resampling behind those intervals;
- :mod:`.markdown`: ``report.md`` and its tables; :mod:`.plots`: its figures;
- :mod:`.html`: ``report.html``; :mod:`.compare`: ``compare.html`` over runs;
- :mod:`.aggregate`: the mean ± std table over seeds;
- :mod:`.results`: the typed results tree (run → method → split → group) that ``metrics.json``
  is written from and read back into; :mod:`.results_view`: what the reports derive from it.

Every file goes through :mod:`constrained_fairness.files` (one atomic write).
"""
