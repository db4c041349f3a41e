"""Early stopping on the validation loss, or on the best *feasible* epoch (TFCO's rule).

``metric="loss"``: an epoch improves when ``loss < best_loss − δ``.

``metric="best_feasible"`` (default): epochs are ranked by

1. feasibility, ``gap ≤ ε + 1e-6`` (the slack absorbs float32 rounding of the outputs);
2. among feasible epochs, the lower loss (improvement: ``loss < best_loss − δ``);
3. among infeasible epochs (only while none was feasible), the lower gap
   (``gap < best_gap − δ``), so the least violating epoch is the fallback.

Patience counts the epochs since the last improvement.
"""

from __future__ import annotations

import math

from ..errors import ConfigError

METRICS = ("best_feasible", "loss")
FEASIBILITY_SLACK = 1e-6


class EarlyStopping:
    """Tracks the best epoch; ``patience=None`` never stops (the best epoch is still kept)."""

    def __init__(self, patience: int | None, delta: float, metric: str, tolerance: float) -> None:
        if patience is not None and (
            isinstance(patience, bool) or not isinstance(patience, int) or patience < 1
        ):
            raise ConfigError(f"early_stopping_patience must be an int >= 1 or None, got {patience!r}")
        if not (isinstance(delta, (int, float)) and math.isfinite(delta) and delta >= 0):
            raise ConfigError(f"early_stopping_delta must be a finite number >= 0, got {delta!r}")
        if metric not in METRICS:
            raise ConfigError(f"early_stopping_metric must be one of {', '.join(METRICS)}, got {metric!r}")
        self.patience, self.delta, self.metric, self.tolerance = patience, float(delta), metric, tolerance
        self.best_epoch = -1
        self.best_loss = math.inf
        self.best_gap = math.inf
        self.best_feasible = False
        self.counter = 0

    def feasible(self, gap: float) -> bool:
        return gap <= self.tolerance + FEASIBILITY_SLACK

    def update(self, epoch: int, loss: float, gap: float) -> bool:
        """Record an epoch; True if it is the new best."""
        if self.metric == "loss":
            improved = loss < self.best_loss - self.delta
        elif self.feasible(gap):
            improved = not self.best_feasible or loss < self.best_loss - self.delta
        else:
            improved = not self.best_feasible and gap < self.best_gap - self.delta
        if improved:
            self.best_epoch, self.best_loss, self.best_gap = epoch, loss, gap
            self.best_feasible = self.feasible(gap)
            self.counter = 0
        else:
            self.counter += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.counter >= self.patience

    def state_dict(self) -> dict:
        return {
            "best_epoch": self.best_epoch,
            "best_loss": self.best_loss,
            "best_gap": self.best_gap,
            "best_feasible": self.best_feasible,
            "counter": self.counter,
        }

    def load_state_dict(self, state: dict) -> None:
        self.best_epoch = int(state["best_epoch"])
        self.best_loss, self.best_gap = float(state["best_loss"]), float(state["best_gap"])
        self.best_feasible, self.counter = bool(state["best_feasible"]), int(state["counter"])
