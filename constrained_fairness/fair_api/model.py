r"""``FairModel``: a network whose protected columns drive a fairness constraint.

The inputs ``x`` hold the protected attributes as columns (``protected_attr_idx``), as
in ``fairness_training``. The model's single score ``ŷ`` (``output_dim=1``) or its class
logits are constrained by ``fairness_metric``; see :mod:`..constraints.mean_score` for
``mean_pred``, whose per-attribute constraint is ``|m_0 − m_1| ≤ ε`` (binary) or
``|m_v − m̄| ≤ ε`` (more values), ``m_v`` the mean score of the rows with value ``v``.

Training (``model.train()``):

* ``enforcement="auto"`` (default): ``projection`` for ``mean_pred``, ``lagrangian`` for the
  other metrics (:func:`resolve_enforcement` says why).
* ``enforcement="lagrangian"``: the output is the network's, clamped to
  ``prediction_bounds``; :class:`FairTrainer` adds one Lagrange multiplier per
  constraint row (Cooper) and plays the min-max game.
* ``enforcement="projection"``: the batch of scores is replaced by its exact Euclidean
  projection onto ``{z : lb ≤ z ≤ ub, per-attribute gaps ≤ ε}``
  (:func:`~constrained_fairness.projection.fair_projection`), differentiably.

Inference (``model.eval()``), ``mean_pred`` only, never reading labels:

* a batch of at least ``b_tau`` rows that contains every value of every protected
  attribute is projected exactly, per batch;
* any other batch, down to one row, gets the *offsets*: the mean of ``z − ŷ`` per
  intersectional cell when the calibration predictions (the validation inputs, else the
  training inputs) are projected as one batch at ε minus a margin
  (:meth:`FairModel.calibrate`, called by the trainer after every epoch). Predictions are
  deterministic per row, and on new data each attribute's pooled gap is at most ε plus a
  sampling allowance with 95 % probability: :mod:`.guarantee` states it and its condition.

The other metrics (rates, accuracy parity, losses, ``mean_residual``) are enforced during
training only: their statistics need labels, or are not scores, so inference returns the
network's clamped output. The offsets, the attribute values seen in training and the
multipliers are buffers, so they are part of ``state_dict``.
"""

from __future__ import annotations

import difflib
import math
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ..errors import ConfigError, DataError
from ..groups import GroupIndex, Grouping
from ..models.mlp import MLP
from ..projection import apply_offsets, check_bounds, fair_projection, inward_bounds, projection_offsets
from .guarantee import DEFAULT_CONFIDENCE, gap_statistics

SCORE_METRICS = ("mean_pred", "mean_residual")
CLASS_METRICS = (
    "demographic_parity",
    "equal_opportunity",
    "equalized_odds",
    "accuracy_parity",
    "equalized_loss",
    "bounded_group_loss",
)
METRICS = SCORE_METRICS + CLASS_METRICS
ENFORCEMENTS = ("auto", "lagrangian", "projection")
_DYNAMIC_BUFFERS = (
    "attribute_values",
    "attribute_sizes",
    "offset_cells",
    "offset_values",
    "calibration_margins",
    "calibration_gaps",
    "multipliers",
)
_OPTIONAL_BUFFERS = (
    "calibration_margins",
    "calibration_gaps",
)  # absent from checkpoints written before it existed
_BISECTION_STEPS = 20
_Fitted = tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]  # ((cells, offsets), gaps)
_GAP_SLACK = 1e-5  # float32 rounding of the offset predictions' means


def resolve_enforcement(enforcement: str, fairness_metric: str) -> str:
    """``auto``: ``projection`` for ``mean_pred`` (the only metric it supports), else ``lagrangian``.

    Projection is the default where it applies because it was the more accurate at the same ε
    on every seed of both calibrations: UCI Adult prepared as in the guide (3 seeds, test
    accuracy +2.1 to +8.5 points, ``benchmarks/fair_api_vs_projection_peer.py``) and the
    guide's synthetic data (5 seeds, validation accuracy +4.9 to +6.1 points); see the README.
    """
    if enforcement != "auto":
        return enforcement
    return "projection" if fairness_metric == "mean_pred" else "lagrangian"


def _choice(value: Any, options: Sequence[str], what: str) -> str:
    if value in options:
        return value
    close = difflib.get_close_matches(str(value), options, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"{what} {value!r} is not known{hint} (choose from {', '.join(options)})")


def _positive_int(value: Any, what: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_protected_columns(protected_attr_idx: Any, input_dim: int) -> list[int]:
    """Normalized (non-negative, distinct) column indices; one-line errors naming the value."""
    idx = [protected_attr_idx] if isinstance(protected_attr_idx, (int, np.integer)) else protected_attr_idx
    try:
        idx = list(idx)
    except TypeError:
        raise ConfigError(
            f"protected_attr_idx must be an int or a list of ints, got {protected_attr_idx!r}"
        ) from None
    if not idx:
        raise ConfigError(
            "protected_attr_idx is empty; name at least one column of X, e.g. protected_attr_idx=0"
        )
    out = []
    for i in idx:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not -input_dim <= i < input_dim:
            raise ConfigError(
                f"protected_attr_idx {i!r} is out of range for input_dim={input_dim}; "
                f"use a column index in 0..{input_dim - 1}"
            )
        out.append(int(i) % input_dim)
    if len(set(out)) != len(out):
        raise ConfigError(f"protected_attr_idx {idx} names a column twice; list each column once")
    return out


class FairModel(nn.Module):
    """A network plus its fairness constraint, bounds and inference-time guarantee.

    Args:
        input_dim: number of input columns (protected columns included).
        hidden_dims: widths of the hidden ``Linear → ReLU`` layers of the default MLP.
        output_dim: 1 for a score (binary logit, probability or regression value), else the
            number of classes (class metrics only).
        protected_attr_idx: column(s) of ``x`` holding integer-coded protected attributes;
            any number of attributes, each with 2 or more values.
        prediction_bounds: optional ``(lb, ub)``; outputs always lie in it, exactly.
        fairness_tolerance: ε ≥ 0.
        b_tau: smallest inference batch that is projected per batch (default 256).
        fairness_metric: ``mean_pred`` (default), ``mean_residual``, or a class metric:
            ``demographic_parity``, ``equal_opportunity``, ``equalized_odds``,
            ``accuracy_parity``, ``equalized_loss``, ``bounded_group_loss`` (bound = ε).
        enforcement: ``auto`` (default: ``projection`` for ``mean_pred``, else ``lagrangian``;
            see :func:`resolve_enforcement`), ``lagrangian`` or ``projection`` (``mean_pred`` only).
        network: use this module instead of the MLP (see :meth:`wrap`).
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int],
        output_dim: int = 1,
        protected_attr_idx: int | Sequence[int] = 0,
        prediction_bounds: tuple[float, float] | None = None,
        fairness_tolerance: float = 0.05,
        b_tau: int = 256,
        fairness_metric: str = "mean_pred",
        enforcement: str = "auto",
        *,
        network: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.input_dim = _positive_int(input_dim, "input_dim")
        self.output_dim = _positive_int(output_dim, "output_dim")
        self.protected_attr_idx = check_protected_columns(protected_attr_idx, self.input_dim)
        self.prediction_bounds = check_bounds(prediction_bounds)
        tol = fairness_tolerance
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not math.isfinite(tol) or tol < 0:
            raise ConfigError(f"fairness_tolerance must be a finite number >= 0, got {tol!r}; e.g. 0.05")
        self.fairness_tolerance = float(tol)
        self.b_tau = _positive_int(b_tau, "b_tau", minimum=2)
        self.fairness_metric = _choice(fairness_metric, METRICS, "fairness_metric")
        self.enforcement = resolve_enforcement(
            _choice(enforcement, ENFORCEMENTS, "enforcement"), self.fairness_metric
        )
        if self.fairness_metric in SCORE_METRICS and self.output_dim != 1:
            raise ConfigError(
                f"fairness_metric={self.fairness_metric!r} constrains a single score but output_dim="
                f"{self.output_dim}; use output_dim=1, or a class metric such as 'demographic_parity'"
            )
        if self.enforcement == "projection" and self.fairness_metric != "mean_pred":
            raise ConfigError(
                f"enforcement='projection' projects scores onto the mean_pred constraints; "
                f"fairness_metric={self.fairness_metric!r} needs enforcement='lagrangian'"
            )
        if network is None:
            hidden = [_positive_int(h, "each of hidden_dims") for h in hidden_dims]
            network = MLP(self.input_dim, hidden, self.output_dim)
        self.network = network
        self.register_buffer("attribute_values", torch.zeros(0, dtype=torch.long))  # (V,) codes, by attribute
        self.register_buffer("attribute_sizes", torch.zeros(0, dtype=torch.long))  # (A,) values per attribute
        self.register_buffer("offset_cells", torch.zeros(0, len(self.protected_attr_idx), dtype=torch.long))
        self.register_buffer("offset_values", torch.zeros(0))  # (G,) inference offset per cell
        self.register_buffer("calibration_margins", torch.zeros(0, dtype=torch.float64))  # (A,) z_a·SE_cal
        self.register_buffer("calibration_gaps", torch.zeros(0, dtype=torch.float64))  # (A,) after offsets
        self.register_buffer("multipliers", torch.zeros(0))  # Lagrange multipliers, synced by the trainer
        self._warned_uncalibrated = False

    @classmethod
    def wrap(
        cls,
        network: nn.Module,
        protected_attr_idx: int | Sequence[int],
        input_dim: int,
        output_dim: int = 1,
        **kwargs: Any,
    ) -> FairModel:
        """A ``FairModel`` around any ``network`` mapping ``(B, input_dim)`` to ``(B, output_dim)``."""
        if not isinstance(network, nn.Module):
            raise ConfigError(f"FairModel.wrap needs a torch.nn.Module, got {type(network).__name__}")
        return cls(input_dim, (), output_dim, protected_attr_idx, network=network, **kwargs)

    # -- protected attributes ------------------------------------------------------------
    def protected_codes(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, A)`` integer codes of the protected columns of ``x``."""
        if x.dim() != 2 or x.shape[1] != self.input_dim:
            raise DataError(
                f"FairModel expects inputs of shape (batch, {self.input_dim}), got {tuple(x.shape)}; "
                "pass the feature matrix including the protected columns"
            )
        return x[:, self.protected_attr_idx].round().long()

    @property
    def has_groups(self) -> bool:
        return self.attribute_sizes.numel() > 0

    def set_groups(self, codes: torch.Tensor) -> None:
        """Record the values of each protected attribute from ``(N, A)`` training codes."""
        values, sizes = [], []
        for a, col in enumerate(codes.unbind(dim=1)):
            found = torch.unique(col)
            if found.numel() < 2:
                raise DataError(
                    f"protected column {self.protected_attr_idx[a]} has a single value "
                    f"{int(found[0]) if found.numel() else 'none'} in the training data; a fairness "
                    "constraint needs at least 2 groups, so drop this column from protected_attr_idx"
                )
            values.append(found)
            sizes.append(found.numel())
        device = self.attribute_values.device
        self.attribute_values = torch.cat(values).to(device)
        self.attribute_sizes = torch.tensor(sizes, dtype=torch.long, device=device)

    def group_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """``(B, A)`` index of each code among its attribute's training values."""
        out = torch.empty_like(codes)
        for a, values in enumerate(self.attribute_values.split(self.attribute_sizes.tolist())):
            col = codes[:, a]
            pos = torch.searchsorted(values, col.contiguous()).clamp(max=values.numel() - 1)
            unknown = values[pos] != col
            if bool(unknown.any()):
                bad = int(col[unknown][0])
                raise DataError(
                    f"protected column {self.protected_attr_idx[a]} has value {bad}, which the training "
                    f"data did not have (known: {values.tolist()}); encode it as one of the known values"
                )
            out[:, a] = pos
        return out

    def grouping(self) -> Grouping:
        """Marginal groups: one partition per protected attribute, one group per value."""
        if not self.has_groups:
            raise ConfigError(
                "FairModel has no groups yet; call set_groups(codes) on the training codes first"
            )
        names = [f"x[{i}]" for i in self.protected_attr_idx]
        values = [
            tuple(str(int(v)) for v in vals)
            for vals in self.attribute_values.cpu().split(self.attribute_sizes.tolist())
        ]
        index = GroupIndex.from_lists(names, values)
        return Grouping(index, tuple(range(len(names))), "marginal")

    # -- forward -----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raw = self.network(x)
        if raw.dim() == 1:
            raw = raw.unsqueeze(1)
        if raw.dim() != 2 or raw.shape[1] != self.output_dim:
            raise ConfigError(
                f"the network returned shape {tuple(raw.shape)} for a batch of {x.shape[0]}; "
                f"FairModel(output_dim={self.output_dim}) needs (batch, {self.output_dim})"
            )
        if self.training:
            if self.enforcement == "projection":
                return fair_projection(
                    raw, self.protected_codes(x), self.fairness_tolerance, self.prediction_bounds
                )
            return self.clip(raw)
        return self._inference(raw, x)

    def clip(self, outputs: torch.Tensor) -> torch.Tensor:
        """Clamp to ``prediction_bounds`` (rounded inwards to the dtype, so they hold exactly)."""
        if self.prediction_bounds is None:
            return outputs
        return outputs.clamp(*inward_bounds(self.prediction_bounds, outputs.dtype))

    def _covers_all_values(self, codes: torch.Tensor) -> bool:
        if not self.has_groups:
            return all(torch.unique(col).numel() >= 2 for col in codes.unbind(dim=1))
        sizes = self.attribute_sizes
        offsets = torch.cumsum(sizes, 0) - sizes
        ids = (self.group_indices(codes) + offsets).flatten()
        return bool((torch.bincount(ids, minlength=int(sizes.sum())) > 0).all())

    def _inference(self, raw: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.fairness_metric != "mean_pred":
            return self.clip(raw)
        codes = self.protected_codes(x)
        calibrated = self.offset_values.numel() > 0
        if calibrated:
            table = (self.offset_cells, self.offset_values)
            raw = apply_offsets(self.clip(raw), codes, table, self.prediction_bounds)
        if raw.shape[0] >= self.b_tau and self._covers_all_values(codes):
            return fair_projection(raw, codes, self.fairness_tolerance, self.prediction_bounds)
        if calibrated:
            return raw
        if not self._warned_uncalibrated:
            warnings.warn(
                f"FairModel has no inference offsets yet, so a batch of {raw.shape[0]} rows (< b_tau="
                f"{self.b_tau}, or missing a group) is not adjusted; train with FairTrainer.fit or call "
                "model.calibrate(X_train)",
                stacklevel=2,
            )
            self._warned_uncalibrated = True
        return self.clip(raw)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Inference-mode outputs (the mode is restored afterwards)."""
        was_training = self.training
        self.eval()
        try:
            return self(x)
        finally:
            self.train(was_training)

    @torch.no_grad()
    def calibrate(
        self,
        data: Any,
        batch_size: int = 4096,
        confidence: float = DEFAULT_CONFIDENCE,
        warn: bool = True,
    ) -> None:
        """Set the inference offsets from calibration inputs (a tensor or array ``X``, or a
        loader of ``(X, y)`` batches; the labels are not read).

        With ``m_a = z_a·SE_a`` the margin of attribute ``a`` on these rows (:mod:`.guarantee`),
        the offsets are the mean ``z − ŷ`` per intersectional cell (``ŷ`` the scores clipped
        to ``prediction_bounds``, as they are at inference) when all the scores are
        projected as one batch at ``t = max(0, ε − max_a m_a)``, with ``t`` lowered by
        bisection where clipping to ``prediction_bounds`` would leave a gap above it, so the
        offset predictions of these rows have every gap ≤ ``t``. The margins are stored in
        ``calibration_margins`` and the gaps the offsets leave in ``calibration_gaps``; with
        ``warn``, an attribute whose gap plus margin exceeds ε (a split too small for the
        guarantee at this ε, or clipping the offsets cannot undo) is reported as a warning.
        """
        if self.fairness_metric != "mean_pred":
            return
        if not 0.5 < confidence < 1:
            raise ConfigError(f"confidence must be in (0.5, 1), got {confidence!r}; e.g. 0.95")
        device = next(self.parameters()).device
        was_training = self.training
        self.eval()
        try:
            raws, codes = [], []
            for x in feature_batches(data, batch_size):
                x = x.to(device=device, dtype=torch.float32)
                raws.append(self.network(x).reshape(x.shape[0], -1))
                codes.append(self.protected_codes(x))
        finally:
            self.train(was_training)
        # the offsets act on clipped scores: a row far beyond a bound would otherwise weigh
        # its whole distance to the bound into its cell's mean offset
        raw, code = self.clip(torch.cat(raws)), torch.cat(codes)
        if not self.has_groups:
            self.set_groups(code)
        groups = self.group_indices(code)  # every value known
        margins = gap_statistics(raw, groups, self.attribute_sizes).allowances(confidence)
        target = max(0.0, self.fairness_tolerance - float(margins.max()))
        (cells, offsets), gaps = self._offsets_within(raw, code, groups, target)
        self.offset_cells, self.offset_values = cells, offsets.float()
        self.calibration_margins = margins.to(self.offset_values.device)
        self.calibration_gaps = gaps.to(self.offset_values.device)
        if warn:
            self.warn_guarantee()

    def _offsets_within(
        self, raw: torch.Tensor, code: torch.Tensor, groups: torch.Tensor, target: float
    ) -> _Fitted:
        """``(offset table, the (A,) gaps it leaves)``: offsets whose clipped predictions have
        every gap ≤ ``target``, as close to it as :data:`_BISECTION_STEPS` allow.

        Without bounds those of the projection at ``target`` are exact (it moves every row of a
        cell by the same amount, which the offsets reproduce). With bounds, clipping after the
        offsets moves the gaps, either way, so the projection's tolerance ``s`` is searched
        instead: the largest ``s`` whose clipped offset predictions meet ``target`` (bracketed
        by doubling, then bisected)."""
        slack = 4 * torch.finfo(torch.float32).eps * (1.0 + float(raw.abs().max()))

        def fit(tolerance: float) -> tuple[_Fitted, float]:
            table = projection_offsets(raw, code, tolerance, self.prediction_bounds)
            adjusted = apply_offsets(raw, code, table, self.prediction_bounds)
            gaps = gap_statistics(adjusted, groups, self.attribute_sizes).gaps
            return (table, gaps), float(gaps.max())

        fitted, gap = fit(target)
        if self.prediction_bounds is None or abs(gap - target) <= slack:
            return fitted
        if gap > target + slack:  # clipping widened the gaps: tighten
            good, bad = 0.0, target
            best, gap = fit(0.0)
            if gap > target + slack:
                return best  # the most the offsets can do; guarantee_problems reports it
        else:  # clipping narrowed them: loosen until the gap passes the target
            good, best, bad = target, fitted, None
            step = max(target - gap, slack)
            for _ in range(_BISECTION_STEPS):
                trial = good + step
                fitted, gap = fit(trial)
                if gap > target + slack:
                    bad = trial
                    break
                good, best, step = trial, fitted, 2 * step
            if bad is None:
                return best
        for _ in range(_BISECTION_STEPS):
            mid = 0.5 * (good + bad)
            fitted, gap = fit(mid)
            if gap <= target + slack:
                good, best = mid, fitted
            else:
                bad = mid
        return best

    def guarantee_problems(self) -> list[str]:
        """Why the inference guarantee (:mod:`.guarantee`) does not hold for the current
        offsets, one line per attribute; empty when it holds or no margin is known."""
        problems, gaps = [], self.calibration_gaps
        margins = self.calibration_margins.tolist()
        for a, (column, margin) in enumerate(zip(self.protected_attr_idx, margins, strict=False)):
            if not math.isfinite(margin):
                problems.append(
                    f"protected column {column}: a group has fewer than 2 calibration rows, so its "
                    "gap cannot be calibrated; pass calibration data with every value at least twice"
                )
            elif margin > self.fairness_tolerance:
                problems.append(
                    f"protected column {column}: the calibration margin {margin:.4g} exceeds "
                    f"fairness_tolerance={self.fairness_tolerance:g}, so gaps within ε + allowance "
                    "are not guaranteed on new data; calibrate on more rows or use a larger ε"
                )
            elif a < gaps.numel() and float(gaps[a]) + margin > self.fairness_tolerance + _GAP_SLACK:
                problems.append(
                    f"protected column {column}: clipping to prediction_bounds leaves a calibration "
                    f"gap of {float(gaps[a]):.4g}, which with the margin {margin:.4g} exceeds "
                    f"fairness_tolerance={self.fairness_tolerance:g}; widen prediction_bounds"
                )
        return problems

    def warn_guarantee(self) -> None:
        """Warn (one warning) when :meth:`guarantee_problems` finds any."""
        problems = self.guarantee_problems()
        if problems:
            warnings.warn("FairModel inference guarantee: " + "; ".join(problems), stacklevel=3)

    # -- state -------------------------------------------------------------------------------
    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        for name in _OPTIONAL_BUFFERS:  # an older checkpoint: no margins known
            state_dict.setdefault(prefix + name, torch.zeros(0, dtype=getattr(self, name).dtype))
        for name in _DYNAMIC_BUFFERS:  # sized by the data: take the saved shape
            saved = state_dict.get(prefix + name)
            if isinstance(saved, torch.Tensor):
                current = getattr(self, name)
                setattr(self, name, torch.empty(saved.shape, dtype=current.dtype, device=current.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return (
            f"protected_attr_idx={self.protected_attr_idx}, fairness_metric={self.fairness_metric!r}, "
            f"fairness_tolerance={self.fairness_tolerance}, enforcement={self.enforcement!r}, "
            f"prediction_bounds={self.prediction_bounds}, b_tau={self.b_tau}"
        )


def feature_batches(data: Any, batch_size: int) -> Iterator[torch.Tensor]:
    """The feature tensors of ``data``: a tensor/array ``X``, or a loader of ``(X, y)`` batches
    (read in order from its dataset when it has one, so a shuffling sampler is not advanced)."""
    if isinstance(data, DataLoader):
        loader: Any = data
        dataset = data.dataset
        if hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__"):
            loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
        for batch in loader:
            yield batch[0] if isinstance(batch, (list, tuple)) else batch
        return
    X = data if isinstance(data, torch.Tensor) else torch.as_tensor(np.asarray(data))
    if X.dim() != 2 or X.shape[0] == 0:
        raise DataError(f"reference inputs must be a non-empty (N, features) matrix, got {tuple(X.shape)}")
    yield from X.split(batch_size)
