"""Tiny image data sets in the paper datasets' real on-disk formats (see shared DATA.md)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image

FAIRFACE_RACES = [
    "White",
    "Black",
    "Latino_Hispanic",
    "East Asian",
    "Southeast Asian",
    "Indian",
    "Middle Eastern",
]


def _jpeg(path: Path, rng: np.random.Generator, size: int = 12) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path, format="JPEG")


def make_utkface(root: Path, n: int = 24, seed: int = 0, size: int = 12) -> Path:
    """``[age]_[gender]_[race]_[date&time].jpg.chip.jpg`` files, every race and gender present."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        age, gender, race = 20 + i, i % 2, i % 5
        _jpeg(root / f"{age}_{gender}_{race}_2017011{i % 10}1234567{i:02d}.jpg.chip.jpg", rng, size)
    return root


def make_fairface(root: Path, n_train: int = 24, n_val: int = 10, seed: int = 0) -> Path:
    """``fairface_label_{train,val}.csv`` plus ``train/`` and ``val/`` image folders."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        lines = ["file,age,gender,race,service_test"]
        for i in range(n):
            _jpeg(root / split / f"{i + 1}.jpg", rng)
            gender = "Male" if i % 2 else "Female"
            lines.append(f"{split}/{i + 1}.jpg,20-29,{gender},{FAIRFACE_RACES[i % 7]},True")
        (root / f"fairface_label_{split}.csv").write_text("\n".join(lines) + "\n")
    return root


def make_cifar100(root: Path, n_train: int = 200, n_test: int = 100, seed: int = 0) -> Path:
    """``cifar-100-python/{train,test,meta}`` pickles: uint8 (N, 3072) R, G, B planes."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = [i % 100 for i in range(n)]
        content = {
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "fine_labels": labels,
            "coarse_labels": [label // 5 for label in labels],
            "filenames": [f"img_{i}.png" for i in range(n)],
        }
        (folder / split).write_bytes(pickle.dumps(content, protocol=2))
    meta = {
        "fine_label_names": [f"class{i:02d}" for i in range(100)],
        "coarse_label_names": [f"c{i}" for i in range(20)],
    }
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    return root
