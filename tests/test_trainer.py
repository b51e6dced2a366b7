"""The engine on the small multimodal model: crash + resume equals an uninterrupted run, accumulation,
checkpoint verification, the non-finite-loss guard, eval artifacts."""
import json
import os

import numpy as np
import pytest
from conftest import ROOT
from safetensors.numpy import load_file

from paddle_models import get_task, load_config
from paddle_models.engine.checkpoint import CheckpointError, load_model_weights, verify_checkpoint
from paddle_models.engine.loader import epoch_indices
from paddle_models.engine.trainer import NonFiniteLossError, Trainer

CFG = str(ROOT / "configs" / "multimodal" / "jsonl_small.yaml")


@pytest.fixture
def demo(tiny_demo):
    return tiny_demo


def cfg_for(demo, out, *extra):
    return load_config(CFG, [f"Data.root={demo / 'data'}", f"Data.tokenizer={demo / 'tok'}",
                             f"Global.output_dir={out}", "Global.epochs=2", "Global.batch_size=8",
                             "Global.progress=false", "Global.log_every_steps=1", *extra])


def weights(path):
    return load_file(os.path.join(path, "model.safetensors"))


def run(cfg, task=None):
    task = task or get_task("multimodal")(cfg)
    return Trainer(cfg, task).fit()


class Crash(RuntimeError):
    pass


def test_crash_then_resume_equals_uninterrupted_run(demo, tmp_path):
    ref = run(cfg_for(demo, tmp_path / "a", "Global.save_every_steps=2"))
    cfg = cfg_for(demo, tmp_path / "b", "Global.save_every_steps=2")
    task = get_task("multimodal")(cfg)
    calls = {"n": 0}
    real = task.forward_loss

    def crashing(model, batch):
        calls["n"] += 1
        if calls["n"] == 10:  # batch 4 of epoch 2 (6 batches an epoch): last checkpoint at step 8
            raise Crash("simulated crash")
        return real(model, batch)

    task.forward_loss = crashing
    with pytest.raises(Crash):
        run(cfg, task)
    state = json.load(open(tmp_path / "b" / "checkpoints" / "last" / "trainer.json"))
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (8, 1, 2)
    resumed = run(cfg_for(demo, tmp_path / "b", "Global.save_every_steps=2", "Global.resume=true"))
    assert resumed["steps"] == ref["steps"] == 12
    assert resumed["macro_f1"] == pytest.approx(ref["macro_f1"], abs=0)
    assert resumed["loss"] == pytest.approx(ref["loss"], rel=1e-6)
    wa, wb = weights(tmp_path / "a" / "checkpoints" / "last"), weights(tmp_path / "b" / "checkpoints" / "last")
    for k in wa:
        np.testing.assert_allclose(wb[k], wa[k], rtol=1e-6, atol=1e-7, err_msg=k)
    # the log of the resumed run continues, it does not restart
    steps = [json.loads(line)["step"] for line in open(tmp_path / "b" / "metrics.jsonl") if '"train"' in line]
    assert steps[-1] == 12 and 9 in steps


def test_gradient_accumulation_matches_the_big_batch(demo, tmp_path):
    # SGD: the update is linear in the gradient (Adam would amplify rounding where a gradient is ~0)
    a = run(cfg_for(demo, tmp_path / "a", "Optimizer.name=SGD", "Optimizer.lr=0.05", "Optimizer.grad_clip=1.0"))
    b = run(cfg_for(demo, tmp_path / "b", "Optimizer.name=SGD", "Optimizer.lr=0.05", "Optimizer.grad_clip=1.0",
                    "Global.batch_size=4", "Global.accum_steps=2"))
    assert a["steps"] == b["steps"]
    wa, wb = weights(tmp_path / "a" / "checkpoints" / "last"), weights(tmp_path / "b" / "checkpoints" / "last")
    for k in wa:
        np.testing.assert_allclose(wb[k], wa[k], rtol=1e-4, atol=1e-6, err_msg=k)


def test_outputs_of_a_run(demo, tmp_path):
    res = run(cfg_for(demo, tmp_path / "r"))
    out = tmp_path / "r"
    for f in ("metrics.jsonl", "curves.png", "config.yaml", "result.json"):
        assert (out / f).exists(), f
    assert res["best_checkpoint"].endswith("checkpoints/best/model.safetensors")
    assert os.path.isfile(res["best_checkpoint"])
    recs = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert {r["type"] for r in recs} == {"train", "eval"}
    assert all("samples_per_s" in r for r in recs if r["type"] == "train")
    # eval with the best checkpoint reproduces the best validation metrics and writes artifacts
    cfg = cfg_for(demo, tmp_path / "e", f"Global.checkpoint={res['best_checkpoint']}")
    ev = Trainer(cfg, get_task("multimodal")(cfg)).evaluate("val")
    assert ev["macro_f1"] == pytest.approx(res["macro_f1"], abs=1e-9)
    for k in ("predictions_csv", "confusion_matrix_png", "confusion_matrix_txt"):
        assert os.path.isfile(ev[k])
    lines = open(ev["predictions_csv"]).read().splitlines()
    assert lines[0] == "id,label" and len(lines) == 17


def test_corrupted_checkpoint_is_detected(demo, tmp_path):
    run(cfg_for(demo, tmp_path / "r", "Global.epochs=1"))
    last = tmp_path / "r" / "checkpoints" / "last"
    verify_checkpoint(str(last))
    p = last / "model.safetensors"
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        verify_checkpoint(str(last))
    with pytest.raises(CheckpointError, match="truncated"):
        run(cfg_for(demo, tmp_path / "r", "Global.resume=true"))
    p.write_bytes(data[:-8] + bytes(8))  # same size, different bytes
    with pytest.raises(CheckpointError, match="corrupted"):
        verify_checkpoint(str(last))


def test_checkpoint_of_another_architecture_is_refused(demo, tmp_path):
    res = run(cfg_for(demo, tmp_path / "r", "Global.epochs=1"))
    cfg = cfg_for(demo, tmp_path / "x", "Arch.hidden=96")
    model = get_task("multimodal")(cfg).build_model()
    with pytest.raises(CheckpointError, match="does not fit this model's architecture: .*classifier1.weight"):
        load_model_weights(model, res["best_checkpoint"])


@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_non_finite_loss_guard(demo, tmp_path, policy):
    cfg = cfg_for(demo, tmp_path / "n", "Global.save_every_steps=2", f"Global.on_nonfinite={policy}")
    task = get_task("multimodal")(cfg)
    calls = {"n": 0}
    real = task.forward_loss

    def poisoned(model, batch):
        calls["n"] += 1
        loss, extra = real(model, batch)
        return (loss * float("nan"), extra) if calls["n"] == 5 else (loss, extra)

    task.forward_loss = poisoned
    if policy == "stop":
        with pytest.raises(NonFiniteLossError, match="non-finite loss .* last good checkpoint is kept at .*last"):
            run(cfg, task)
        verify_checkpoint(str(tmp_path / "n" / "checkpoints" / "last"))  # intact
        assert json.load(open(tmp_path / "n" / "checkpoints" / "last" / "trainer.json"))["step"] == 4
        w = weights(tmp_path / "n" / "checkpoints" / "last")
        assert all(np.isfinite(v).all() for v in w.values())
    else:
        res = run(cfg, task)
        assert res["nonfinite_skipped"] == 1 and res["steps"] == 11
        assert all(np.isfinite(v).all() for v in weights(tmp_path / "n" / "checkpoints" / "last").values())


def test_epoch_order_is_seeded_and_sharded():
    a, b = epoch_indices(10, 1, 0, True), epoch_indices(10, 1, 0, True)
    assert np.array_equal(a, b) and sorted(a) == list(range(10))
    assert not np.array_equal(a, epoch_indices(10, 1, 1, True))
    r0, r1 = epoch_indices(10, 1, 0, True, 0, 2), epoch_indices(10, 1, 0, True, 1, 2)
    assert sorted(np.concatenate([r0, r1])) == list(range(10)) and len(r0) == len(r1) == 5


def test_eval_on_the_exported_graph_matches_dygraph(demo, tmp_path, monkeypatch):
    """Global.eval_engine=inference (tools/eval.py's path) exports the checkpoint, parity-checked, and predicts
    with Paddle Inference: same probabilities and metrics as dygraph, with oneDNN off and on."""
    res = run(cfg_for(demo, tmp_path / "r", "Global.epochs=1"))
    ck = f"Global.checkpoint={res['best_checkpoint']}"
    dy_cfg = cfg_for(demo, tmp_path / "dy", ck, "Global.eval_engine=dygraph")
    dy = Trainer(dy_cfg, get_task("multimodal")(dy_cfg))
    want = dy.predict(_loaded(dy_cfg), "test")
    ref = dy.evaluate("test")
    for onednn in ("off", "on"):
        monkeypatch.setenv("PADDLE_MODELS_ONEDNN", onednn)
        cfg = cfg_for(demo, tmp_path / f"pi_{onednn}", ck, "Global.eval_engine=inference")
        tr = Trainer(cfg, get_task("multimodal")(cfg))
        ev = tr.evaluate("test")
        assert ev["eval_engine"] == "inference" and ev["parity_max_rel_err"] <= 1e-5
        assert ev["onednn"] is (onednn == "on")
        assert os.path.isfile(os.path.join(ev["export_dir"], "export.yaml"))
        for k in ("accuracy", "macro_f1"):
            assert ev[k] == pytest.approx(ref[k], abs=1e-9), (onednn, k)
        module, _ = tr._exported(_loaded(cfg))
        got = tr.predict(module, "test")
        assert list(got["id"]) == list(want["id"])
        np.testing.assert_allclose(got["prob"], want["prob"], rtol=1e-4, atol=1e-6)
        with pytest.raises(RuntimeError, match="cannot be trained"):
            module.train()


def _loaded(cfg):
    task = get_task("multimodal")(cfg)
    model = task.build_model()
    load_model_weights(model, cfg["Global"]["checkpoint"])
    return model


def test_eval_engine_is_checked(demo, tmp_path):
    cfg = cfg_for(demo, tmp_path / "x", "Global.eval_engine=onnx", "Global.checkpoint=none")
    with pytest.raises(ValueError, match="Global.eval_engine: 'onnx' is not one of auto, dygraph, inference"):
        Trainer(cfg, get_task("multimodal")(cfg)).evaluate("test")


def test_eval_engine_auto_follows_the_cpu_plan(demo, tmp_path, monkeypatch):
    """auto (the default) evaluates a multimodal checkpoint on the exported graph on CPU, with the metrics of
    dygraph, when the split is large enough to repay the export; with the CPU tuning off it stays dygraph;
    validation while training is always dygraph."""
    res = run(cfg_for(demo, tmp_path / "r", "Global.epochs=1"))
    assert "eval_engine" not in res  # fit's validation ran on the model itself
    ck = f"Global.checkpoint={res['best_checkpoint']}"
    small = cfg_for(demo, tmp_path / "small", ck)
    assert small["Global"]["eval_engine"] == "auto" and small["Global"]["eval_engine_min_items"] > 16
    tr = Trainer(small, get_task("multimodal")(small))
    assert tr.eval_engine("test") == "dygraph" and tr.eval_engine() == "inference"  # 16 items: not worth it
    cfg = cfg_for(demo, tmp_path / "auto", ck, "Global.eval_engine_min_items=16")
    ev = Trainer(cfg, get_task("multimodal")(cfg)).evaluate("test")
    assert ev["eval_engine"] == "inference" and ev["numeric_precision"] == "fp32"
    dy_cfg = cfg_for(demo, tmp_path / "dy", ck, "Global.eval_engine=dygraph")
    dy = Trainer(dy_cfg, get_task("multimodal")(dy_cfg)).evaluate("test")
    assert "eval_engine" not in dy
    for k in ("accuracy", "macro_f1"):
        assert ev[k] == pytest.approx(dy[k], abs=1e-9)
    monkeypatch.setenv("PADDLE_MODELS_CPU_TUNING", "0")
    assert Trainer(cfg, get_task("multimodal")(cfg)).eval_engine() == "dygraph"


def test_bf16_precision_trains_fp32_and_evaluates_bf16(demo, tmp_path):
    from paddle_models.engine.predictor import bf16_supported
    from paddle_models.engine.trainer import BF16_TRAINING_NOTE

    if not bf16_supported():
        pytest.skip("this CPU has no native bfloat16 (AVX512-BF16 / AMX); Global.precision=bf16 is refused here "
                    "(tests/test_cpu_plan.py::test_precision_checks covers the message)")
    bad = cfg_for(demo, tmp_path / "bad", "Global.precision=bf16", "Global.eval_engine=dygraph")
    with pytest.raises(ValueError, match="Paddle 3.3.1 has no bfloat16 dygraph kernels on CPU"):
        Trainer(bad, get_task("multimodal")(bad)).evaluate("test")
    res = run(cfg_for(demo, tmp_path / "r", "Global.epochs=1", "Global.precision=bf16"))
    assert res["numeric_precision"] == {"train": "fp32", "eval": "bf16"} and "TRAINS IN FP32" in BF16_TRAINING_NOTE
    # the same run in fp32 gives the same weights: training is not touched by the precision setting
    ref = run(cfg_for(demo, tmp_path / "f", "Global.epochs=1"))
    a, b = weights(os.path.dirname(res["best_checkpoint"])), weights(os.path.dirname(ref["best_checkpoint"]))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    ck = f"Global.checkpoint={res['best_checkpoint']}"
    cfg = cfg_for(demo, tmp_path / "bf", ck, "Global.precision=bf16")
    tr = Trainer(cfg, get_task("multimodal")(cfg))
    ev = tr.evaluate("test")
    assert ev["eval_engine"] == "inference" and ev["numeric_precision"] == "bf16" and ev["onednn"] is True
    module, _ = tr._exported(_loaded(cfg))
    got = tr.predict(module, "test")
    dy_cfg = cfg_for(demo, tmp_path / "dy", ck, "Global.eval_engine=dygraph")
    want = Trainer(dy_cfg, get_task("multimodal")(dy_cfg)).predict(_loaded(dy_cfg), "test")
    # bf16 keeps 8 bits of mantissa: probabilities within 2e-2 of fp32, and the class wherever fp32's margin
    # between its top two classes is above that
    assert list(got["id"]) == list(want["id"])
    np.testing.assert_allclose(got["prob"], want["prob"], atol=2e-2)
    top2 = np.sort(want["prob"], axis=1)[:, -2:]
    sure = (top2[:, 1] - top2[:, 0]) > 4e-2
    assert np.array_equal(got["prob"][sure].argmax(1), want["prob"][sure].argmax(1))
    assert np.abs(got["prob"] - want["prob"]).max() > 0  # it did run in bf16, not the fp32 graph
