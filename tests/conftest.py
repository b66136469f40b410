"""Shared test set-up: one torch thread, offline hub, and the path of the shared real pairs."""
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("ALLINONE_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_root() -> Path:
    """Root of the shared real IR/VIS pairs (../shared/data or $ALLINONE_DATA); skips when absent."""
    if not (DATA / "eval").is_dir():
        pytest.skip(f"shared data not found at {DATA} (set ALLINONE_DATA)")
    return DATA


@pytest.fixture(scope="session")
def eval_subset(data_root: Path):
    """Folder of one eval subset by name, e.g. eval_subset('msrs_test')."""
    def get(name: str) -> Path:
        folder = data_root / "eval" / name
        if not folder.is_dir():
            pytest.skip(f"{folder} not found")
        return folder
    return get
