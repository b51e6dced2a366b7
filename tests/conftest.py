import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GLOG_minloglevel", "2")

import fuzz_settings  # noqa: E402,F401  (loads the shared hypothesis profile: tests/fuzz_settings.py)


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


def train_small_multimodal(root: Path, sizes, seed: int, max_steps: int, eval_batch_size: int) -> dict:
    """The demo-size network (configs/multimodal/jsonl_small.yaml) trained ``max_steps`` steps on synthetic demo
    data of ``sizes`` = (train, val, test) items, 40 px images, one thread: ``{"root", "data", "overrides"
    (including Global.checkpoint), "checkpoint", "tokenizer"}``."""
    from paddle_models import get_task, load_config
    from paddle_models.engine.trainer import Trainer
    from paddle_models.multimodal.demo_data import make_demo_data

    data = root / "data"
    make_demo_data(str(data), *sizes, seed=seed, image_size=40)
    overrides = [f"Data.root={data}", f"Global.output_dir={root / 'run'}", f"Global.max_steps={max_steps}",
                 "Global.progress=false", "Global.batch_size=16", f"Global.eval_batch_size={eval_batch_size}",
                 "Global.num_threads=1"]
    config = str(Path(ROOT) / "configs" / "multimodal" / "jsonl_small.yaml")
    cfg = load_config(config, overrides)
    res = Trainer(cfg, get_task("multimodal")(cfg)).fit()
    overrides.append(f"Global.checkpoint={res['best_checkpoint']}")
    return {"root": root, "data": data, "overrides": overrides, "checkpoint": res["best_checkpoint"],
            "tokenizer": root / "run" / "tokenizer"}


@pytest.fixture(scope="session")
def serve_mm_export(tmp_path_factory):
    """A tiny multimodal run (demo data of 48/12/12 items, 40 px images, 2 steps) exported, for the server
    tests: ``{"root", "data", "export"}``."""
    from paddle_models.config import load_config
    from paddle_models.engine.export import export_model
    from paddle_models.engine.trainer import Trainer
    from paddle_models.multimodal.demo_data import make_demo_data
    from paddle_models.registry import get_task

    root = tmp_path_factory.mktemp("serve_mm")
    data = root / "data"
    make_demo_data(str(data), 48, 12, 12, seed=7, image_size=40)
    config = str(ROOT / "configs" / "multimodal" / "jsonl_small.yaml")
    over = [f"Data.root={data}", f"Global.output_dir={root / 'run'}", "Global.max_steps=2", "Global.progress=false",
            "Global.batch_size=16", "Global.eval_batch_size=16", "Global.num_threads=1"]
    cfg = load_config(config, over)
    res = Trainer(cfg, get_task("multimodal")(cfg)).fit()
    cfg = load_config(config, over + [f"Global.checkpoint={res['best_checkpoint']}"])
    export_model(cfg, str(root / "export"), onnx=False, threads=1, check_onednn=False)
    return {"root": root, "data": data, "export": root / "export"}
