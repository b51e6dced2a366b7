"""Export to a static graph: parity (Paddle Inference, oneDNN, ONNX) for every registered model, the
export folder's contents, identical files on a second export, failure on a non-faithful graph, and
tools/export.py + tools/infer.py on raw multimodal data (JSONL and MR2) against the dygraph eval path."""
import copy
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest
import yaml
from conftest import train_small_multimodal

from paddle_models.config import load_config
from paddle_models.engine.artifact import EXPORT_META, load_npz, read_export_meta
from paddle_models.engine.export import ExportError, export_model
from paddle_models.engine.loader import Loader, to_tensors
from paddle_models.engine.parity import ParityError, max_rel_err
from paddle_models.engine.predictor import Predictor
from paddle_models.engine.task import Task
from paddle_models.inference import task_for_export
from paddle_models.registry import get_task, list_models, model_entry


def multimodal_input(model_dir, meta, path, **kw):
    """The family's raw-input reader of an export folder (what tools/infer.py uses)."""
    return task_for_export(model_dir, meta).read_inputs(path, **kw)

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "multimodal" / "jsonl_small.yaml")
ENV = {**os.environ, "GLOG_minloglevel": "2", "PYTHONPATH": str(ROOT)}


def _data_root():
    env = os.environ.get("PADDLE_MODELS_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


def _merge(base, upd):
    out = copy.deepcopy(base)
    for k, v in upd.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _files(d):
    """{relative path: bytes} of every file under d."""
    d = Path(d)
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


# ---- a tiny trained multimodal run (demo data, 2 optimizer steps) --------------------------------
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_small_multimodal(tmp_path_factory.mktemp("mm_export"), (48, 12, 12), seed=7, max_steps=2,
                                  eval_batch_size=16)


@pytest.fixture(scope="module")
def exported(run):
    cfg = load_config(CONFIG, run["overrides"])
    out = run["root"] / "export"
    result = export_model(cfg, str(out), onnx=True, threads=1, check_onednn=True)
    return {"cfg": cfg, "out": out, "result": result}


def _dygraph_probs(cfg, split="test", batch_size=5):
    """Probabilities of the dygraph model through the training pipeline (task dataset + collate)."""
    from paddle_models.engine.checkpoint import load_model_weights

    task = get_task("multimodal")(cfg)
    model = task.build_model()
    load_model_weights(model, cfg["Global"]["checkpoint"])
    model.eval()
    ds = task.dataset(split)
    outs = []
    with paddle.no_grad():
        for b in Loader(ds, task.collate_fn(split), batch_size).batches(np.arange(len(ds))):
            outs.append(task.predict_step(model, to_tensors(b)))
    return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


# ---- numbers -----------------------------------------------------------------------------------
def test_max_rel_err_is_normwise():
    ref = np.array([[1.0, -4.0], [0.0, 2.0]], "float32")
    out = ref + np.array([[0.0, 0.0], [4e-6, 0.0]], "float32")
    # 4e-6 off an element whose reference is 0: relative to the largest magnitude (4), not to 0
    assert max_rel_err([out], [ref]) == pytest.approx(np.float32(4e-6) / 4.0, rel=1e-3)
    assert max_rel_err([ref], [ref]) == 0.0
    assert max_rel_err([np.array([np.nan])], [np.array([1.0])]) == float("inf")
    with pytest.raises(ParityError, match="shape"):
        max_rel_err([ref[:1]], [ref])


# ---- every registered model exports with its task's variants -------------------------------------
def _small_cfg(name, tmp, tokenizer):
    entry = model_entry(name)
    data = _merge({"Arch": {"name": name}, "Global": {"output_dir": str(tmp / "run")}}, entry["small_config"])
    if entry["family"] == "multimodal":
        data = _merge(data, {"Data": {"tokenizer": str(tokenizer)}})
    return load_config(data=data)


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_exports_with_parity(name, tmp_path, run):
    cfg = _small_cfg(name, tmp_path, run["tokenizer"])
    task = get_task(cfg["_family"])(cfg)
    paddle.seed(0)
    model = task.build_model()
    result = export_model(cfg, str(tmp_path / "export"), task=task, model=model, onnx=True, threads=1,
                          check_onednn=False)
    assert result["parity_max_rel_err"] <= 1e-5
    assert result["onnx_parity_max_rel_err"] <= 1e-4
    meta = read_export_meta(str(tmp_path / "export"))
    assert set(meta["variants"]) == set(result["variants"]) == set(task.export_variants(model))
    for vname, v in meta["variants"].items():
        assert (tmp_path / "export" / v["model_file"]).is_file()
        assert (tmp_path / "export" / v["onnx_file"]).is_file()
        layer, spec, _ = task.export_variants(model)[vname]
        assert [i["name"] for i in v["inputs"]] == [s.name for s in spec]
        # batch size stays dynamic in every graph
        assert all(i["shape"][0] == -1 for i in v["inputs"])
        # the exported graph (Paddle Inference) agrees with the dygraph layer on the saved example
        ex = load_npz(str(tmp_path / "export" / v["example"]))
        with paddle.no_grad():
            ref = layer(*[paddle.to_tensor(ex[s.name]) for s in spec])
        ref = ref[0] if isinstance(ref, (list, tuple)) else ref
        got = Predictor(str(tmp_path / "export"), variant=vname, threads=1, onednn="off").run_list(ex)[0]
        np.testing.assert_allclose(got, ref.numpy(), rtol=1e-5, atol=1e-5 * float(np.abs(ref.numpy()).max()))


# ---- the multimodal export folder ---------------------------------------------------------------
def test_multimodal_export_folder(exported, run):
    out, res = exported["out"], exported["result"]
    assert res["parity_max_rel_err"] <= 1e-5 and res["onnx_parity_max_rel_err"] <= 1e-4
    v = res["variants"]["model"]
    assert v["onednn"] in ("ok", "unavailable")
    if v["onednn"] == "ok":
        assert v["onednn_parity_max_rel_err"] <= 1e-5
    for f in ("model.json", "model.pdiparams", "model.onnx", "export.yaml", "config.yaml", "example_model.npz"):
        assert (out / f).is_file(), f
    assert not Path(str(out) + ".tmp").exists()
    meta = yaml.safe_load((out / EXPORT_META).read_text())
    inputs = {i["name"]: i for i in meta["variants"]["model"]["inputs"]}
    assert list(inputs) == ["input_ids", "attention_mask", "caption_ids", "caption_mask", "image",
                            "evidence_images", "evidence_mask"]
    # batch, sequence length and evidence count dynamic; image size fixed by the config's crop
    assert inputs["input_ids"] == {"name": "input_ids", "shape": [-1, -1], "dtype": "int64"}
    assert inputs["caption_ids"]["shape"] == [-1, -1, -1]
    assert inputs["evidence_images"] == {"name": "evidence_images", "shape": [-1, -1, 3, 32, 32], "dtype": "float32"}
    assert meta["variants"]["model"]["outputs"] == [{"name": "logits", "dtype": "float32", "shape": [-1, 3]}]
    assert meta["labels"] == ["negative", "neutral", "positive"]
    pre = meta["preprocess"]
    assert pre["tokenizer"] == "tokenizer" and pre["modalities"] == ["text", "image"]
    cfg_data = exported["cfg"]["Data"]
    for k in ("max_len", "max_captions", "max_evidence_images", "image_resize", "image_crop", "pad_to_max_len"):
        assert pre["data"][k] == cfg_data[k], k
    assert pre["data"]["image_mean"] == pytest.approx([0.485, 0.456, 0.406])
    # the tokenizer travels with the export (self-contained folder)
    assert _files(out / "tokenizer") == {k: v for k, v in _files(run["tokenizer"]).items() if not k.endswith(".tmp")}
    assert yaml.safe_load((out / "config.yaml").read_text())["Arch"]["ernie"]["hidden_size"] == \
        exported["cfg"]["Arch"]["ernie"]["hidden_size"]


def test_bf16_export_runs_bf16_by_default_and_reports_agreement(run, tmp_path, monkeypatch):
    """Global.precision=bf16 at export: the fp32 graph, parity-checked as always, plus export.yaml
    ``precision: bf16`` that predictors take by default, and the bf16 outputs' distance to dygraph reported.
    On a CPU without native bfloat16 such an export runs fp32 with a note; asking for bf16 there raises."""
    import paddle_models.engine.predictor as predictor_mod

    if not predictor_mod.bf16_supported():
        pytest.skip("this CPU has no native bfloat16 (AVX512-BF16 / AMX)")
    cfg = load_config(CONFIG, run["overrides"] + ["Global.precision=bf16"])
    out = tmp_path / "export_bf16"
    res = export_model(cfg, str(out), threads=1, check_onednn=True)
    v = res["variants"]["model"]
    assert res["parity_max_rel_err"] <= 1e-5  # the graph itself is the fp32 function
    assert 0 < v["bf16_max_rel_err"] < 5e-2 and v["bf16_argmax_agrees"] == 1.0
    assert read_export_meta(str(out))["precision"] == "bf16"
    ex = load_npz(str(out / "example_model.npz"))
    pred = Predictor(str(out), threads=1)
    assert pred.precision == "bf16" and pred.onednn is True
    fp32 = Predictor(str(out), threads=1, precision="fp32", onednn="off")
    a, b = pred.run(ex)["logits"], fp32.run(ex)["logits"]
    assert 0 < max_rel_err([a], [b]) < 5e-2
    monkeypatch.setattr(predictor_mod, "bf16_supported", lambda: False)
    old = Predictor(str(out), threads=1)
    assert old.precision == "fp32" and "exported for bf16, but this CPU has no native bfloat16" in old.onednn_note
    with pytest.raises(ValueError, match="this CPU has no native bfloat16"):
        Predictor(str(out), threads=1, precision="bf16")


def test_exported_graph_matches_dygraph_on_real_batches(exported):
    """An independent loader (paddle.jit.load) and Paddle Inference on collated test batches whose batch
    size, text length and evidence count differ from the trace-time example."""
    cfg = exported["cfg"]
    ref = _dygraph_probs(cfg, "test", batch_size=5)
    task = get_task("multimodal")(cfg)
    ds = task.dataset("test")
    collate = task.collate_fn("test")
    loaded = paddle.jit.load(str(exported["out"] / "model"))
    pred = Predictor(str(exported["out"]), threads=1, onednn="off")
    shapes = set()
    got_jit, got_pred = [], []
    for b in Loader(ds, collate, 5).batches(np.arange(len(ds))):
        shapes.add((b["input_ids"].shape, b["caption_ids"].shape[1], b["evidence_images"].shape[1]))
        x = [paddle.to_tensor(b[k]) for k in ("input_ids", "attention_mask", "caption_ids", "caption_mask", "image",
                                              "evidence_images", "evidence_mask")]
        got_jit.append(paddle.nn.functional.softmax(loaded(*x), axis=-1).numpy())
        logits = pred.run({k: b[k] for k in pred.input_names})["logits"]
        got_pred.append(paddle.nn.functional.softmax(paddle.to_tensor(logits), axis=-1).numpy())
    assert len(shapes) > 1  # the batches really have different dynamic dimensions
    np.testing.assert_allclose(np.concatenate(got_jit), ref["prob"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.concatenate(got_pred), ref["prob"], rtol=1e-5, atol=1e-6)


def test_baseline_fusion_exports_with_an_input_it_ignores(run, tmp_path):
    """fusion: baseline (the faithful config) never reads attention_mask: the graph keeps it as an input."""
    cfg = load_config(CONFIG, run["overrides"] + ["Arch.fusion=baseline"])
    task = get_task("multimodal")(cfg)
    paddle.seed(3)
    model = task.build_model()
    res = export_model(cfg, str(tmp_path / "e"), task=task, model=model, threads=1, check_onednn=False)
    assert res["parity_max_rel_err"] <= 1e-5
    pred = Predictor(str(tmp_path / "e"), threads=1, onednn="off")
    assert pred.input_names == [s.name for s in task.export_input_spec(model)]
    ex = task.example_batch(model, batch_size=3)
    with paddle.no_grad():
        ref = model(**{k: paddle.to_tensor(v) for k, v in ex.items()}).numpy()
    np.testing.assert_allclose(pred.run(ex)["logits"], ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_export_twice_gives_identical_files(exported, tmp_path):
    """Same process, second export: byte-identical folder (model.json, params, ONNX, yaml, tokenizer)."""
    again = tmp_path / "again"
    export_model(exported["cfg"], str(again), onnx=True, threads=1, check_onednn=False)
    a, b = _files(exported["out"]), _files(again)
    assert sorted(a) == sorted(b)
    differ = [k for k in a if a[k] != b[k]]
    assert not differ, f"files differ between two exports: {differ}"


class _Frozen(paddle.nn.Layer):
    """Python state changed in forward: the traced graph freezes the value it had while tracing."""

    def __init__(self):
        super().__init__()
        self.fc = paddle.nn.Linear(4, 2)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.fc(x) * float(self.calls)


class _FrozenTask(Task):
    family = "multimodal"

    def export_input_spec(self, model):
        return [paddle.static.InputSpec([None, 4], "float32", "x")]

    def example_batch(self, model, batch_size=2):
        return {"x": np.random.RandomState(0).randn(batch_size, 4).astype("float32")}

    def export_metadata(self, out_dir):
        return {}


def test_export_fails_when_the_graph_is_not_faithful(exported, tmp_path):
    cfg = exported["cfg"]
    with pytest.raises(ExportError, match=r"variant 'model': Paddle Inference on the example batch differs from "
                                          r"the dygraph model by .* relative \(> 1e-05\)"):
        export_model(cfg, str(tmp_path / "bad"), task=_FrozenTask(cfg), model=_Frozen(), check_onednn=False)
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad.tmp").exists()


def test_export_refuses_a_foreign_non_empty_folder(exported, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not an export folder"):
        export_model(exported["cfg"], str(tmp_path / "mine"), check_onednn=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


# ---- the tools -----------------------------------------------------------------------------------
def test_export_tool_json_contract_and_cross_process_identity(exported, run, tmp_path):
    out = tmp_path / "tool_export"
    cmd = [sys.executable, str(ROOT / "tools" / "export.py"), "-c", CONFIG,
           *sum([["-o", o] for o in run["overrides"]], []),
           "--out", str(out), "--onnx", "--threads", "1", "--no-onednn-check", "--json"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=str(ROOT), timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert res["parity_max_rel_err"] <= 1e-5 and res["onnx_parity_max_rel_err"] <= 1e-4
    assert res["out_dir"] == str(out)
    # another process, same weights: the same bytes as the in-process export
    a, b = _files(exported["out"]), _files(out)
    assert sorted(a) == sorted(b) and all(a[k] == b[k] for k in a), [k for k in a if a.get(k) != b.get(k)]


def test_export_tool_needs_a_checkpoint(run, tmp_path):
    over = [o for o in run["overrides"] if not o.startswith("Global.checkpoint=")]
    cmd = [sys.executable, str(ROOT / "tools" / "export.py"), "-c", CONFIG, *sum([["-o", o] for o in over], []),
           "--out", str(tmp_path / "x")]
    p = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=str(ROOT), timeout=300)
    assert p.returncode == 2
    assert "Global.checkpoint" in p.stderr


def test_infer_tool_onnxruntime_refuses_paddle_precisions(exported, run, tmp_path):
    cmd = [sys.executable, str(ROOT / "tools" / "infer.py"), "--model-dir", str(exported["out"]),
           "--input", str(run["data"] / "test.jsonl"), "--out", str(tmp_path / "p.csv"), "--engine", "onnxruntime",
           "--precision", "bf16"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=str(ROOT), timeout=600)
    assert p.returncode == 2 and "--precision bf16 is a Paddle Inference setting" in p.stderr
    assert not (tmp_path / "p.csv").exists()


def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


@pytest.mark.parametrize("engine", ["paddle", "onnxruntime"])
def test_infer_tool_on_jsonl_matches_dygraph_eval(exported, run, tmp_path, engine):
    pred_csv = tmp_path / "pred" / "test_pred.csv"
    cmd = [sys.executable, str(ROOT / "tools" / "infer.py"), "--model-dir", str(exported["out"]),
           "--input", str(run["data"] / "test.jsonl"), "--out", str(pred_csv), "--batch-size", "4",
           "--threads", "1", "--onednn", "off", "--engine", engine, "--no-progress", "--json"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=str(ROOT), timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert res["items"] == 12 and res["items_per_s"] > 0 and res["onednn"] is False
    if engine == "paddle":
        assert res["engine"] == "paddle_inference"
        assert res["keep_buffers"] is True and res["kept_bytes"] > 0  # auto: a small model keeps its intermediates
    else:
        assert res["engine"] == "onnxruntime" and res["keep_buffers"] is None
    header, rows = _read_csv(pred_csv)
    assert header == ["id", "label", "p_negative", "p_neutral", "p_positive"]
    ref = _dygraph_probs(exported["cfg"], "test")
    assert [r[0] for r in rows] == list(ref["id"])
    probs = np.array([[float(x) for x in r[2:]] for r in rows])
    np.testing.assert_allclose(probs, ref["prob"], atol=2e-6 if engine == "paddle" else 1e-5)
    assert [int(r[1]) for r in rows] == list(ref["prob"].argmax(1))
    lines = [json.loads(x) for x in (tmp_path / "pred" / "test_pred.jsonl").read_text().splitlines()]
    assert [x["id"] for x in lines] == list(ref["id"])
    assert lines[0]["label_name"] == ["negative", "neutral", "positive"][lines[0]["label"]]
    assert sum(lines[0]["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    # labels were present: the tool reports accuracy on them
    assert res["labelled"] == 12
    assert res["accuracy"] == pytest.approx(float(np.mean(ref["prob"].argmax(1) == ref["label"])))


def test_module_entry_point_infers_like_the_tool(exported, run, tmp_path):
    """``python -m paddle_models infer`` (the console script's code path) gives the tool's rows and result."""
    got = {}
    for how, prefix in (("tool", [str(ROOT / "tools" / "infer.py")]), ("module", ["-m", "paddle_models", "infer"])):
        pred_csv = tmp_path / how / "pred.csv"
        cmd = [sys.executable, *prefix, "--model-dir", str(exported["out"]), "--input", str(run["data"] / "test.jsonl"),
               "--out", str(pred_csv), "--threads", "1", "--onednn", "off", "--no-progress", "--json"]
        p = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=str(ROOT), timeout=600)
        assert p.returncode == 0, p.stderr[-3000:]
        res = json.loads(p.stdout.strip().splitlines()[-1])
        header, rows = _read_csv(pred_csv)
        jsonl = [json.loads(x) for x in pred_csv.with_suffix(".jsonl").read_text().splitlines()]
        got[how] = {"header": header, "ids": [r[:2] for r in rows], "probs": np.array([r[2:] for r in rows], float),
                    "jsonl_ids": [(x["id"], x["label"], x.get("true_label")) for x in jsonl],
                    "result": {k: res[k] for k in ("items", "labelled", "accuracy", "engine", "precision")}}
    tool, module = got["tool"], got["module"]
    assert module["header"] == tool["header"] and module["ids"] == tool["ids"] and len(tool["ids"]) == 12
    np.testing.assert_allclose(module["probs"], tool["probs"], atol=2e-6)
    assert module["jsonl_ids"] == tool["jsonl_ids"] and module["result"] == tool["result"]


def _write_mr2(root: Path, demo: Path):
    """A small MR2 layout (dataset_items_test.json, evidence folders with annotations and images)."""
    src = [json.loads(x) for x in (demo / "test.jsonl").read_text().splitlines()][:5]
    items = {}
    for k, r in enumerate(src):
        d, inv = root / "test" / "direct" / str(k), root / "test" / "inverse" / str(k)
        d.mkdir(parents=True)
        inv.mkdir(parents=True)
        (root / "test" / "img").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(demo / r["image"], root / "test" / "img" / f"{k}.png")
        pages = []
        for j, e in enumerate(r["evidence_images"]):
            shutil.copyfile(demo / e, d / f"{j}.png")
            pages.append({"image_path": f"./direct/{j}.png", "page_title": f"page {j} about {r['text']}"})
        (d / "direct_annotation.json").write_text(json.dumps({"images_with_no_captions": pages}))
        (inv / "inverse_annotation.json").write_text(json.dumps(
            {"all_fully_matched_captions": [{"title": t, "caption": {"0": t}} for t in r["evidence_texts"]]}))
        items[str(k)] = {"caption": r["text"], "image_path": f"test/img/{k}.png", "label": k % 3,
                         "direct_path": f"test/direct/{k}", "inv_path": f"test/inverse/{k}"}
    (root / "dataset_items_test.json").write_text(json.dumps(items, ensure_ascii=False))


def test_infer_on_mr2_items_matches_dygraph(run, tmp_path):
    """MR2 dataset_items JSON with evidence folders: the same preprocessing as training (data.py)."""
    mr2 = tmp_path / "mr2"
    _write_mr2(mr2, run["data"])
    names = "[non-rumor, rumor, unverified]"
    over = run["overrides"] + [f"Data.label_names={names}"]
    cfg = load_config(CONFIG, over)
    export_model(cfg, str(tmp_path / "export"), threads=1, check_onednn=False)
    pred = Predictor(str(tmp_path / "export"), threads=1, onednn="off")
    ds, collate = multimodal_input(pred.model_dir, pred.meta, str(mr2 / "dataset_items_test.json"))
    assert ds.fmt == "mr2" and len(ds) == 5
    got = []
    for b in Loader(ds, collate, 2).batches(np.arange(len(ds))):
        got.append(pred.run({k: b[k] for k in pred.input_names})["logits"])
    got = paddle.nn.functional.softmax(paddle.to_tensor(np.concatenate(got)), axis=-1).numpy()
    ref_cfg = load_config(CONFIG, over + [f"Data.root={mr2}", "Data.format=mr2"])
    ref = _dygraph_probs(ref_cfg, "test", batch_size=3)
    assert ref["prob"].shape == (5, 3)
    np.testing.assert_allclose(got, ref["prob"], rtol=1e-5, atol=1e-6)

    # the real MR2 sample (Weibo val: one item has its images on disk, some captions are empty)
    weibo = _data_root() / "mr2_sample" / "Weibo"
    if not (weibo / "dataset_items_val.json").is_file():
        pytest.skip(f"{weibo} not found (shared sample data absent; set PADDLE_MODELS_DATA)")
    fix = {"allow_empty_text": True, "on_bad_image": "skip"}
    ds, collate = multimodal_input(pred.model_dir, pred.meta, str(weibo / "dataset_items_val.json"),
                                   data_overrides=fix)
    b = next(Loader(ds, collate, 8).batches(np.arange(len(ds))))
    assert b["caption_ids"].shape[1] > 1 and b["evidence_mask"].sum() > 0  # evidence read from the folders
    got = pred.run({k: b[k] for k in pred.input_names})["logits"]
    ref_cfg = load_config(CONFIG, over + [f"Data.root={weibo}", "Data.format=mr2", "Data.val_split=val",
                                          "Data.allow_empty_text=true", "Data.on_bad_image=skip"])
    ref = _dygraph_probs(ref_cfg, "val", batch_size=8)
    assert list(ref["id"]) == list(b["id"])
    np.testing.assert_allclose(paddle.nn.functional.softmax(paddle.to_tensor(got), -1).numpy(), ref["prob"],
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="Data.max_len: fixed by the trained model"):
        multimodal_input(pred.model_dir, pred.meta, str(weibo / "dataset_items_val.json"),
                         data_overrides={"max_len": 9})


def test_infer_input_errors_name_the_file_record_and_field(exported, tmp_path):
    from paddle_models.multimodal.images import DataError

    pred = Predictor(str(exported["out"]), threads=1, onednn="off")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "hello", "image": "missing.png"}\n')
    ds, collate = multimodal_input(pred.model_dir, pred.meta, str(bad))
    with pytest.raises(DataError, match=rf"{bad}: line 1 \(id a\): image 'missing.png': file not found"):
        next(Loader(ds, collate, 4).batches(np.arange(len(ds))))
    with pytest.raises(FileNotFoundError, match="input file not found"):
        multimodal_input(pred.model_dir, pred.meta, str(tmp_path / "nope.jsonl"))
    (tmp_path / "x.csv").write_text("id,text\n")
    with pytest.raises(ValueError, match="unknown input layout"):
        multimodal_input(pred.model_dir, pred.meta, str(tmp_path / "x.csv"))
