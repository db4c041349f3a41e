import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# CI's disk can be small (the venv alone is 5.5 GB): a test may leave at most this much in its
# tmp_path. A FairFace pipeline test with the full ResNet-34 once wrote 5 GB and filled it.
TMP_PATH_LIMIT_BYTES = 200 * 2**20


@pytest.fixture(autouse=True)
def _tmp_path_stays_small(request: pytest.FixtureRequest):
    if "tmp_path" not in request.fixturenames:
        yield
        return
    root = request.getfixturevalue("tmp_path")
    yield
    used = sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())
    assert used <= TMP_PATH_LIMIT_BYTES, (
        f"{request.node.nodeid} left {used / 2**20:.0f} MiB in tmp_path (limit "
        f"{TMP_PATH_LIMIT_BYTES / 2**20:.0f} MiB); use a smaller model or fewer checkpoints"
    )
