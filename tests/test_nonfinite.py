"""Numbers that are not finite: refused in configs (files and ``-o``), never selected as the best checkpoint,
and training stops with a clear error once the weights are no longer finite. Also ``Global.output_dir``
naming a file."""
import json
import logging
import math
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT
from test_trainer import cfg_for, run, weights

from paddle_models import get_task, load_config
from paddle_models.config import ConfigError
from paddle_models.engine.trainer import NonFiniteWeightsError

CFG = str(ROOT / "configs" / "multimodal" / "jsonl_small.yaml")


@pytest.fixture
def demo(tiny_demo):
    return tiny_demo


@pytest.mark.parametrize("override,key", [
    ("Optimizer.lr=.inf", "Optimizer.lr"), ("Optimizer.lr=.nan", "Optimizer.lr"),
    ("Optimizer.weight_decay=-.inf", "Optimizer.weight_decay"), ("Optimizer.beta1=.nan", "Optimizer.beta1"),
    ("Optimizer.grad_clip=.inf", "Optimizer.grad_clip"), ("Data.image_mean=[0.5, .inf, 0.5]", "Data.image_mean[1]"),
])
def test_a_float_that_is_not_finite_is_refused_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=f"^{re.escape(f'-o {override}: {key}: must be a finite number, got')}"):
        load_config(CFG, [override])


def test_a_config_file_value_that_is_not_finite_names_the_file(tmp_path):
    text = (ROOT / "configs" / "multimodal" / "jsonl_small.yaml").read_text()
    assert "lr: 0.002" in text
    path = tmp_path / "c.yaml"
    path.write_text(text.replace("lr: 0.002", "lr: .inf"))
    with pytest.raises(ConfigError, match=rf"^{path}: Optimizer.lr: must be a finite number, got inf"):
        load_config(str(path))


def test_train_tool_refuses_lr_inf_in_one_line(tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "train.py"), "-c", CFG, "-o", "Optimizer.lr=.inf",
                          "-o", f"Global.output_dir={tmp_path / 'out'}"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1] == ("error: -o Optimizer.lr=.inf: Optimizer.lr: must be a finite "
                                                   "number, got inf")
    assert not (tmp_path / "out").exists()


def test_weights_that_become_infinite_stop_training_before_anything_is_saved(demo, tmp_path):
    """Optimizer.lr=1e39 is finite as a config value and infinite in the float32 optimizer: after the first
    step the weights are not finite. That run used to exit 0 with a NaN eval loss and save it as the best
    checkpoint; now it stops naming the parameter, and no checkpoint holds those weights."""
    cfg = cfg_for(demo, tmp_path / "r", "Optimizer.lr=1e39", "Global.max_steps=1", "Global.save_every_steps=0")
    with pytest.raises(NonFiniteWeightsError, match=r"non-finite weights \(\S+ holds NaN or infinity\) after step 1: "
                                                    r"training stopped .* the last good checkpoint is kept at \(none "
                                                    r"written yet\)\. Lower Optimizer.lr \(now 1e\+39\)"):
        run(cfg)
    assert not (tmp_path / "r" / "checkpoints" / "best").exists()
    assert not (tmp_path / "r" / "checkpoints" / "last").exists()


def test_weights_guard_keeps_the_last_good_checkpoint(demo, tmp_path):
    """Four good steps (checkpoints/last at step 4), then a weight turns infinite (as a diverging update
    leaves it); the losses that follow are skipped (Global.on_nonfinite=skip), and at the epoch's evaluation
    the run stops naming the last good checkpoint, which holds finite weights."""
    cfg = cfg_for(demo, tmp_path / "r", "Global.save_every_steps=2", "Global.on_nonfinite=skip")
    task = get_task("multimodal")(cfg)
    real, calls = task.forward_loss, {"n": 0}

    def exploding(model, batch):
        calls["n"] += 1
        if calls["n"] == 5:
            first = model.parameters()[0]
            first.set_value(np.full(first.shape, np.inf, dtype="float32"))
        return real(model, batch)

    task.forward_loss = exploding
    with pytest.raises(NonFiniteWeightsError, match=r"after step 4: .* last good checkpoint is kept at \S+last"):
        run(cfg, task)
    last = tmp_path / "r" / "checkpoints" / "last"
    assert json.loads((last / "trainer.json").read_text())["step"] == 4
    assert all(np.isfinite(v).all() for v in weights(last).values())


def test_an_evaluation_with_a_non_finite_metric_is_never_the_best(demo, tmp_path, caplog):
    """Epoch 1's evaluation has the better macro_f1 but a NaN loss: epoch 2's (finite) is the best checkpoint."""
    cfg = cfg_for(demo, tmp_path / "r")
    task = get_task("multimodal")(cfg)
    real, evals = task.compute_metrics, {"n": 0}

    def metrics(outputs):
        evals["n"] += 1
        out = real(outputs)
        return {**out, "macro_f1": 0.99, "loss": float("nan")} if evals["n"] == 1 else {**out, "macro_f1": 0.5}

    task.compute_metrics = metrics
    with caplog.at_level(logging.WARNING, logger="paddle_models"):
        res = run(cfg, task)
    assert res["best_step"] == res["steps"] == 12 and res["macro_f1"] == 0.5 and math.isfinite(res["loss"])
    assert "evaluation metrics are not finite (loss=nan): not a candidate for the best checkpoint" in caplog.text


def test_output_dir_that_is_a_file_names_the_key(demo, tmp_path):
    (tmp_path / "f").write_text("not a folder")
    for out, words in ((tmp_path / "f", "exists and is not a folder"), (tmp_path / "f" / "sub", "is a file")):
        cfg = cfg_for(demo, out)
        with pytest.raises(ConfigError, match=rf"^Global.output_dir: {out} .*{words}"):
            run(cfg)
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "train.py"), "-c", CFG, "-o",
                          f"Global.output_dir={tmp_path / 'f'}"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "error: Global.output_dir:" in res.stderr and "Errno" not in res.stderr
