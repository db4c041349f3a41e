"""The allowed values of every config key with a fixed set of choices: one home, read by the
schema's validation and by the modules that act on each value."""

from __future__ import annotations

NONFINITE_POLICIES = ("stop", "skip")
"""``guards.nonfinite``: stop with a one-line error, or drop the batch and count it."""

PRECISIONS = ("fp32", "bf16", "fp16")
"""``precision``: full precision, or an autocast forward (fp16 with a gradient scaler)."""

WEIGHT_DECAY_SCOPES = ("all", "no_norm_bias", "classifier")
"""``finetune.weight_decay_scope``: the parameters SGD decays."""

GROUPING_MODES = ("intersectional", "marginal")
"""A constraint's ``mode``: one group per combination of its attributes, or per value of each."""

CONSTRAINT_FORMS = ("group_vs_overall", "max_min")
"""A constraint's ``form``: each group against the overall statistic, or max − min over groups."""

PRUNING_SCOPES = ("layerwise", "global")
PRUNING_SCHEDULES = ("one_ahead", "reference")
"""``pruning.schedule``: when each sparse epoch reaches its sparsity (:mod:`..sparsity`)."""

PRUNING_ROUNDINGS = ("nearest_kept", "ceil_pruned")
"""``pruning.rounding``: how many weights a layer keeps at sparsity ``s``."""

OVERALL_ESTIMATES = ("weighted", "unweighted")
"""``overall_estimate``: the overall accuracy of the EAG from group frequencies, or the plain
mean over groups (the paper code's)."""

EL_FORMS = ("tolerance", "reference")
DATA_SPLITS = ("seeded", "reference")
TRANSFORM_STYLES = ("augmented", "reference")
THRESHOLD_RULES = ("demographic_parity", "equal_opportunity")
DUAL_OPTIMIZERS = ("sgd", "nupi")
DENSE_OPTIMIZERS = ("adam", "sgd")
WANDB_MODES = ("offline", "online", "disabled")
PROGRESS_MODES = ("auto", "always", "never")
IMAGE_CACHES = ("none", "memory", "device")
"""``data.cache``: decode images per item (DataLoader), or once into a memory-mapped uint8 array
gathered on the host (``memory``) or held whole on the training device (``device``)."""

FIXED_SHAPES = ("auto", "on", "off")
"""``guards.fixed_shapes``: constraint statistics over all groups with masks (no host sync), or
over the present groups only; ``auto`` turns them on with plain SGD duals (on any device)."""
