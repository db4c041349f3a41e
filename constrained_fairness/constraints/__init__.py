"""Per-group fairness constraints (one file per family, a common base).

Write a new one by subclassing :class:`GroupStatisticConstraint`; see
``examples/false_negative_rate_gap.py``.
"""

from .accuracy_gap import ExcessAccuracyGap
from .accuracy_parity import AccuracyParity, BoundedGroupLoss
from .base import BatchOutputs, GroupConstraint
from .equalized_loss import AbsoluteEqualizedLoss, EqualizedLoss
from .rates import DemographicParity, EqualizedOdds, EqualOpportunity, RateConstraint
from .reference import DenseReference
from .statistic import GroupLossConstraint, GroupStatisticConstraint, SampleStatistic

__all__ = [
    "AbsoluteEqualizedLoss",
    "AccuracyParity",
    "BatchOutputs",
    "BoundedGroupLoss",
    "DemographicParity",
    "DenseReference",
    "EqualOpportunity",
    "EqualizedLoss",
    "EqualizedOdds",
    "ExcessAccuracyGap",
    "GroupConstraint",
    "GroupLossConstraint",
    "GroupStatisticConstraint",
    "RateConstraint",
    "SampleStatistic",
]
