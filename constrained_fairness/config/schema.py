"""The typed experiment configuration: one dataclass per section, each key with its default,
and the validation of the whole (``ExperimentConfig.validate``, by :mod:`.validation`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .validation import validate_config

DEFAULT_METHODS = ("nft", "nft_es", "el", "ceag")
DEFAULT_CONFIG = Path(__file__).parent.parent / "configs" / "adult_default.yaml"


@dataclass
class DataConfig:
    """Where the data comes from.

    ``adult``: the bundled UCI Adult; ``csv``: any CSV file; ``utkface``, ``fairface``,
    ``cifar100``: the paper's image datasets under ``root`` (or ``$CFAIR_DATA_ROOT``).
    """

    name: str = "adult"
    root: str | None = None  # image datasets: their folder
    image_size: int | None = None  # image datasets: default 200 (UTKFace), 224 (FairFace), 32 (CIFAR-100)
    num_workers: int = 0  # DataLoader workers for image datasets
    pin_memory: bool = False
    # image datasets: "none" decodes each item in DataLoader workers; "memory" decodes every image once
    # into a memory-mapped uint8 cache and gathers batches on the host; "device" holds that cache on
    # the training device and gathers, flips and normalises batches there (see data/cache.py)
    cache: str = "none"
    cache_dir: str | None = None  # where the cache files go; default: <data root>/.cfair_cache
    path: str | None = None
    test_path: str | None = None
    target: str | None = None
    positive_value: str | None = None
    protected: list[str] = field(default_factory=lambda: ["race", "sex"])
    categorical: list[str] = field(default_factory=list)
    numeric: list[str] | None = None
    val_fraction: float = 0.2  # 0: no validation split (train on the whole training split)
    test_fraction: float = 0.2
    split_seed: int | None = None  # seed of the train/val/test split; default: the run's seed
    # utkface: "reference" = the paper code's split (sorted files, RandomState(1357), first int(0.2 N)
    # test); "seeded" = numpy default_rng(split_seed) over the valid files
    split: str = "seeded"
    # image datasets: "reference" = the paper code's torchvision pipeline; "augmented" = ours
    # (square resize; CIFAR-100 random crops and flips); see data/images.py
    transforms: str = "augmented"
    drop_protected: bool = False
    header: bool = True
    column_names: list[str] | None = None
    delimiter: str = ","


@dataclass
class ModelConfig:
    name: str = "mlp"
    hidden: list[int] = field(default_factory=lambda: [128, 64])
    width: float = 1.0  # channel multiplier of resnet56 and mobilenet_v2
    checkpoint: str | None = None  # a dense model state_dict to start from instead of training one
    compile: bool = False  # torch.compile the model's forward pass (training and evaluation)


@dataclass
class DenseConfig:
    """Dense training (skipped when ``model.checkpoint`` is given)."""

    epochs: int = 10
    optimizer: str = "adam"  # adam | sgd
    lr: float = 1e-3
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0
    batch_size: int = 256
    # > 0: the batch is min(batch_size, floor(training rows / min_steps_per_epoch)), so that a small
    # data set still gets this many steps per epoch (see experiment/budget.py); 0: batch_size as is
    min_steps_per_epoch: int = 0
    lr_milestones: list[float] = field(default_factory=list)  # fractions of the dense epochs
    lr_gamma: float = 0.1


@dataclass
class PruningConfig:
    """Gradual magnitude pruning."""

    sparsity: float = 0.95
    epochs: int = 15
    scope: str = "layerwise"
    dense_layers: list[str] = field(default_factory=lambda: ["first", "last"])
    mitigate_while_pruning: bool = False
    # "one_ahead": sparse epoch e is pruned to s(e+1), s_f from epoch T-1, methods branch at T-1;
    # "reference": epoch e to s(e) for e = 0..T (epoch 0 dense), s_f at epoch T, branch at T (paper code)
    schedule: str = "one_ahead"
    # weights kept per layer: "nearest_kept" round((1-s) n); "ceil_pruned" n - ceil(s n) (paper code)
    rounding: str = "nearest_kept"


@dataclass
class FinetuneConfig:
    """The sparse stage: pruning epochs plus ``epochs`` fine-tuning epochs, SGD."""

    epochs: int = 30
    lr: float = 1e-2
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    # which parameters decay: "all"; "no_norm_bias" (all but normalisation layers and biases);
    # "classifier" (the last linear/conv layer's weight and bias only, what the paper code's L2 term does)
    weight_decay_scope: str = "all"
    batch_size: int = 256
    min_steps_per_epoch: int = 0  # as dense.min_steps_per_epoch
    lr_milestones: list[float] = field(default_factory=lambda: [0.6, 0.8, 0.9])
    lr_gamma: float = 0.1


@dataclass
class DualConfig:
    """Dual optimizer of a constraint's multipliers (gradient ascent)."""

    lr: float = 1e-2
    optimizer: str = "sgd"  # sgd | nupi
    nupi_kp: float = 1.0
    nupi_ki: float = 1.0
    nupi_ema: float = 0.0


@dataclass
class ConstraintConfig:
    """One entry of ``constraints:``, the constraints of the ``constrained`` method.

    ``type``: demographic_parity | equal_opportunity | equalized_odds | accuracy_parity |
    bounded_group_loss | excess_accuracy_gap | equalized_loss (or a registered type).
    """

    type: str = ""
    name: str | None = None  # default: the type, numbered if repeated
    attributes: list[str] | None = None  # default: data.protected
    mode: str = "intersectional"  # intersectional | marginal
    tolerance: float = 0.05
    form: str = "group_vs_overall"  # group_vs_overall | max_min (rate and accuracy parity)
    temperature: float = 1.0  # of the sigmoid / softmax proxies
    positive_class: int | None = None  # rates: the positive class; required (one-vs-rest) for > 2 classes
    bound: float | None = None  # bounded_group_loss: L_g <= bound
    buffer_size: int = 40  # replay buffer of the strict statistic; 0: batch estimate
    overall_estimate: str = "weighted"  # excess_accuracy_gap: weighted | unweighted (the paper code's)
    dual: DualConfig = field(default_factory=DualConfig)


@dataclass
class CEAGConfig:
    tolerance: float = 0.01
    buffer_size: int = 40
    overall_estimate: str = "weighted"  # weighted | unweighted (the reference code's)
    dual: DualConfig = field(default_factory=DualConfig)


@dataclass
class ELConfig:
    # "tolerance": two inequality rows per group, |L_g - L| <= tolerance; "reference": the paper code's
    # one EQUALITY row per group on |L_g - L| with no tolerance (the multipliers only grow)
    form: str = "tolerance"
    tolerance: float = 0.05  # form tolerance only
    buffer_size: int = 40  # the replay buffer of method el_rb (method el uses none)
    overall_estimate: str = "weighted"  # el_rb: weighted | unweighted (the paper code's)
    dual: DualConfig = field(default_factory=DualConfig)


@dataclass
class LoggingConfig:
    wandb: str = "offline"  # offline | online | disabled
    tensorboard: bool = True
    progress: str = "auto"  # auto (a bar only on a TTY) | always | never
    log_every: int = 20


@dataclass
class ThresholdsConfig:
    """The post-processing baseline ``thresholds`` (binary targets; needs groups at inference)."""

    rule: str = "demographic_parity"  # demographic_parity | equal_opportunity


@dataclass
class EvaluationConfig:
    """Bootstrap intervals and verdicts of the final evaluation (see reporting/group_evaluation.py)."""

    bootstrap_resamples: int = 1000  # resamples of every split, >= 1
    confidence: float = 0.95  # of the percentile intervals
    min_group_size: int = 30  # smaller groups get no verdict (listed as too small)
    seed: int = 0  # of the resampling
    # evaluate every split after every N-th epoch of a stage (and always after its last epoch);
    # 1 (every epoch) is what the paper code does. Early stopping (NFT+ES) sees only evaluated epochs.
    every_epochs: int = 1


@dataclass
class CheckpointConfig:
    """Crash-safe checkpoints of every stage (see README, "Resuming and preemption")."""

    keep_last: int = 2  # checkpoints kept per stage, newest first; older ones are deleted
    every_steps: int = 0  # also checkpoint every N training steps inside an epoch; 0: after each epoch only


@dataclass
class GuardsConfig:
    """Numerical guards of training."""

    nonfinite: str = (
        "stop"  # stop | skip: a batch with a non-finite loss or violation stops the run, or is skipped
    )
    multiplier_warning: float = (
        1.0e4  # warn once when a multiplier exceeds this (dual LR too large, or infeasible)
    )
    # a stage whose epoch training loss exceeds divergence_factor × log(classes) stops as diverged
    # (log C is the cross-entropy of a uniform guess; a loss 100 times that is no training run)
    divergence_factor: float = 100.0
    # policy stop: read the finiteness of loss, violations and multipliers every N steps (one host
    # sync per N steps instead of one per step); a failed check restores the state of the last
    # passed check and stops. Policy skip checks every step (it must drop the very batch). 100: the
    # window's snapshot costs the host 1.4-1.9 ms (the state_dicts, then one _foreach_copy_; measured on
    # CPU for ResNet-56, MobileNetV2, ResNet-34: README, "GPU throughput"), ~0.02 ms a step
    check_every: int = 100
    fixed_shapes: str = "auto"  # auto | on | off (see config/choices.py FIXED_SHAPES)


@dataclass
class ExperimentConfig:
    name: str = "adult_default"
    seed: int = 0
    output_dir: str = "runs"
    device: str = "cpu"  # cpu | cuda | cuda:N | auto (cuda when available)
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast of the forward passes; fp16 with loss scaling)
    channels_last: bool = False  # NHWC memory format for image models, on CUDA devices only
    eval_batch_size: int = 8192
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    dense: DenseConfig = field(default_factory=DenseConfig)
    pruning: PruningConfig = field(default_factory=PruningConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    ceag: CEAGConfig = field(default_factory=CEAGConfig)
    el: ELConfig = field(default_factory=ELConfig)
    constraints: list[ConstraintConfig] = field(default_factory=list)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    thresholds: ThresholdsConfig = field(default_factory=ThresholdsConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    guards: GuardsConfig = field(default_factory=GuardsConfig)

    def validate(self) -> ExperimentConfig:
        """Check value ranges; raise :class:`ConfigError` naming the key and the fix."""
        validate_config(self)  # config/validation.py
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
