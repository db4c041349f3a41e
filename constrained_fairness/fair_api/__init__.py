"""The ``fairness_training``-style API: :class:`FairModel` and :class:`FairTrainer`."""

from __future__ import annotations

from ..constraints.mean_score import MeanPredictionGap, MeanResidual, attribute_gaps
from .early_stopping import EarlyStopping
from .model import FairModel
from .trainer import FairTrainer

__all__ = ["EarlyStopping", "FairModel", "FairTrainer", "MeanPredictionGap", "MeanResidual", "attribute_gaps"]
