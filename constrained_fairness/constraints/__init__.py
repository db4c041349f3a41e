"""Per-group fairness constraints (one file per family, a common base)."""

from .accuracy_gap import ExcessAccuracyGap
from .base import BatchOutputs, GroupConstraint
from .equalized_loss import EqualizedLoss
from .reference import DenseReference

__all__ = ["BatchOutputs", "DenseReference", "EqualizedLoss", "ExcessAccuracyGap", "GroupConstraint"]
