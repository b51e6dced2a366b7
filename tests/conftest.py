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


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory):
    """A 48/16/16-item demo dataset (32 px images) with a tokenizer trained on it: ``<dir>/data``, ``<dir>/tok``."""
    import json

    from paddle_models.multimodal import demo_data
    from paddle_models.multimodal.tokenizer import train_tokenizer

    d = tmp_path_factory.mktemp("tiny_demo")
    demo_data.make_demo_data(str(d / "data"), n_train=48, n_val=16, n_test=16, image_size=32)
    texts = [json.loads(line)["text"] for line in open(d / "data" / "train.jsonl")]
    train_tokenizer(texts, str(d / "tok"), vocab_size=120)
    return d
