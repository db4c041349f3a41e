"""constrained_fairness: training and pruning neural networks under group-fairness constraints.

The headline method is CEAG ("Balancing Act: Constraining Disparate Impact in Sparse
Models", ICLR 2024), solved as a Lagrangian min-max game with Cooper.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .data.stratified import create_stratified_dataloaders
from .fair_api import FairModel, FairTrainer
from .projection import FairProjection, fair_projection

__all__ = ["FairModel", "FairProjection", "FairTrainer", "create_stratified_dataloaders", "fair_projection"]
