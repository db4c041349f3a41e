"""The ``fairness_training``-style API: :class:`FairModel` and :class:`FairTrainer`."""

from __future__ import annotations

from .early_stopping import EarlyStopping
from .mean_constraints import MeanPredictionGap, MeanResidual, attribute_gaps
from .model import FairModel
from .trainer import FairTrainer

__all__ = ["EarlyStopping", "FairModel", "FairTrainer", "MeanPredictionGap", "MeanResidual", "attribute_gaps"]
