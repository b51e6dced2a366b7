"""Checkpoint averaging against a numpy average (files and folders, float and integer tensors, bad inputs),
and the Trainer keeping the last N step checkpoints (``Global.keep_last_checkpoints``) on the copy toy task."""
import json
import os

import numpy as np
import pytest
from conftest import ROOT
from safetensors.numpy import load_file, save_file

from paddle_models import get_task, load_config
from paddle_models.engine.checkpoint import CheckpointError, save_checkpoint, verify_checkpoint
from paddle_models.engine.checkpoint_average import (
    average_checkpoints,
    last_step_checkpoints,
    prune_step_checkpoints,
    save_step_checkpoint,
    step_checkpoints,
)
from paddle_models.engine.trainer import Trainer


def _states(n, seed=0):
    r = np.random.RandomState(seed)
    count = np.arange(6, dtype="int64")  # an integer buffer: equal everywhere, copied
    return [{"w": r.randn(3, 4).astype("float32"), "b": r.randn(4).astype("float32"), "count": count}
            for _ in range(n)]


def test_average_of_files_equals_the_numpy_mean(tmp_path):
    states = _states(3)
    paths = []
    for i, s in enumerate(states):
        paths.append(str(tmp_path / f"m{i}.safetensors"))
        save_file(s, paths[-1])
    out = tmp_path / "avg.safetensors"
    res = average_checkpoints(paths, str(out))
    got = load_file(str(out))
    assert res["count"] == 3 and res["tensors"] == 3 and sorted(got) == ["b", "count", "w"]
    for k in ("w", "b"):
        want = np.mean([s[k].astype("float64") for s in states], axis=0).astype("float32")
        assert got[k].dtype == np.float32 and np.array_equal(got[k], want)
    assert got["count"].dtype == np.int64 and np.array_equal(got["count"], states[0]["count"])


def test_average_into_a_checkpoint_folder_keeps_the_vocabulary_fingerprint(tmp_path):
    states = _states(2, seed=1)
    fp = {"kind": "SentencePiece model", "path": "/x/spm.model", "sha256": "ab" * 32}
    for i, s in enumerate(states):
        save_checkpoint(str(tmp_path / f"step_{i + 1}"), s, trainer_state={"step": i + 1, "preprocessing": fp})
    out = tmp_path / "avg"
    res = average_checkpoints([str(tmp_path / "step_1"), str(tmp_path / "step_2")], str(out))
    verify_checkpoint(str(out))
    got = load_file(str(out / "model.safetensors"))
    assert np.allclose(got["w"], (states[0]["w"] + states[1]["w"]) / 2, rtol=0, atol=1e-7)
    state = json.load(open(out / "trainer.json"))
    assert state["step"] == 2 and state["averaged_steps"] == [1, 2] == res["steps"] and state["preprocessing"] == fp


def test_bad_inputs_are_named(tmp_path):
    a, b = _states(2)
    save_file(a, str(tmp_path / "a.safetensors"))
    save_file({**b, "w": b["w"][:2]}, str(tmp_path / "short.safetensors"))
    save_file({**b, "count": b["count"] + 1}, str(tmp_path / "count.safetensors"))
    save_file({"w": b["w"]}, str(tmp_path / "fewer.safetensors"))
    with pytest.raises(CheckpointError, match=r"short.safetensors: tensor 'w' is float32\[2, 4\]"):
        average_checkpoints([str(tmp_path / "a.safetensors"), str(tmp_path / "short.safetensors")], str(tmp_path / "o"))
    with pytest.raises(CheckpointError, match=r"count.safetensors: tensor 'count' \(int64\) differs"):
        average_checkpoints([str(tmp_path / "a.safetensors"), str(tmp_path / "count.safetensors")], str(tmp_path / "o"))
    with pytest.raises(CheckpointError, match=r"fewer.safetensors: tensors differ .*missing \['b', 'count'\]"):
        average_checkpoints([str(tmp_path / "a.safetensors"), str(tmp_path / "fewer.safetensors")], str(tmp_path / "o"))
    with pytest.raises(CheckpointError, match="nothing.safetensors: checkpoint not found"):
        average_checkpoints([str(tmp_path / "nothing.safetensors")], str(tmp_path / "o"))
    for i, sha in enumerate(("ab" * 32, "cd" * 32)):
        fp = {"kind": "SentencePiece model", "path": f"/v{i}/spm.model", "sha256": sha}
        save_checkpoint(str(tmp_path / f"v{i}"), a, trainer_state={"step": 1, "preprocessing": fp})
    with pytest.raises(CheckpointError, match="v1: trained with the SentencePiece model /v1/spm.model"):
        average_checkpoints([str(tmp_path / "v0"), str(tmp_path / "v1")], str(tmp_path / "o"))
    assert not (tmp_path / "o").exists()


def test_step_checkpoints_are_pruned_to_the_newest_and_to_the_current_step(tmp_path):
    state, ckpt = _states(1)[0], tmp_path / "run" / "checkpoints"
    for step in (1, 2, 3, 4, 5):
        save_step_checkpoint(str(ckpt), state, {"step": step}, keep=3)
    assert [s for s, _ in step_checkpoints(str(ckpt))] == [3, 4, 5]
    save_step_checkpoint(str(ckpt), state, {"step": 4}, keep=3)  # a resume from step 3: step 5 is stale
    assert [s for s, _ in step_checkpoints(str(ckpt))] == [3, 4]
    os.makedirs(ckpt / "step_9.tmp")  # an unfinished write is neither listed nor removed
    assert prune_step_checkpoints(str(ckpt), keep=1) == [str(ckpt / "step_3")]
    assert (ckpt / "step_9.tmp").is_dir()
    assert last_step_checkpoints(str(tmp_path / "run"), 1) == [str(ckpt / "step_4")]
    with pytest.raises(CheckpointError, match="1 step checkpoints, fewer than the 2 asked for"):
        last_step_checkpoints(str(tmp_path / "run"), 2)


def test_trainer_keeps_the_last_n_step_checkpoints(tmp_path):
    """The toy task, 4 steps an epoch, 3 epochs: ``last`` is written at steps 2, 6, 10 (save_every_steps) and
    4, 8, 12 (evaluations); the newest three copies are kept, each equal to ``last`` when it was written."""
    cfg = load_config(str(ROOT / "configs" / "transformer" / "copy_toy.yaml"), [
        f"Global.output_dir={tmp_path / 'run'}", "Global.epochs=3", "Global.progress=false",
        "Data.toy_train_size=256", "Data.toy_val_size=16", "Global.save_every_steps=2",
        "Global.keep_last_checkpoints=3"])
    result = Trainer(cfg, get_task("transformer")(cfg)).fit()
    ckpt = tmp_path / "run" / "checkpoints"
    found = step_checkpoints(str(ckpt))
    assert result["steps"] == 12 and [s for s, _ in found] == [8, 10, 12]
    for step, path in found:
        verify_checkpoint(path)
        assert json.load(open(os.path.join(path, "trainer.json")))["step"] == step
        assert not os.path.exists(os.path.join(path, "optimizer_0.safetensors"))
    last, newest = load_file(str(ckpt / "last" / "model.safetensors")), load_file(found[-1][1] + "/model.safetensors")
    assert all(np.array_equal(last[k], newest[k]) for k in last)
    assert last_step_checkpoints(str(tmp_path / "run"), 2) == [p for _, p in found[1:]]
