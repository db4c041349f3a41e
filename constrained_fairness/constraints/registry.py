"""Constraint types by name, for configs: ``constraints: [{type: demographic_parity, ...}]``.

``register_constraint("name")`` adds a type (a :class:`~constrained_fairness.registry.Registry`,
like the datasets, models and methods); its factory receives the constraint's config entry,
its :class:`Grouping` and a :class:`BuildContext`. A config may also name a factory of one's
own as ``type: package.module:function``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import ConfigError
from ..groups import Grouping
from ..metrics import GroupStats
from ..registry import Registry
from .accuracy_gap import ExcessAccuracyGap
from .accuracy_parity import AccuracyParity, BoundedGroupLoss
from .base import BatchOutputs, GroupConstraint
from .equalized_loss import EqualizedLoss
from .rates import DemographicParity, EqualizedOdds, EqualOpportunity, positive_class_of
from .reference import DenseReference


@dataclass
class BuildContext:
    """What a factory may need besides the config entry.

    Attributes:
        num_classes: number of target classes.
        dense_train: the dense model's outputs on the training split (for references).
        device: where the constraint's tensors live.
    """

    num_classes: int
    dense_train: BatchOutputs | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def reference(self, grouping: Grouping) -> DenseReference:
        if self.dense_train is None:
            raise ConfigError("this constraint needs the dense model's training statistics")
        out = self.dense_train
        rows, groups = grouping.memberships(out.attributes)
        stats = GroupStats.from_memberships(out.correct, out.losses, rows, groups, grouping.num_groups)
        return DenseReference.from_stats(stats).to(self.device)


Factory = Callable[[Any, Grouping, BuildContext], GroupConstraint]
CONSTRAINTS: Registry[Factory] = Registry("constraint type", "constraints[].type")
"""``factory(spec: ConstraintConfig, grouping: Grouping, context: BuildContext)`` →
:class:`GroupConstraint`, by name; a config may also name ``package.module:function``."""

register_constraint = CONSTRAINTS.register
"""Decorator: ``@register_constraint("name")`` makes a factory a constraint type of configs."""

CONSTRAINT_TYPES = CONSTRAINTS  # the name of earlier versions


RATE_TYPES = ("demographic_parity", "equal_opportunity", "equalized_odds")


def check_constraint_spec(spec: Any, num_classes: int) -> None:
    """Checks that need no model: a known type, and one-vs-rest for rates on > 2 classes.
    Run before training, so that a bad entry fails at once."""
    CONSTRAINTS.check(spec.type)
    if spec.type in RATE_TYPES:
        positive_class_of(num_classes, spec.positive_class, spec.type)
    if spec.type == "bounded_group_loss" and (spec.bound is None or spec.bound < 0):
        raise ConfigError(
            f"bounded_group_loss needs bound >= 0 (a cross-entropy, e.g. 0.5), got {spec.bound}"
        )
    if spec.type == "excess_accuracy_gap" and spec.buffer_size < 1:
        raise ConfigError(
            f"excess_accuracy_gap needs buffer_size >= 1 (the paper uses 40), got {spec.buffer_size}"
        )


def build_constraint(spec: Any, grouping: Grouping, context: BuildContext) -> GroupConstraint:
    """Build the constraint of one config entry (``spec.type`` names it)."""
    return CONSTRAINTS.resolve(spec.type)(spec, grouping, context)


def _rate(cls: type) -> Factory:
    def factory(spec: Any, grouping: Grouping, context: BuildContext) -> GroupConstraint:
        return cls(
            grouping,
            spec.tolerance,
            context.num_classes,
            positive_class=spec.positive_class,
            form=spec.form,
            temperature=spec.temperature,
            buffer_size=spec.buffer_size,
            device=context.device,
        )

    return factory


register_constraint("demographic_parity")(_rate(DemographicParity))
register_constraint("equal_opportunity")(_rate(EqualOpportunity))
register_constraint("equalized_odds")(_rate(EqualizedOdds))


@register_constraint("accuracy_parity")
def _accuracy_parity(spec: Any, grouping: Grouping, context: BuildContext) -> GroupConstraint:
    return AccuracyParity(
        grouping,
        spec.tolerance,
        form=spec.form,
        temperature=spec.temperature,
        buffer_size=spec.buffer_size,
        device=context.device,
    )


@register_constraint("bounded_group_loss")
def _bounded_group_loss(spec: Any, grouping: Grouping, context: BuildContext) -> GroupConstraint:
    if spec.bound is None:
        raise ConfigError("bounded_group_loss needs a bound: set bound, e.g. bound: 0.5 (a cross-entropy)")
    return BoundedGroupLoss(grouping, spec.bound, buffer_size=spec.buffer_size, device=context.device)


@register_constraint("excess_accuracy_gap")
def _excess_accuracy_gap(spec: Any, grouping: Grouping, context: BuildContext) -> GroupConstraint:
    return ExcessAccuracyGap(
        context.reference(grouping),
        spec.tolerance,
        spec.buffer_size,
        spec.overall_estimate,
        grouping=grouping,
    )


@register_constraint("equalized_loss")
def _equalized_loss(spec: Any, grouping: Grouping, context: BuildContext) -> GroupConstraint:
    return EqualizedLoss(grouping, spec.tolerance, spec.buffer_size, device=context.device)
