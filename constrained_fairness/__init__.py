"""constrained_fairness: training and pruning neural networks under group-fairness constraints.

The headline method is CEAG ("Balancing Act: Constraining Disparate Impact in Sparse
Models", ICLR 2024), solved as a Lagrangian min-max game with Cooper.

Glossary (one word per concept, in code, configs, files and messages):

- **attribute**: a protected column, e.g. ``race``; its values are integer codes.
- **group**: a set of samples defined by attribute values: one combination of all of them
  (intersectional) or one value of one attribute (marginal). Constraints and reports are
  per group. (The projection's "cells" are its intersectional groups: there, where the
  constraint rows are per *marginal* group, the word keeps the two apart.)
- **tolerance** (ε): the slack a constraint allows, ``c_g(θ) ≤ ε``.
- **violation**: ``c_g(θ) − ε``; positive means infeasible. The *proxy* violation is the
  differentiable one the primal step sees, the *strict* one feeds the dual step.
- **multiplier** (λ): one Lagrange multiplier per constraint row, updated by dual ascent.
- **stage**: one training phase of a run, checkpointed on its own: ``dense``, ``gmp``, then
  one per trained method. ``history.jsonl`` records carry their ``stage``.
- **method**: what a sparse fine-tuning run adds to plain training (``nft``, ``el``,
  ``ceag``, ...; :mod:`constrained_fairness.experiment.methods`); ``metrics.json`` has one
  entry per method.

Layout: ``experiment/`` runs the protocol (stages, methods, the run folder); ``data/``,
``models/`` and ``constraints/`` hold the registered building blocks
(:mod:`constrained_fairness.registry`); ``training/`` the trainer, optimizers, checkpoints
and loggers; ``reporting/`` per-group evaluation, intervals, reports and plots;
``projection/`` the exact fairness projection; ``fair_api/`` the ``fairness_training``-style
API; ``runtime/`` device, precision and DDP; ``config/`` the typed configuration.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .data.stratified import create_stratified_dataloaders
from .fair_api import FairModel, FairTrainer
from .projection import FairProjection, fair_projection

__all__ = ["FairModel", "FairProjection", "FairTrainer", "create_stratified_dataloaders", "fair_projection"]
