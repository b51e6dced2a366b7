"""SIGKILL in the middle of an epoch, then --resume: same metrics and weights as an uninterrupted run."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import paddle
import pytest
from conftest import ROOT
from safetensors.numpy import load_file

CFG = str(ROOT / "configs" / "multimodal" / "jsonl_small.yaml")
TRAIN = str(ROOT / "tools" / "train.py")


@pytest.fixture
def demo(tiny_demo):
    return tiny_demo


def cmd(demo, out, *extra):
    return [sys.executable, TRAIN, "-c", CFG,
            "-o", f"Data.root={demo / 'data'}", "-o", f"Data.tokenizer={demo / 'tok'}",
            "-o", f"Global.output_dir={out}", "-o", "Global.epochs=2", "-o", "Global.batch_size=4",
            "-o", "Global.save_every_steps=1", "-o", "Global.progress=false", *extra]


def last_json(text):
    return json.loads([line for line in text.strip().splitlines() if line.startswith("{")][-1])


def test_sigkill_mid_epoch_then_resume(demo, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOG_minloglevel="2")
    ref = subprocess.run(cmd(demo, tmp_path / "ref", "--json"), capture_output=True, text=True, timeout=600, env=env)
    assert ref.returncode == 0, ref.stderr[-3000:]
    out = tmp_path / "run"
    proc = subprocess.Popen(cmd(demo, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    state_file = out / "checkpoints" / "last" / "trainer.json"
    deadline = time.time() + 600
    killed_at = None
    while time.time() < deadline and proc.poll() is None:
        try:
            st = json.loads(state_file.read_text())
        except (OSError, ValueError):
            st = None
        if st and st["epoch"] == 1 and st["batch_in_epoch"] >= 3:  # epoch 2 (12 batches an epoch) under way
            os.kill(proc.pid, signal.SIGKILL)
            killed_at = st["step"]
            break
        time.sleep(0.05)
    proc.wait(timeout=60)
    assert killed_at is not None and proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    res = subprocess.run(cmd(demo, out, "--resume", "--json"), capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resumed from" in res.stderr
    a, b = last_json(ref.stdout), last_json(res.stdout)
    assert a["steps"] == b["steps"] == 24
    assert b["macro_f1"] == pytest.approx(a["macro_f1"], abs=0) and b["loss"] == pytest.approx(a["loss"], rel=1e-6)
    wa = load_file(str(tmp_path / "ref" / "checkpoints" / "last" / "model.safetensors"))
    wb = load_file(str(out / "checkpoints" / "last" / "model.safetensors"))
    for k in wa:
        np.testing.assert_allclose(wb[k], wa[k], rtol=1e-6, atol=1e-7, err_msg=k)


def test_interrupted_save_falls_back_to_previous(tmp_path):
    """A kill between the two renames of a save leaves only <name>.prev: resume uses it."""
    from paddle_models.engine.checkpoint import resume_path, save_checkpoint

    lin = paddle.nn.Linear(2, 2)
    p = str(tmp_path / "last")
    save_checkpoint(p, lin, trainer_state={"step": 1})
    os.replace(p, p + ".prev")  # the state right after the first rename
    assert resume_path(p) == p + ".prev"
    assert resume_path(str(tmp_path / "none")) is None


def _stop_after_first_checkpoint(demo, tmp_path, sig):
    """Start the demo training, send ``sig`` once epoch 1's checkpoint is written; (out, env, returncode,
    stderr, the saved trainer.json path)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOG_minloglevel="2")
    out = tmp_path / "run"
    proc = subprocess.Popen(cmd(demo, out, "-o", "Global.save_every_steps=0"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env)
    state_file = out / "checkpoints" / "last" / "trainer.json"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and not state_file.exists():  # after epoch 1's eval
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be stopped"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    return out, env, proc.returncode, err, state_file


def _resume_to_the_end(demo, out, env):
    res = subprocess.run(cmd(demo, out, "--resume", "--json"), capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert last_json(res.stdout)["steps"] == 24


def test_sigint_saves_last_and_says_how_to_resume(demo, tmp_path):
    """Ctrl-C: the run stops at the next optimizer step, writes checkpoints/last there, prints where it
    stopped and how to resume (no traceback) and exits 130; --resume then finishes the run."""
    out, env, returncode, err, state_file = _stop_after_first_checkpoint(demo, tmp_path, signal.SIGINT)
    assert returncode == 130, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    m = re.search(r"interrupted at step (\d+) \(checkpoint \S+last\); resume with --resume", err)
    assert m, err[-3000:]
    step = int(m.group(1))
    assert json.loads(state_file.read_text())["step"] == step and 12 <= step < 24
    _resume_to_the_end(demo, out, env)
    steps = [json.loads(line)["step"] for line in open(out / "metrics.jsonl") if '"train"' in line]
    assert steps == sorted(set(steps)), steps  # no step logged twice


def test_sigterm_saves_last_and_resumes(demo, tmp_path):
    """SIGTERM (a scheduler stopping the job) ends like Ctrl-C: checkpoints/last at the next optimizer step,
    one line saying where to resume, exit code 143 (it used to be killed by the signal, or by paddlenlp's reset
    of its handler, without saving); --resume then finishes the run."""
    out, env, returncode, err, state_file = _stop_after_first_checkpoint(demo, tmp_path, signal.SIGTERM)
    assert returncode == 143, err[-3000:]
    assert "Traceback" not in err and "FatalError" not in err, err[-3000:]
    m = re.search(r"interrupted by SIGTERM: interrupted at step (\d+) \(checkpoint \S+last\); resume with --resume",
                  err)
    assert m, err[-3000:]
    assert json.loads(state_file.read_text())["step"] == int(m.group(1))
    _resume_to_the_end(demo, out, env)


# A training whose third checkpoint save SIGKILLs its own process half-way through writing the weights file.
_DIE_IN_THIRD_SAVE = r"""
import os, signal, sys
sys.path.insert(0, sys.argv[1])
from paddle_models.engine import checkpoint
real, calls = checkpoint._save_arrays, {"n": 0}
def dying_save(arrays, path):
    if path.endswith("model.safetensors"):
        calls["n"] += 1
        if calls["n"] == 3:
            real(arrays, path)
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 2)
            os.kill(os.getpid(), signal.SIGKILL)
    real(arrays, path)
checkpoint._save_arrays = dying_save
sys.argv = [sys.argv[2]] + sys.argv[3:]
from paddle_models.commands import run_command
run_command("train")
"""


def test_sigkill_during_a_checkpoint_write_keeps_the_last_good_one(demo, tmp_path):
    """kill -9 while checkpoints/last is being written (its weights half on disk in last.tmp): the previous
    last is intact and --resume continues from it to the end."""
    from paddle_models.engine.checkpoint import verify_checkpoint

    env = dict(os.environ, OMP_NUM_THREADS="1", GLOG_minloglevel="2")
    out = tmp_path / "run"
    argv = cmd(demo, out, "-o", "Global.eval_every_steps=0")
    proc = subprocess.run([sys.executable, "-c", _DIE_IN_THIRD_SAVE, str(ROOT), *argv[1:]], capture_output=True,
                          text=True, timeout=600, env=env)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    last = out / "checkpoints" / "last"
    assert (out / "checkpoints" / "last.tmp").is_dir()  # the write that was cut off
    verify_checkpoint(str(last))
    assert json.loads((last / "trainer.json").read_text())["step"] == 2  # the second save (save_every_steps=1)
    res = subprocess.run(cmd(demo, out, "--resume", "--json"), capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resumed from" in res.stderr and f"{last}" in res.stderr
    assert last_json(res.stdout)["steps"] == 24
    assert not (out / "checkpoints" / "last.tmp").exists()
    verify_checkpoint(str(last))


def test_two_trainings_into_one_output_folder(demo, tmp_path):
    """The second of two runs started on one Global.output_dir stops at once, naming the folder and the
    holder; the first finishes untouched; once it is done the folder is free again."""
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOG_minloglevel="2")
    out = tmp_path / "run"
    first = subprocess.Popen(cmd(demo, out, "--json"), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 300
    while time.time() < deadline and first.poll() is None and not (out / ".lock").exists():
        time.sleep(0.05)
    second = subprocess.run(cmd(demo, out, "-o", "Global.epochs=1"), capture_output=True, text=True, timeout=600,
                            env=env)
    out_first, err_first = first.communicate(timeout=600)
    assert first.returncode == 0, err_first[-3000:]
    assert second.returncode == 2, second.stderr[-3000:]
    assert f"error: {out}: another run is writing this output folder (training: pid {first.pid} " in second.stderr
    assert last_json(out_first)["steps"] == 24 and not (out / ".lock").exists()
    again = subprocess.run(cmd(demo, out, "--resume"), capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
