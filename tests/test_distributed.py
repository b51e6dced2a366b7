"""Data parallel on CPU (gloo) with paddle.distributed.launch: 2 ranks == 1 process with the same global batch."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT
from safetensors.numpy import load_file

CFG = str(ROOT / "configs" / "multimodal" / "jsonl_small.yaml")


@pytest.fixture
def demo(tiny_demo):
    return tiny_demo


def overrides(demo, out, batch):
    return ["-o", f"Data.root={demo / 'data'}", "-o", f"Data.tokenizer={demo / 'tok'}",
            "-o", f"Global.output_dir={out}",
            "-o", "Global.epochs=2", "-o", f"Global.batch_size={batch}", "-o", "Global.progress=false",
            "-o", "Optimizer.name=SGD", "-o", "Optimizer.lr=0.05", "-o", "Optimizer.grad_clip=1.0"]


def last_json(text):
    return json.loads([line for line in text.strip().splitlines() if line.startswith("{")][-1])


def test_two_ranks_match_one_process(demo, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOG_minloglevel="2")
    train = str(ROOT / "tools" / "train.py")
    single = subprocess.run([sys.executable, train, "-c", CFG, *overrides(demo, tmp_path / "one", 8), "--json"],
                            capture_output=True, text=True, timeout=600, env=env)
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = subprocess.run([sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2",
                          "--log_dir", str(tmp_path / "logs"), train, "-c", CFG,
                          *overrides(demo, tmp_path / "two", 4), "--json"],
                         capture_output=True, text=True, timeout=600, env=env)
    logs = "".join(open(tmp_path / "logs" / f).read() for f in sorted(os.listdir(tmp_path / "logs")))
    assert ddp.returncode == 0, logs[-4000:]
    r1 = last_json(single.stdout)
    r2 = last_json(open(tmp_path / "logs" / "workerlog.0").read())
    assert r2["ranks_identical"] is True and len(r2["rank_weight_digests"]) == 2
    assert r1["steps"] == r2["steps"] == 12
    assert r2["macro_f1"] == pytest.approx(r1["macro_f1"], abs=1e-9)
    # only rank 0 wrote files
    assert (tmp_path / "two" / "checkpoints" / "last").is_dir()
    wa = load_file(str(tmp_path / "one" / "checkpoints" / "last" / "model.safetensors"))
    wb = load_file(str(tmp_path / "two" / "checkpoints" / "last" / "model.safetensors"))
    for k in wa:
        np.testing.assert_allclose(wb[k], wa[k], rtol=1e-4, atol=1e-6, err_msg=k)


@pytest.mark.parametrize("config, extra", [
    ("configs/rec/deepfm_criteo.yaml", ["-o", "Global.epochs=1"]),
    ("configs/transformer/copy_toy.yaml", ["-o", "Global.max_steps=6", "-o", "Global.eval_every_steps=0"]),
])
def test_other_families_train_data_parallel(tmp_path, config, extra):
    if "criteo" in config and not (ROOT.parent / "shared" / "data" / "criteo_samples").is_dir():
        pytest.skip("../shared/data/criteo_samples not found (the Criteo sample the config reads)")
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOG_minloglevel="2")
    p = subprocess.run([sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2",
                        "--log_dir", str(tmp_path / "logs"), str(ROOT / "tools" / "train.py"), "-c", str(ROOT / config),
                        "-o", f"Global.output_dir={tmp_path / 'out'}", "-o", "Global.progress=false", *extra, "--json"],
                       capture_output=True, text=True, timeout=600, env=env, cwd=str(ROOT))
    log0 = open(tmp_path / "logs" / "workerlog.0").read()
    assert p.returncode == 0, log0[-3000:]
    res = last_json(log0)
    assert res["ranks_identical"] is True and len(res["rank_weight_digests"]) == 2
    assert os.path.isfile(res["best_checkpoint"])
