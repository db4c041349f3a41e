"""Baselines from the wider fairness toolbox: pre-processing (reweighting) and
post-processing (group-specific thresholds)."""

from __future__ import annotations

from .reweighting import kamiran_calders_weights
from .thresholds import THRESHOLD_RULES, apply_thresholds, fit_thresholds

__all__ = ["THRESHOLD_RULES", "apply_thresholds", "fit_thresholds", "kamiran_calders_weights"]
