"""Training: the loop, evaluation, checkpoints and loggers."""

from .batches import TensorBatches
from .checkpoint import load_checkpoint, save_atomic
from .evaluation import Evaluator, SplitEvaluation
from .trainer import Trainer

__all__ = ["Evaluator", "SplitEvaluation", "TensorBatches", "Trainer", "load_checkpoint", "save_atomic"]
