import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GLOG_minloglevel", "2")


def shared_data_dir() -> Path:
    env = os.environ.get("PADDLE_MODELS_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


@pytest.fixture
def shared_data():
    d = shared_data_dir()
    if not d.is_dir():
        pytest.skip(f"shared sample data not found at {d} (set PADDLE_MODELS_DATA)")
    return d
