"""The whole protocol on a data set and a network of one's own, without touching the library.

The data set is scikit-learn's bundled handwritten digits (1,797 grayscale 8x8 images, 10
classes). As in the paper's CIFAR-100 setting, the classes are the groups: CEAG keeps every
digit's accuracy loss after pruning within ε of the average loss. The network is a small CNN.
Both are registered by decorators in this file; a config could name them the same way
(``data.name: digits``, ``model.name: small_cnn``) once this module is imported, or by import
path without any registration (``data.name: custom_dataset_and_model:digits`` with this folder
on ``PYTHONPATH``).

Run it from the repository root (about half a minute on a 2-core CPU):

    python examples/custom_dataset_and_model.py [--output runs/digits]

It prunes the CNN to 95 % sparsity, fine-tunes it with NFT and with CEAG, and prints each
digit's excess accuracy gap ψ[g] on the training and test splits.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence

import torch
from sklearn.datasets import load_digits
from torch import nn

from constrained_fairness.config import load_config
from constrained_fairness.experiment import run_experiment
from constrained_fairness.registry import DATASETS, MODELS


class Digits(torch.utils.data.Dataset):
    """Item ``i``: ``(image (1, 8, 8) in [0, 1], digit, attributes (digit,))``."""

    def __init__(self) -> None:
        digits = load_digits()
        self.images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        self.targets = torch.tensor(digits.target, dtype=torch.long)
        self.attributes = self.targets[:, None].clone()  # the protected attribute is the class
        self.class_names = [str(d) for d in range(10)]
        self.attribute_names = ["digit"]
        self.attribute_values = [self.class_names]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.images[i], self.targets[i], self.attributes[i]


@DATASETS.register("digits")
def digits(data, seed: int) -> Digits:
    """One dataset; the run splits it with ``data.val_fraction`` and ``data.test_fraction``."""
    return Digits()


@MODELS.register("small_cnn")
def small_cnn(model, *, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """conv 3x3 (kept dense) → conv 3x3 → linear → linear classifier (kept dense)."""
    channels, height, width = input_shape
    return nn.Sequential(
        nn.Conv2d(channels, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * (height // 2) * (width // 2), 64),
        nn.ReLU(),
        nn.Linear(64, num_classes),
    )


SETTINGS = [
    "name=digits",
    "data.name=digits",
    "data.protected=[digit]",
    "data.val_fraction=0.2",
    "data.test_fraction=0.2",
    "model.name=small_cnn",
    "methods=[nft,ceag]",
    "dense.epochs=8",
    "dense.batch_size=64",
    "dense.min_steps_per_epoch=0",  # the batch sizes here are chosen for this data: not scaled
    "dense.lr=0.003",
    "pruning.sparsity=0.95",
    "pruning.epochs=4",
    "finetune.epochs=8",
    "finetune.batch_size=64",
    "finetune.min_steps_per_epoch=0",
    "finetune.lr=0.05",
    "ceag.tolerance=0.02",
    "ceag.buffer_size=20",
    "ceag.dual.lr=0.05",
    "evaluation.bootstrap_resamples=200",
    "logging.wandb=disabled",
    "logging.tensorboard=false",
    "logging.progress=never",
]


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=None, help="run folder (default: a temporary folder)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    cfg = load_config(None, [*SETTINGS, *args.overrides])
    with tempfile.TemporaryDirectory() as scratch:
        result = run_experiment(cfg, output=args.output or f"{scratch}/digits")
        metrics, results = result.metrics, result.results  # the file's content, and its typed tree
    print(f"ε = {results.tolerance}, sparsity {results.sparsity:.0%}; ψ[g] per digit (train | test)")
    print("digit " + "".join(f"{m:>17}" for m in results.methods))
    for digit in results.groups:
        cells = [
            f"{m.split('train').group(digit).eag:+8.3f}{m.split('test').group(digit).eag:+9.3f}"
            for m in results.methods.values()
        ]
        print(f"{digit:>5} " + "".join(cells))
    for name, m in results.methods.items():
        train, test = m.split("train"), m.split("test")
        print(
            f"{name}: accuracy {train.accuracy:.3f} train, {test.accuracy:.3f} test; "
            f"max ψ {train.max_eag:.3f} train, {test.max_eag:.3f} test"
        )
    return metrics


if __name__ == "__main__":
    main()
