"""SIGTERM and Ctrl-C (SIGINT) in tools/eval.py, infer.py and export.py while they work: one
``interrupted by SIG...`` line (no traceback, no Paddle 'FatalError'), exit code 143 / 130, and no partial file
in place of the good one that was there (nor a temporary file left beside it). Training: test_kill_resume.py."""
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "multimodal" / "jsonl_small.yaml")
ENV = {**os.environ, "GLOG_minloglevel": "2", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 2-step multimodal run on demo data with 300-item validation and test splits, and its export."""
    from conftest import train_small_multimodal

    from paddle_models.config import load_config
    from paddle_models.engine.export import export_model

    root = tmp_path_factory.mktemp("signals")
    res = train_small_multimodal(root, (32, 300, 300), seed=5, max_steps=2, eval_batch_size=64)
    cfg = load_config(CONFIG, res["overrides"])
    export_model(cfg, str(root / "export"), onnx=False, threads=1, check_onednn=False)
    return {**res, "export": root / "export"}


def interrupt_when(cmd, ready, sig, timeout=300):
    """Run ``cmd``; once ``ready(stderr so far)`` holds, send ``sig``; (return code, stderr)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
    err = []
    reader = threading.Thread(target=lambda: err.extend(iter(lambda: proc.stderr.read(1), "")), daemon=True)
    reader.start()
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not ready("".join(err)):
        time.sleep(0.05)
    assert proc.poll() is None, "the tool ended before it could be interrupted:\n" + "".join(err)[-3000:]
    proc.send_signal(sig)
    proc.wait(timeout)
    reader.join(10)
    return proc.returncode, "".join(err)


def assert_one_line_stop(code, err, sig):
    assert code == 128 + sig, err[-3000:]
    assert f"interrupted by {signal.Signals(sig).name}" in err, err[-3000:]
    assert "Traceback" not in err and "FatalError" not in err, err[-3000:]


def leftovers(folder: Path) -> list:
    return [str(p) for p in folder.rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_infer_interrupted_keeps_the_previous_predictions(run, tmp_path, sig):
    out = tmp_path / "pred.csv"
    out.write_text("id,label\nold,0\n")
    cmd = [sys.executable, str(ROOT / "tools" / "infer.py"), "--model-dir", str(run["export"]), "--input",
           str(run["data"] / "test.jsonl"), "--out", str(out), "--batch-size", "1", "--threads", "1",
           "--onednn", "off"]
    code, err = interrupt_when(cmd, lambda e: "infer:" in e, sig)
    assert_one_line_stop(code, err, sig)
    assert out.read_text() == "id,label\nold,0\n" and not (tmp_path / "pred.jsonl").exists()
    assert leftovers(tmp_path) == []


def test_export_sigterm_keeps_the_previous_export(run, tmp_path):
    from paddle_models.engine.artifact import read_export_meta, version_hash

    out = tmp_path / "export"
    shutil.copytree(run["export"], out)
    before = version_hash(str(out))
    cmd = [sys.executable, str(ROOT / "tools" / "export.py"), "-c", CONFIG,
           *sum([["-o", o] for o in run["overrides"]], []), "--out", str(out), "--threads", "1"]
    code, err = interrupt_when(cmd, lambda e: (tmp_path / "export.tmp").is_dir(), signal.SIGTERM)
    assert_one_line_stop(code, err, signal.SIGTERM)
    read_export_meta(str(out))  # every file as recorded
    assert version_hash(str(out)) == before
    assert not (tmp_path / "export.tmp").exists() and not (tmp_path / "export.prev").exists()


def test_eval_sigterm_keeps_the_previous_artifacts_and_releases_the_lock(run, tmp_path):
    out = tmp_path / "evalrun"
    (out / "eval_val").mkdir(parents=True)
    (out / "eval_val" / "predictions.csv").write_text("id,label\nold,0\n")
    overrides = [o for o in run["overrides"] if not o.startswith("Global.output_dir=")]
    cmd = [sys.executable, str(ROOT / "tools" / "eval.py"), "-c", CONFIG, *sum([["-o", o] for o in overrides], []),
           "-o", f"Global.output_dir={out}", "-o", f"Data.tokenizer={run['tokenizer']}", "-o", "Global.progress=true",
           "-o", "Global.eval_batch_size=1", "-o", "Global.eval_engine=dygraph", "--split", "val"]
    code, err = interrupt_when(cmd, lambda e: "eval val:" in e, signal.SIGTERM)
    assert_one_line_stop(code, err, signal.SIGTERM)
    assert (out / "eval_val" / "predictions.csv").read_text() == "id,label\nold,0\n"
    assert leftovers(out) == [] and not (out / ".lock").exists()
    done = subprocess.run(cmd[:-2] + ["-o", "Global.progress=false", "--split", "val", "--json"], capture_output=True,
                          text=True, env=ENV, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["samples"] == 300
