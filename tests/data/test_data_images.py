"""Tests of the image loaders (UTKFace, FairFace, CIFAR-100) on tiny fixtures in the real file formats."""

from __future__ import annotations

import os
import pickle
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from constrained_fairness.data import (
    ImageData,
    LabeledImages,
    image_transforms,
    load_cifar100,
    load_fairface,
    load_utkface,
)
from constrained_fairness.data.images import decode_cifar_rows, decode_image_file
from constrained_fairness.errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR_STD = (0.2673, 0.2564, 0.2762)


def write_image(path: Path, seed: int, size: int = 8) -> None:
    """Save a small image of random pixels (format from the suffix: JPEG for .jpg)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="PNG" if path.suffix == ".png" else "JPEG")


def pil_chw(path: Path) -> np.ndarray:
    """Decode an image with PIL directly, as (3, H, W) uint8."""
    with Image.open(path) as image:
        return np.array(image.convert("RGB")).transpose(2, 0, 1)


# --------------------------------------------------------------------------------------------------------
# UTKFace fixture.

# (age, gender, race) of the valid files.
UTK_CODES = [(20 + i, i % 2, (3 * i) % 5) for i in range(12)]
UTK_VALID = [f"{a}_{g}_{r}_201701161745{i:05d}.jpg.chip.jpg" for i, (a, g, r) in enumerate(UTK_CODES)]
UTK_MALFORMED = [
    "39_1_20170116174525125.jpg.chip.jpg",  # missing field (race)
    "4x_0_1_20170116174525126.jpg.chip.jpg",  # non-integer age
    "30_0_7_20170116174525127.jpg.chip.jpg",  # race out of range
]
RACES = ["White", "Black", "Asian", "Indian", "Others"]


@pytest.fixture
def utk_root(tmp_path: Path) -> Path:
    root = tmp_path / "UTKFace"
    for i, name in enumerate(UTK_VALID + UTK_MALFORMED):
        write_image(root / name, seed=i)
    (root / "README.txt").write_text("not an image\n")
    return root


def utk_codes_from_name(path: Path) -> tuple[int, int, int]:
    """Codes parsed independently of the loader."""
    age, gender, race = path.name.split("_")[:3]
    return int(age), int(gender), int(race)


def load_utk_quietly(root: Path | None, **kwargs) -> ImageData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_utkface(root, **kwargs)


def test_utkface_warns_once_with_count(utk_root: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_utkface(utk_root, image_size=16)
    messages = [str(w.message) for w in caught if "UTKFace" in str(w.message)]
    assert len(messages) == 1
    assert "skipped 3 of 15" in messages[0]
    assert "\n" not in messages[0]


def test_utkface_labels_match_names(utk_root: Path) -> None:
    data = load_utk_quietly(utk_root, target="race", protected=("gender", "race"), image_size=16)
    assert data.class_names == RACES
    assert data.num_classes == 5
    assert data.attribute_names == ["gender", "race"]
    assert data.attribute_values == [["Male", "Female"], RACES]
    for split in ("train", "val", "test"):
        dataset = getattr(data, split)
        targets, attributes = data.labels(split)
        expected = [utk_codes_from_name(p) for p in dataset.paths]
        assert targets.tolist() == [race for _, _, race in expected]
        assert attributes.tolist() == [[gender, race] for _, gender, race in expected]
        assert targets.dtype == torch.long and attributes.dtype == torch.long

    gender = load_utk_quietly(utk_root, target="gender", protected="race")
    targets, attributes = gender.labels("train")
    expected = [utk_codes_from_name(p) for p in gender.train.paths]
    assert gender.class_names == ["Male", "Female"]
    assert targets.tolist() == [g for _, g, _ in expected]
    assert attributes.tolist() == [[r] for _, _, r in expected]


def test_utkface_splits_sizes_disjoint_seeded(utk_root: Path) -> None:
    data = load_utk_quietly(utk_root, seed=3)
    names = {s: [p.name for p in getattr(data, s).paths] for s in ("train", "val", "test")}
    # 12 valid files: test = round(0.2 * 12) = 2, val = round(0.1 * 10) = 1, train = 9.
    assert [len(names[s]) for s in ("train", "val", "test")] == [9, 1, 2]
    assert sorted(names["train"] + names["val"] + names["test"]) == sorted(UTK_VALID)
    assert not set(names["train"]) & set(names["test"]) and not set(names["val"]) & set(names["test"])
    assert not set(names["train"]) & set(names["val"])
    # The documented rule, recomputed here: permutation of the sorted valid names, test first, then val.
    perm = np.random.default_rng(3).permutation(12)
    ordered = sorted(UTK_VALID)
    assert names["test"] == sorted(ordered[i] for i in perm[:2])
    assert names["val"] == [ordered[perm[2]]]

    again = load_utk_quietly(utk_root, seed=3)
    assert [p.name for p in again.test.paths] == names["test"]
    other = load_utk_quietly(utk_root, seed=4)
    assert [p.name for p in other.test.paths] != names["test"]


def test_utkface_items(utk_root: Path) -> None:
    data = load_utk_quietly(utk_root, protected=("race", "gender"), image_size=16)
    image, target, attributes = data.train[0]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32
    assert type(image) is torch.Tensor
    assert isinstance(target, int)
    assert attributes.dtype == torch.long and attributes.shape == (2,)
    _, gender, race = utk_codes_from_name(data.train.paths[0])
    assert target == race and attributes.tolist() == [race, gender]

    # Eval items are the deterministic transform of the decoded file.
    path = data.test.paths[0]
    raw = data.test.raw(0)
    assert raw.dtype == torch.uint8 and np.array_equal(raw.numpy(), pil_chw(path))
    item = data.test[0][0]
    assert torch.allclose(item, image_transforms("utkface", 16, train=False)(raw))
    assert torch.equal(data.test[0][0], item)


def test_utkface_corrupt_image_raises_on_item(utk_root: Path) -> None:
    bad = utk_root / UTK_VALID[5]
    bad.write_bytes(b"this is not a jpeg at all" * 10)
    data = load_utk_quietly(utk_root)
    for split in ("train", "val", "test"):
        dataset = getattr(data, split)
        data.labels(split)  # labels never decode images
        for i, path in enumerate(dataset.paths):
            if path == bad:
                with pytest.raises(DataError, match=re.escape(UTK_VALID[5])) as info:
                    dataset[i]
                assert "\n" not in str(info.value)
                return
    raise AssertionError("the corrupt file is in no split")


def test_utkface_missing_and_empty_root(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist") as info:
        load_utkface(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(info.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no UTKFace images"):
        load_utkface(empty)
    for i, name in enumerate(UTK_MALFORMED):
        write_image(empty / name, seed=i)
    with pytest.raises(DataError, match="none of the 3 image files"):
        load_utkface(empty)


def test_utkface_nested_folder_and_bad_arguments(utk_root: Path) -> None:
    nested = load_utk_quietly(utk_root.parent)  # the parent holds UTKFace/
    assert len(nested.train) == 9
    with pytest.raises(DataError, match="target 'age'"):
        load_utkface(utk_root, target="age")
    with pytest.raises(DataError, match="'religion'"):
        load_utkface(utk_root, protected=("race", "religion"))
    with pytest.raises(DataError, match="image_size"):
        load_utk_quietly(utk_root, image_size=0)
    with pytest.raises(DataError, match="test_fraction"):
        load_utk_quietly(utk_root, test_fraction=1.5)


def test_data_root_from_environment(
    utk_root: Path, ff_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CFAIR_DATA_ROOT", str(tmp_path))
    data = load_utk_quietly(None)
    assert {p.parent for p in data.train.paths} == {utk_root}
    faces = load_fairface(None)
    assert {p.parent for p in faces.test.paths} == {ff_root / "val"}
    monkeypatch.delenv("CFAIR_DATA_ROOT")
    with pytest.raises(DataError, match="CFAIR_DATA_ROOT") as info:
        load_utkface(None)
    assert "data.root" in str(info.value)
    monkeypatch.setenv("CFAIR_DATA_ROOT", str(tmp_path / "other"))
    with pytest.raises(DataError, match="fairface"):
        load_fairface(None)


# --------------------------------------------------------------------------------------------------------
# FairFace fixture.

FF_RACES = ["White", "Black", "Latino_Hispanic", "East Asian", "Southeast Asian", "Indian", "Middle Eastern"]
FF_HEADER = "file,age,gender,race,service_test"


def ff_rows(split: str, n: int, offset: int) -> list[tuple[str, str, str, str, str]]:
    return [
        (
            f"{split}/{i + 1}.jpg",
            "20-29",
            ["Male", "Female"][(i + offset) % 2],
            FF_RACES[(i + offset) % 7],
            "True",
        )
        for i in range(n)
    ]


def write_fairface_csv(path: Path, rows: list[tuple[str, ...]], header: str = FF_HEADER) -> None:
    path.write_text("\n".join([header, *(",".join(row) for row in rows)]) + "\n")


@pytest.fixture
def ff_root(tmp_path: Path) -> Path:
    root = tmp_path / "fairface"
    for split, n, offset in (("train", 10, 0), ("val", 4, 3)):
        rows = ff_rows(split, n, offset)
        for i, row in enumerate(rows):
            write_image(root / row[0], seed=100 * offset + i)
        write_fairface_csv(root / f"fairface_label_{split}.csv", rows)
    return root


def test_fairface_labels_and_splits(ff_root: Path) -> None:
    data = load_fairface(ff_root, image_size=16, seed=1)
    assert data.class_names == ["Male", "Female"]
    assert data.attribute_names == ["race"] and data.attribute_values == [FF_RACES]
    rows = {row[0]: row for row in ff_rows("train", 10, 0) + ff_rows("val", 4, 3)}
    relative = {
        s: [p.relative_to(ff_root).as_posix() for p in getattr(data, s).paths]
        for s in ("train", "val", "test")
    }
    # The official val CSV is the test split, in file order.
    assert relative["test"] == [f"val/{i}.jpg" for i in range(1, 5)]
    assert len(relative["val"]) == 1 and len(relative["train"]) == 9
    assert sorted(relative["train"] + relative["val"]) == sorted(f"train/{i}.jpg" for i in range(1, 11))
    for split in ("train", "val", "test"):
        targets, attributes = data.labels(split)
        assert targets.tolist() == [["Male", "Female"].index(rows[f][2]) for f in relative[split]]
        assert attributes[:, 0].tolist() == [FF_RACES.index(rows[f][3]) for f in relative[split]]

    by_race = load_fairface(ff_root, target="race", protected=("race", "gender"))
    targets, attributes = by_race.labels("test")
    test_rows = ff_rows("val", 4, 3)
    assert by_race.class_names == FF_RACES
    assert targets.tolist() == [FF_RACES.index(r[3]) for r in test_rows]
    assert attributes.tolist() == [[FF_RACES.index(r[3]), ["Male", "Female"].index(r[2])] for r in test_rows]


def test_fairface_items(ff_root: Path) -> None:
    data = load_fairface(ff_root, image_size=16)
    image, target, attributes = data.test[2]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32
    assert target == ["Male", "Female"].index(ff_rows("val", 4, 3)[2][2])
    assert attributes.shape == (1,)
    assert np.array_equal(data.test.raw(2).numpy(), pil_chw(ff_root / "val/3.jpg"))


def test_fairface_errors(ff_root: Path) -> None:
    rows = ff_rows("train", 10, 0)
    no_race = [(f, a, g, s) for f, a, g, _, s in rows]
    write_fairface_csv(ff_root / "fairface_label_train.csv", no_race, header="file,age,gender,service_test")
    with pytest.raises(DataError, match="has no column 'race'") as info:
        load_fairface(ff_root)
    assert "fairface_label_train.csv" in str(info.value)

    write_fairface_csv(ff_root / "fairface_label_train.csv", rows)
    (ff_root / "val" / "2.jpg").unlink()
    with pytest.raises(DataError, match=r"val/2\.jpg' listed in fairface_label_val\.csv does not exist"):
        load_fairface(ff_root)

    write_fairface_csv(ff_root / "fairface_label_train.csv", [*rows[:-1], (*rows[-1][:3], "Martian", "True")])
    with pytest.raises(DataError, match="line 11: race 'Martian'"):
        load_fairface(ff_root)

    (ff_root / "fairface_label_val.csv").unlink()
    write_fairface_csv(ff_root / "fairface_label_train.csv", rows)
    with pytest.raises(DataError, match=r"fairface_label_val\.csv' is missing"):
        load_fairface(ff_root)


def test_fairface_corrupt_image(ff_root: Path) -> None:
    (ff_root / "val" / "4.jpg").write_bytes(os.urandom(64))
    data = load_fairface(ff_root)
    with pytest.raises(DataError, match=r"val/4\.jpg"):
        data.test[3]


# --------------------------------------------------------------------------------------------------------
# CIFAR-100 fixture.

CIFAR_NAMES = [f"class_{i:02d}" for i in range(100)]


def cifar_dict(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    fine = rng.integers(0, 100, size=n)
    return {
        "filenames": [f"img_{seed}_{i}.png" for i in range(n)],
        "batch_label": "fixture",
        "fine_labels": [int(v) for v in fine],
        "coarse_labels": [int(v) // 5 for v in fine],
        "data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
    }


def write_pickle(path: Path, obj: object) -> None:
    with open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=2)


@pytest.fixture
def cifar_root(tmp_path: Path) -> tuple[Path, dict, dict]:
    folder = tmp_path / "cifar100" / "cifar-100-python"
    folder.mkdir(parents=True)
    train, test = cifar_dict(10, 0), cifar_dict(5, 1)
    test["data"][3, 1 * 1024 + 5 * 32 + 7] = 201  # pixel (c=1, h=5, w=7) of test image 3
    write_pickle(folder / "train", train)
    write_pickle(folder / "test", test)
    write_pickle(
        folder / "meta", {"fine_label_names": CIFAR_NAMES, "coarse_label_names": [str(i) for i in range(20)]}
    )
    return tmp_path / "cifar100", train, test


def test_decode_cifar_rows_layout() -> None:
    data = np.random.default_rng(5).integers(0, 256, size=(2, 3072), dtype=np.uint8)
    images = decode_cifar_rows(data)
    assert images.shape == (2, 3, 32, 32)
    expected = np.empty((3, 32, 32), dtype=np.uint8)
    for c in range(3):
        for h in range(32):
            for w in range(32):
                expected[c, h, w] = data[1, c * 1024 + h * 32 + w]
    assert np.array_equal(images[1], expected)
    with pytest.raises(DataError, match="3072"):
        decode_cifar_rows(np.zeros((2, 3000), dtype=np.uint8))


def test_cifar100_pixels_and_labels(cifar_root: tuple[Path, dict, dict]) -> None:
    root, train, test = cifar_root
    data = load_cifar100(root)
    raw = data.test.raw(3)
    assert raw.dtype == torch.uint8 and raw.shape == (3, 32, 32)
    assert int(raw[1, 5, 7]) == 201
    assert int(raw[2, 31, 0]) == int(test["data"][3, 2 * 1024 + 31 * 32 + 0])
    # Eval transform: normalization only at 32x32.
    image, target, attributes = data.test[3]
    assert image.shape == (3, 32, 32)
    assert image[1, 5, 7].item() == pytest.approx((201 / 255 - CIFAR_MEAN[1]) / CIFAR_STD[1], abs=1e-5)
    assert target == test["fine_labels"][3] and attributes.tolist() == [target]
    # Labels and the class attribute.
    assert data.class_names == CIFAR_NAMES and data.num_classes == 100
    assert data.attribute_names == ["class"] and data.attribute_values == [CIFAR_NAMES]
    targets, attrs = data.labels("test")
    assert targets.tolist() == test["fine_labels"]
    assert torch.equal(attrs[:, 0], targets) and attrs.shape == (5, 1)
    # Train / val split of the train pickle (val = round(0.1 * 10) = 1 image).
    perm = np.random.default_rng(0).permutation(10)
    assert len(data.train) == 9 and len(data.val) == 1
    assert np.array_equal(data.val.raw(0).numpy().reshape(-1), train["data"][perm[0]])
    assert data.labels("val")[0].tolist() == [train["fine_labels"][perm[0]]]
    assert data.labels("train")[0].tolist() == [train["fine_labels"][i] for i in sorted(perm[1:])]
    # The folder itself works as root; a resized train item has the requested size.
    same = load_cifar100(root / "cifar-100-python", image_size=16)
    assert same.train[0][0].shape == (3, 16, 16)
    assert torch.equal(same.test.raw(3), raw)


def test_cifar100_errors(cifar_root: tuple[Path, dict, dict], tmp_path: Path) -> None:
    root, _, _ = cifar_root
    folder = root / "cifar-100-python"
    (folder / "test").unlink()
    with pytest.raises(DataError, match=r"pickle '.*test' is missing"):
        load_cifar100(root)
    write_pickle(folder / "test", {"data": np.zeros((2, 3072), dtype=np.uint8), "fine_labels": [0, 100]})
    with pytest.raises(DataError, match="fine label 100"):
        load_cifar100(root)
    with open(folder / "test", "wb") as handle:
        pickle.dump({"data": os.getcwd}, handle, protocol=2)  # a global other than numpy arrays
    with pytest.raises(DataError, match="refusing"):
        load_cifar100(root)
    with pytest.raises(DataError, match="does not exist"):
        load_cifar100(tmp_path / "missing")


# --------------------------------------------------------------------------------------------------------
# Transforms and the container.


def test_image_transforms_values() -> None:
    constant = torch.full((3, 8, 8), 128, dtype=torch.uint8)
    out = image_transforms("fairface", 16, train=False)(constant)
    assert out.shape == (3, 16, 16) and out.dtype == torch.float32
    for c in range(3):
        assert torch.allclose(
            out[c], torch.tensor((128 / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]), atol=1e-5
        )

    pixels = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
    evaluated = image_transforms("utkface", 16, train=False)(pixels)
    for _ in range(5):
        augmented = image_transforms("utkface", 16, train=True)(pixels)
        assert torch.allclose(augmented, evaluated) or torch.allclose(augmented, evaluated.flip(-1))
    cifar = image_transforms("cifar100", 32, train=False)(pixels.repeat(1, 2, 2))
    assert torch.allclose(
        cifar[0, 0, 0], torch.tensor((int(pixels[0, 0, 0]) / 255 - CIFAR_MEAN[0]) / CIFAR_STD[0])
    )
    assert image_transforms("cifar100", 32, train=True)(pixels.repeat(1, 2, 2)).shape == (3, 32, 32)
    with pytest.raises(DataError, match="mnist"):
        image_transforms("mnist", 32, train=False)
    with pytest.raises(DataError, match="image_size"):
        image_transforms("cifar100", -1, train=False)


def test_labeled_images_and_container(tmp_path: Path) -> None:
    images = np.arange(2 * 3 * 4 * 4, dtype=np.uint8).reshape(2, 3, 4, 4)
    dataset = LabeledImages(images, [1, 0], [[0, 1], [1, 1]])
    image, target, attributes = dataset[1]
    assert image.dtype == torch.uint8 and torch.equal(image, torch.from_numpy(images[1]))
    assert target == 0 and attributes.tolist() == [1, 1]
    data = ImageData(
        train=dataset,
        val=torch.utils.data.Subset(dataset, [1]),
        test=dataset,
        class_names=["a", "b"],
        attribute_names=["x", "y"],
        attribute_values=[["0", "1"], ["0", "1"]],
    )
    assert data.labels("val")[0].tolist() == [0] and data.labels("val")[1].tolist() == [[1, 1]]
    with pytest.raises(DataError, match="unknown split 'dev'"):
        data.labels("dev")
    with pytest.raises(DataError, match="targets"):
        LabeledImages(images, [1, 0, 1], [[0], [1]])
    with pytest.raises(DataError, match="cannot decode image file"):
        decode_image_file(tmp_path / "absent.jpg")
