"""The Paddle Inference predictor: results against the dygraph model, clear errors for wrong inputs,
oneDNN on/off, and the fallback when oneDNN fails (a crashing probe, an error at creation)."""
import copy
import logging
import sys
import time

import numpy as np
import paddle
import pytest

from paddle_models.config import load_config
from paddle_models.engine import onednn_probe as probe
from paddle_models.engine import predictor as P
from paddle_models.engine.artifact import read_export_meta, write_yaml
from paddle_models.engine.export import export_model
from paddle_models.engine.predictor import InputError, OnnxPredictor, Predictor, check_inputs
from paddle_models.registry import get_task, model_entry


def _merge(base, upd):
    out = copy.deepcopy(base)
    for k, v in upd.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _small(name, tmp):
    data = _merge({"Arch": {"name": name}, "Global": {"output_dir": str(tmp / "run")}},
                  model_entry(name)["small_config"])
    return load_config(data=data)


@pytest.fixture(scope="module")
def fm_export(tmp_path_factory):
    """A small CTR model (synthetic data, ids + dense values) exported with ONNX."""
    tmp = tmp_path_factory.mktemp("pred")
    cfg = _small("deepfm", tmp)
    task = get_task("rec")(cfg)
    paddle.seed(1)
    model = task.build_model()
    model.eval()
    out = tmp / "export"
    export_model(cfg, str(out), task=task, model=model, onnx=True, threads=1, check_onednn=False)
    return {"dir": str(out), "model": model, "task": task}


def _batch(fm_export, n=5):
    task = fm_export["task"]
    ex = task.example_batch(fm_export["model"], batch_size=n)
    return ex


def _dygraph(fm_export, batch):
    spec = fm_export["task"].export_input_spec(fm_export["model"])
    with paddle.no_grad():
        return fm_export["model"](*[paddle.to_tensor(batch[s.name]) for s in spec]).numpy()


@pytest.mark.parametrize("onednn", ["off", "on"])
def test_predictor_matches_dygraph(fm_export, onednn):
    pred = Predictor(fm_export["dir"], threads=1, onednn=onednn)
    batch = _batch(fm_export, 7)
    out = pred.run(batch)
    assert list(out) == ["prob"]
    ref = _dygraph(fm_export, batch)
    np.testing.assert_allclose(out["prob"], ref, rtol=1e-5, atol=1e-6)
    assert pred.onednn is (onednn == "on")
    # a batch of one (the batch axis is dynamic)
    one = {k: v[:1] for k, v in batch.items()}
    np.testing.assert_allclose(pred.run(one)["prob"], ref[:1], rtol=1e-5, atol=1e-6)


def test_wrong_dtype_is_a_clear_error(fm_export):
    pred = Predictor(fm_export["dir"], threads=1, onednn="off")
    batch = _batch(fm_export)
    name = pred.input_names[0]
    bad = dict(batch, **{name: batch[name].astype("int32")})
    with pytest.raises(InputError, match=rf"input '{name}': expected dtype int64, got int32 "
                                         r"\(convert with .astype\('int64'\)\)"):
        pred.run(bad)


def test_wrong_shapes_are_clear_errors(fm_export):
    pred = Predictor(fm_export["dir"], threads=1, onednn="off")
    batch = _batch(fm_export)
    spec = pred.input_specs[0]
    name, width = spec["name"], spec["shape"][1]
    assert width > 0  # the number of id columns is fixed by the feature layout
    wide = dict(batch, **{name: np.concatenate([batch[name], batch[name][:, :1]], axis=1)})
    with pytest.raises(InputError, match=rf"input '{name}': expected shape \[N, {width}\], got \[5, {width + 1}\] "
                                         rf"\(dimension 1 must be {width}\)"):
        pred.run(wide)
    flat = dict(batch, **{name: batch[name].reshape(-1)})
    with pytest.raises(InputError, match=rf"input '{name}': expected 2 dimensions \[N, {width}\], "
                                         rf"got shape \[{5 * width}\]"):
        pred.run(flat)
    with pytest.raises(InputError, match=rf"missing input '{name}'"):
        pred.run({k: v for k, v in batch.items() if k != name})
    with pytest.raises(InputError, match=r"unknown input 'idz'; the graph takes"):
        pred.run(dict(batch, idz=batch[name]))


def test_check_inputs_batch_size_and_values():
    specs = [{"name": "a", "shape": [-1, -1], "dtype": "int64"}, {"name": "b", "shape": [-1, 3], "dtype": "float32"}]
    ok = check_inputs(specs, {"b": paddle.zeros([2, 3]), "a": np.zeros((2, 9), "int64")})
    assert list(ok) == ["a", "b"] and isinstance(ok["b"], np.ndarray)  # spec order; tensors become numpy
    with pytest.raises(InputError, match="inputs disagree on the batch size: 'a' has 2, 'b' has 4"):
        check_inputs(specs, {"a": np.zeros((2, 9), "int64"), "b": np.zeros((4, 3), "float32")})
    with pytest.raises(InputError, match="input 'a': empty batch"):
        check_inputs(specs, {"a": np.zeros((0, 9), "int64"), "b": np.zeros((0, 3), "float32")})
    with pytest.raises(InputError, match=r"input 'b': expected dtype float32, got float64"):
        check_inputs(specs, {"a": np.zeros((2, 9), "int64"), "b": np.zeros((2, 3))})
    with pytest.raises(InputError, match=r"input 'a': expected a int64 array of shape \[N, N\], got <U"):
        check_inputs(specs, {"a": np.array([["x"]]), "b": np.zeros((1, 3), "float32")})
    with pytest.raises(InputError, match="inputs must be a dict"):
        check_inputs(specs, [np.zeros((2, 9), "int64")])


def test_not_an_export_folder(tmp_path, fm_export):
    with pytest.raises(FileNotFoundError, match="no export.yaml here"):
        Predictor(str(tmp_path))
    with pytest.raises(ValueError, match=r"no variant 'user_tower' \(variants: model\)"):
        Predictor(fm_export["dir"], variant="user_tower", onednn="off")


def test_auto_falls_back_when_the_onednn_probe_crashes(fm_export, monkeypatch, caplog):
    """A probe that dies by a signal (what the oneDNN crash looks like from outside) -> oneDNN off."""
    monkeypatch.setattr(probe, "_PROBE_CACHE", {})
    monkeypatch.setattr(probe, "_probe_command",
                        lambda *a, **k: [sys.executable, "-c", "import os; os.abort()"])
    with caplog.at_level(logging.WARNING, logger="paddle_models"):
        pred = Predictor(fm_export["dir"], threads=1, onednn="auto")
    assert pred.onednn is False
    assert "killed by SIGABRT" in pred.onednn_note
    assert any("running without oneDNN" in r.getMessage() for r in caplog.records)
    batch = _batch(fm_export)
    np.testing.assert_allclose(pred.run(batch)["prob"], _dygraph(fm_export, batch), rtol=1e-5, atol=1e-6)


def test_auto_probe_failing_with_an_error_names_it(fm_export, monkeypatch):
    monkeypatch.setattr(probe, "_PROBE_CACHE", {})
    code = ("import sys; sys.stderr.write('NotImplementedError: (Unimplemented) ConvertPirAttribute2RuntimeAttribute "
            "not support [pir::ArrayAttribute<pir::DoubleAttribute>]\\n'); sys.exit(1)")
    monkeypatch.setattr(probe, "_probe_command", lambda *a, **k: [sys.executable, "-c", code])
    pred = Predictor(fm_export["dir"], threads=1, onednn="auto")
    assert pred.onednn is False
    assert "ConvertPirAttribute2RuntimeAttribute" in pred.onednn_note


def test_auto_probe_accepts_onednn_and_is_cached(fm_export, monkeypatch):
    monkeypatch.setattr(probe, "_PROBE_CACHE", {})
    pred = Predictor(fm_export["dir"], threads=1, onednn="auto")
    if not P._compiled_with_onednn():
        pytest.skip("this paddle build has no oneDNN")
    assert pred.onednn is True, pred.onednn_note
    (res,) = probe._PROBE_CACHE.values()
    assert res["ok"] and res["max_rel_err"] <= probe.PROBE_TOL
    calls = []
    monkeypatch.setattr(probe.subprocess, "run", lambda *a, **k: calls.append(a))
    Predictor(fm_export["dir"], threads=1, onednn="auto")
    assert calls == []  # the second predictor reuses the probe's answer


def test_error_at_creation_with_onednn_falls_back(fm_export, monkeypatch, caplog):
    """The Paddle 3.3 PIR/oneDNN failure is raised by the predictor: 'on' then runs without oneDNN."""
    import paddle.inference as pi

    real = pi.create_predictor

    def flaky(config):
        if config.mkldnn_enabled():
            raise NotImplementedError("(Unimplemented) ConvertPirAttribute2RuntimeAttribute not support "
                                      "[pir::ArrayAttribute<pir::DoubleAttribute>]")
        return real(config)

    monkeypatch.setattr(pi, "create_predictor", flaky)
    with caplog.at_level(logging.WARNING, logger="paddle_models"):
        pred = Predictor(fm_export["dir"], threads=1, onednn="on")
    assert pred.onednn is False and "ConvertPirAttribute2RuntimeAttribute" in pred.onednn_note
    assert any("falling back to oneDNN off" in r.getMessage() for r in caplog.records)
    batch = _batch(fm_export)
    np.testing.assert_allclose(pred.run(batch)["prob"], _dygraph(fm_export, batch), rtol=1e-5, atol=1e-6)


def test_bad_onednn_mode():
    with pytest.raises(ValueError, match="onednn: 'maybe' is not one of auto, on, off"):
        P._mode("onednn", "maybe")


@pytest.mark.parametrize("onednn", ["off", "on"])
def test_kept_buffers_give_the_same_outputs_and_stay_allocated(fm_export, onednn):
    """keep_buffers=on: intermediates stay allocated between calls (host memory says so) while a freeing
    predictor gives them back; the outputs are the same over growing and shrinking batches, and the
    process's GC flag is what it was."""
    key = "FLAGS_eager_delete_tensor_gb"
    flag = paddle.get_flags([key])[key]
    first = _batch(fm_export, 64)
    inputs = sum(a.nbytes for a in first.values())
    keep = Predictor(fm_export["dir"], threads=1, onednn=onednn, keep_buffers="on")
    before = P._host_allocated()
    out = [keep.run(first)["prob"]]
    assert paddle.get_flags([key])[key] == flag
    assert keep.keep_buffers is True and keep.describe()["kept_bytes"] == keep.kept_bytes
    time.sleep(0.5)  # Paddle frees on a helper thread: give it time to show if it would
    held = P._host_allocated() - before
    assert held > 4 * inputs and keep.kept_bytes > 4 * inputs  # inputs + outputs + the intermediates
    free = Predictor(fm_export["dir"], threads=1, onednn=onednn, keep_buffers="off")
    before = P._host_allocated()
    ref = [free.run(first)["prob"]]
    assert free.keep_buffers is False and free.kept_bytes is None
    deadline = time.time() + 20  # the freeing predictor gives its intermediates back (a few ms in practice)
    while P._host_allocated() - before >= held / 2 and time.time() < deadline:
        time.sleep(0.01)
    assert P._host_allocated() - before < held / 2
    for n in (90, 3, 64):
        b = _batch(fm_export, n)
        ref.append(free.run(b)["prob"])
        out.append(keep.run(b)["prob"])
    for o, r in zip(out, ref, strict=True):
        np.testing.assert_array_equal(o, r)
    np.testing.assert_allclose(out[-1], _dygraph(fm_export, _batch(fm_export, 64)), rtol=1e-5, atol=1e-6)


def test_keep_buffers_auto_follows_the_weights_size(fm_export, monkeypatch):
    assert Predictor(fm_export["dir"], threads=1, onednn="off").keep_buffers is True  # a small model
    monkeypatch.setattr(P, "KEEP_BUFFERS_AUTO_MAX_PARAMS", 1)
    assert Predictor(fm_export["dir"], threads=1, onednn="off").keep_buffers is False
    with pytest.raises(ValueError, match="keep_buffers: 'sometimes' is not one of auto, on, off"):
        Predictor(fm_export["dir"], keep_buffers="sometimes")


def test_error_on_a_run_with_onednn_falls_back(fm_export, caplog):
    """A oneDNN kernel failing on a run (e.g. a new shape): that call and later ones run without oneDNN."""
    pred = Predictor(fm_export["dir"], threads=1, onednn="on")
    if not pred.onednn:
        pytest.skip("oneDNN unavailable here")

    class Failing:
        def __init__(self, real):
            self.real = real

        def run(self):
            raise RuntimeError("(PreconditionNotMet) oneDNN primitive creation failed")

        def __getattr__(self, name):
            return getattr(self.real, name)

    pred._predictor = Failing(pred._predictor)
    batch = _batch(fm_export)
    with caplog.at_level(logging.WARNING, logger="paddle_models"):
        out = pred.run(batch)["prob"]
    assert pred.onednn is False and "oneDNN primitive creation failed" in pred.onednn_note
    np.testing.assert_allclose(out, _dygraph(fm_export, batch), rtol=1e-5, atol=1e-6)
    strict = Predictor(fm_export["dir"], threads=1, onednn="on", fallback=False)
    strict._predictor = Failing(strict._predictor)
    with pytest.raises(RuntimeError, match="primitive creation failed"):
        strict.run(batch)


def test_bf16_precision_is_an_opt_in_close_to_fp32(fm_export):
    if not P.bf16_supported():
        pytest.skip("this CPU has no native bfloat16 (AVX512-BF16 / AMX)")
    batch = _batch(fm_export, 7)
    ref = _dygraph(fm_export, batch)
    pred = Predictor(fm_export["dir"], threads=1, onednn="on", precision="bf16")
    assert pred.precision == "bf16" and pred.onednn is True and pred.describe()["precision"] == "bf16"
    out = pred.run(batch)["prob"]
    assert not np.array_equal(
        out, Predictor(fm_export["dir"], threads=1, onednn="on").run(batch)["prob"])  # bf16 ran ...
    np.testing.assert_allclose(out, ref, rtol=5e-2, atol=5e-2)  # ... and stays close to fp32


def test_bf16_precision_errors():
    with pytest.raises(ValueError, match="precision: 'fp16' is not one of fp32, bf16"):
        Predictor("/nonexistent", precision="fp16")


def test_bf16_needs_onednn(fm_export):
    with pytest.raises(ValueError, match="precision bf16 runs on oneDNN"):
        Predictor(fm_export["dir"], onednn="off", precision="bf16")


def test_onnx_predictor_matches_paddle_inference_and_dygraph(fm_export):
    batch = _batch(fm_export, 7)
    onnx = OnnxPredictor(fm_export["dir"], threads=1)
    out = onnx.run(batch)["prob"]
    np.testing.assert_allclose(out, _dygraph(fm_export, batch), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out, Predictor(fm_export["dir"], threads=1, onednn="off").run(batch)["prob"],
                               rtol=1e-5, atol=1e-6)
    assert onnx.describe()["engine"] == "onnxruntime" and onnx.describe()["onnx_file"].endswith("model.onnx")


def test_onnx_predictor_checks_inputs_as_paddle_inference_does(fm_export):
    batch = _batch(fm_export, 3)
    name = next(iter(batch))
    bad = dict(batch, **{name: batch[name].astype("float64")})
    errors = []
    for pred in (OnnxPredictor(fm_export["dir"], threads=1), Predictor(fm_export["dir"], threads=1, onednn="off")):
        with pytest.raises(InputError) as e:
            pred.run(bad)
        errors.append(str(e.value))
    assert errors[0] == errors[1] and f"input '{name}'" in errors[0]


def test_onnx_predictor_needs_an_onnx_graph(fm_export, tmp_path):
    import shutil

    copy = tmp_path / "no_onnx"
    shutil.copytree(fm_export["dir"], copy)
    meta = read_export_meta(str(copy))
    for entry in meta["variants"].values():
        entry.pop("onnx_file", None)
    write_yaml(str(copy / "export.yaml"), meta)
    with pytest.raises(ValueError, match="variant 'model' has no ONNX graph; export it with tools/export.py --onnx"):
        OnnxPredictor(str(copy))
    assert Predictor(str(copy), threads=1, onednn="off").run(_batch(fm_export, 2))["prob"].shape[0] == 2
