"""Serve an exported model with Paddle Inference (``paddle.inference.Config`` / ``create_predictor``), or
with onnxruntime on the export's ONNX graph (:class:`OnnxPredictor`, same inputs, checks and outputs).

    pred = Predictor("output/export_small", threads=2, onednn="auto")
    outputs = pred.run({"input_ids": ids, ...})        # {"logits": array}

* Inputs are checked against ``export.yaml`` before they reach Paddle: a missing or unknown input, a
  wrong dtype, rank or fixed dimension, or inputs that disagree on the batch size raise
  :class:`InputError` naming the input, what was expected and what came.
* CPU threads: ``threads`` (0: all cores). glog's info lines are switched off.
* oneDNN: ``"on"``, ``"off"`` or ``"auto"``. Paddle 3.3.x has a known oneDNN failure on some graphs on
  CPU (``ConvertPirAttribute2RuntimeAttribute not support ...`` from the PIR executor, or a hard crash).
  ``"auto"`` first runs a probe in a subprocess (so a crash cannot take the caller down): it replays the
  example inputs saved at export with oneDNN on and off and accepts oneDNN when it runs and agrees within
  ``PROBE_TOL``; the result is cached per graph file for the process. ``"on"`` skips the probe. In both,
  an error raised while creating the predictor or on its first run falls back to oneDNN off with a
  warning; so does an error on a later run (a new input shape) (``pred.onednn`` says what is in use,
  ``pred.onednn_note`` why; ``fallback=False`` raises instead).
* Precision: ``"fp32"`` (the exported function, parity-checked at export) or ``"bf16"``: oneDNN runs the
  matmuls and convolutions in bfloat16 on CPUs with native support (AVX512-BF16 / AMX). About 1.9x faster
  than fp32 for the faithful network on this project's Zen 4 CPU, but it is not the same function (logits
  within about 1e-2 relative): an opt-in, never a default. Needs oneDNN; when oneDNN falls back, so does
  the precision (``pred.precision`` says what runs).
* Buffers: Paddle's executor frees every intermediate tensor as soon as its last reader ran, through a
  task on a helper thread, and allocates it again on the next call. ``keep_buffers="on"`` turns that off
  for this predictor (``FLAGS_eager_delete_tensor_gb=-1`` while its executor is built, on the first run;
  the process's flag is restored after): intermediates stay allocated and are reused by the next call of
  the same or a smaller shape, and the helper thread stays idle. Same outputs; costs the sum of all
  intermediate tensors in memory (``pred.kept_bytes``, measured on the first run; larger inputs later
  hold more). Measured in this project, 1 thread: demo network batch 1 1.8-2.7 -> 1.4-1.5 ms
  (benchmarks/inference.py) and 1.5 -> 1.0 cores busy; faithful network 2-3% faster but 4.9 GB more
  at batch 8. ``"auto"`` (default) keeps them for graphs whose weights are under
  ``KEEP_BUFFERS_AUTO_MAX_PARAMS``.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

from .export import EXPORT_META, load_npz, max_rel_err, read_export_meta, save_npz

log = logging.getLogger("paddle_models")

PROBE_TOL = 1e-4
MODES = ("auto", "on", "off")  # onednn= and keep_buffers=
_PROBE_CACHE: Dict[tuple, dict] = {}
_FIRST_RUN_LOCK = threading.Lock()  # first runs read a process-wide flag: one at a time


class InputError(ValueError):
    """Inputs that do not match the exported graph; the message names the input, expected and got."""


def _shape_text(shape) -> str:
    return "[" + ", ".join("N" if d == -1 else str(d) for d in shape) + "]"


def check_inputs(specs: Sequence[dict], inputs, where: str = "") -> Dict[str, np.ndarray]:
    """Validate ``inputs`` (dict name -> array) against the export's input specs; return numpy arrays in
    spec order. No silent casts: a wrong dtype is an error."""
    pre = f"{where}: " if where else ""
    expected = [s["name"] for s in specs]
    if not isinstance(inputs, dict):
        raise InputError(f"{pre}inputs must be a dict of name -> array ({', '.join(expected)}), "
                         f"got {type(inputs).__name__}")
    unknown = [k for k in inputs if k not in expected]
    if unknown:
        raise InputError(f"{pre}unknown input {unknown[0]!r}; the graph takes {', '.join(expected)}")
    missing = [n for n in expected if n not in inputs]
    if missing:
        raise InputError(f"{pre}missing input {missing[0]!r}; the graph takes {', '.join(expected)}")
    out: Dict[str, np.ndarray] = {}
    batch = None
    for s in specs:
        name, shape, dtype = s["name"], list(s["shape"]), str(s["dtype"])
        value = inputs[name]
        if hasattr(value, "numpy") and not isinstance(value, np.ndarray):
            value = value.numpy()
        a = np.asarray(value)
        if a.dtype.kind in "OUS":
            raise InputError(f"{pre}input {name!r}: expected a {dtype} array of shape {_shape_text(shape)}, "
                             f"got {a.dtype} values")
        if str(a.dtype) != dtype:
            raise InputError(f"{pre}input {name!r}: expected dtype {dtype}, got {a.dtype} "
                             f"(convert with .astype('{dtype}'))")
        if a.ndim != len(shape):
            raise InputError(f"{pre}input {name!r}: expected {len(shape)} dimensions {_shape_text(shape)}, "
                             f"got shape {list(a.shape)}")
        for axis, (want, got) in enumerate(zip(shape, a.shape)):
            if want != -1 and want != got:
                raise InputError(f"{pre}input {name!r}: expected shape {_shape_text(shape)}, got {list(a.shape)} "
                                 f"(dimension {axis} must be {want})")
        if a.ndim and shape[0] == -1:
            if a.shape[0] == 0:
                raise InputError(f"{pre}input {name!r}: empty batch (shape {list(a.shape)})")
            if batch is None:
                batch = (name, a.shape[0])
            elif a.shape[0] != batch[1]:
                raise InputError(f"{pre}inputs disagree on the batch size: {batch[0]!r} has {batch[1]}, "
                                 f"{name!r} has {a.shape[0]}")
        out[name] = np.ascontiguousarray(a)
    return out


def _mode(what: str, value) -> str:
    """``auto`` / ``on`` / ``off`` from a string or a bool (None is off)."""
    if value is True:
        return "on"
    if value is False or value is None:
        return "off"
    v = str(value).lower()
    if v not in MODES:
        raise ValueError(f"{what}: {value!r} is not one of {', '.join(MODES)}")
    return v


def _compiled_with_onednn() -> bool:
    from paddle.base import core

    fn = getattr(core, "is_compiled_with_onednn", None) or getattr(core, "is_compiled_with_mkldnn", None)
    return bool(fn and fn())


PRECISIONS = ("fp32", "bf16")
KEEP_BUFFERS_AUTO_MAX_PARAMS = 64 << 20  # bytes of weights; above it "auto" frees intermediates as Paddle does


def _keep_buffers(value, params_file: str) -> bool:
    mode = _mode("keep_buffers", value)
    if mode == "auto":
        return os.path.getsize(params_file) < KEEP_BUFFERS_AUTO_MAX_PARAMS if params_file else True
    return mode == "on"


def _host_allocated() -> int:
    from paddle.base import core

    fn = getattr(core, "host_memory_stat_current_value", None)
    return int(fn("Allocated", 0)) if fn else 0


def bf16_supported() -> bool:
    """The CPU runs oneDNN's bfloat16 kernels natively (not emulated)."""
    from paddle.base import core

    fn = getattr(core, "supports_bfloat16_fast_performance", None) or getattr(core, "supports_bfloat16", None)
    return bool(fn and fn())


def default_threads(threads: int = 0) -> int:
    return int(threads) if threads and int(threads) > 0 else (os.cpu_count() or 1)


class _ExportedGraph:
    """One variant of an export folder: its ``export.yaml`` entry, input / output specs and example. The
    engines below load the graph and provide ``run_list(inputs)`` (outputs in the export's order)."""

    engine = ""

    def __init__(self, model_dir: str, variant: Optional[str] = None, threads: int = 0):
        self.model_dir = os.path.abspath(model_dir)
        self.meta = read_export_meta(self.model_dir)
        variants = self.meta["variants"]
        if variant is None:
            variant = "model" if "model" in variants or len(variants) != 1 else next(iter(variants))
        if variant not in variants:
            raise ValueError(f"{os.path.join(self.model_dir, EXPORT_META)}: no variant {variant!r} "
                             f"(variants: {', '.join(variants)})")
        self.variant = variant
        self.entry = variants[variant]
        self.input_specs: List[dict] = list(self.entry["inputs"])
        self.output_specs: List[dict] = list(self.entry.get("outputs") or [])
        self.input_names = [s["name"] for s in self.input_specs]
        self.threads = default_threads(threads)

    def _file(self, key: str) -> str:
        path = os.path.join(self.model_dir, self.entry[key])
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: missing from the export folder (listed in {EXPORT_META})")
        return path

    def _checked(self, inputs) -> Dict[str, np.ndarray]:
        return check_inputs(self.input_specs, inputs, where=f"{os.path.basename(self.model_dir)} [{self.variant}]")

    def _check_graph_inputs(self, graph_file: str, names) -> None:
        """The loaded graph takes the inputs ``export.yaml`` lists (in any order)."""
        if sorted(names) != sorted(self.input_names):
            raise ValueError(f"{graph_file}: the graph's inputs {list(names)} differ from {EXPORT_META}'s "
                             f"{self.input_names}")

    def describe(self) -> dict:
        return {"engine": self.engine, "model_dir": self.model_dir, "variant": self.variant, "threads": self.threads}

    def run(self, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """``{output name: array}`` (names from ``export.yaml``: ``logits`` for the multimodal model)."""
        outs = self.run_list(inputs)
        names = [o["name"] for o in self.output_specs] if len(self.output_specs) == len(outs) else \
            [f"output_{i}" for i in range(len(outs))]
        return dict(zip(names, outs))

    __call__ = run

    def example_inputs(self) -> Dict[str, np.ndarray]:
        """The inputs saved at export for the parity check."""
        return load_npz(os.path.join(self.model_dir, self.entry["example"]))


class Predictor(_ExportedGraph):
    """A Paddle Inference predictor for one variant of an export folder (see the module doc)."""

    engine = "paddle_inference"

    def __init__(self, model_dir: str, variant: Optional[str] = None, threads: int = 0, onednn="auto",
                 onednn_cache_capacity: int = 16, fallback: bool = True, precision: str = "fp32",
                 keep_buffers="auto"):
        if precision not in PRECISIONS:
            raise ValueError(f"precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
        super().__init__(model_dir, variant, threads)
        variant = self.variant
        self.model_file = self._file("model_file")
        self.params_file = self._file("params_file") if self.entry.get("params_file") else ""
        self.keep_buffers = _keep_buffers(keep_buffers, self.params_file)
        self.kept_bytes: Optional[int] = None  # intermediates held between calls, measured on the first run
        self.onednn_cache_capacity = int(onednn_cache_capacity)
        self.requested_onednn = _mode("onednn", onednn)
        self.onednn_note = ""
        self.fallback = bool(fallback)  # False: a oneDNN failure raises instead of falling back
        use = self.requested_onednn != "off"
        self.precision = precision
        if precision == "bf16":
            if not use:
                raise ValueError("precision bf16 runs on oneDNN; use onednn='on' or 'auto', not 'off'")
            if not bf16_supported():
                raise ValueError("precision bf16: this CPU has no native bfloat16 (AVX512-BF16 or AMX); use fp32")
        if use and not _compiled_with_onednn():
            use = self._without_onednn("this paddle build has no oneDNN")
        if use and self.requested_onednn == "auto":
            probe = probe_onednn(self.model_dir, variant, threads=self.threads)
            if not probe["ok"]:
                use = self._without_onednn(f"oneDNN probe failed: {probe['error']}")
                log.warning("%s [%s]: %s; running without oneDNN", self.model_dir, variant, self.onednn_note)
        self._create(use)

    def _without_onednn(self, why: str) -> bool:
        """Record why oneDNN is off; bf16 runs only on oneDNN, so the precision becomes fp32 with it."""
        self.onednn_note = why + (", so fp32" if self.precision != "fp32" else "")
        self.precision = "fp32"
        return False

    # ---- setup -------------------------------------------------------------------------------------
    def _config(self, use_onednn: bool):
        from paddle.inference import Config

        cfg = Config(self.model_file, self.params_file) if self.params_file else Config(self.model_file)
        cfg.disable_gpu()
        cfg.disable_glog_info()
        cfg.set_cpu_math_library_num_threads(self.threads)
        cfg.switch_ir_optim(True)
        if use_onednn:
            cfg.enable_mkldnn()
            cfg.set_mkldnn_cache_capacity(self.onednn_cache_capacity)  # dynamic shapes: bounded primitive cache
            if self.precision == "bf16":
                cfg.enable_mkldnn_bfloat16()
        else:
            cfg.disable_mkldnn()
        return cfg

    def _create(self, use_onednn: bool):
        from paddle.inference import create_predictor

        try:
            self._predictor = create_predictor(self._config(use_onednn))
            self.onednn = use_onednn
        except Exception as e:
            if not use_onednn or not self.fallback:
                raise
            self._fall_back(e)
            return
        self._check_graph_inputs(self.model_file, self._predictor.get_input_names())
        self._ran = False  # the executor (and its garbage collector) is built on the first run
        # handles live as long as the predictor: fetched once, not on every run
        self._input_handles = [(n, self._predictor.get_input_handle(n)) for n in self.input_names]
        self._output_handles = [self._predictor.get_output_handle(n) for n in self._predictor.get_output_names()]

    def _fall_back(self, error: Exception):
        first = str(error).strip().splitlines()
        msg = f"{type(error).__name__}: {first[0] if first else ''}"[:300]
        self._without_onednn(f"oneDNN failed ({msg})")
        log.warning("%s [%s]: %s; falling back to oneDNN off", self.model_dir, self.variant, self.onednn_note)
        self._create(False)

    # ---- running -------------------------------------------------------------------------------------
    def _run_checked(self, arrays: Dict[str, np.ndarray]) -> List[np.ndarray]:
        for name, h in self._input_handles:
            h.reshape(arrays[name].shape)
            h.copy_from_cpu(arrays[name])
        if self._ran:
            self._predictor.run()
        else:
            self._first_run()
        return [h.copy_to_cpu() for h in self._output_handles]

    def _first_run(self):
        """Run once with the garbage-collection flag this predictor wants: Paddle reads it when it builds
        the executor, which happens here; the process-wide value is put back right after. First runs take a
        lock so that another thread's first run never sees this predictor's value."""
        with _FIRST_RUN_LOCK:
            if not self.keep_buffers:
                self._predictor.run()
                self._ran = True
                return
            import paddle

            key = "FLAGS_eager_delete_tensor_gb"
            before, allocated = paddle.get_flags([key])[key], _host_allocated()
            paddle.set_flags({key: -1.0})
            try:
                self._predictor.run()
            finally:
                paddle.set_flags({key: before})
            self._ran = True
            self.kept_bytes = max(0, _host_allocated() - allocated)

    def run_list(self, inputs: Dict[str, np.ndarray]) -> List[np.ndarray]:
        """Outputs in the export's order (a list of numpy arrays)."""
        arrays = self._checked(inputs)
        if not self.onednn:
            return self._run_checked(arrays)
        try:  # a oneDNN kernel failing on a shape (first run, or a new shape) -> the plain CPU kernels
            return self._run_checked(arrays)
        except Exception as e:
            if not self.fallback:
                raise
            self._fall_back(e)
            return self._run_checked(arrays)

    def describe(self) -> dict:
        return {**super().describe(), "precision": self.precision, "onednn": self.onednn,
                "onednn_requested": self.requested_onednn, "onednn_note": self.onednn_note,
                "keep_buffers": self.keep_buffers, "kept_bytes": self.kept_bytes}


class OnnxPredictor(_ExportedGraph):
    """onnxruntime (CPU) on a variant's ONNX graph (``tools/export.py --onnx``), with the same input checks
    and outputs as :class:`Predictor`. The ONNX graph was parity-checked against dygraph at export (1e-4);
    for small graphs it runs several times faster than Paddle Inference here (see the README's table)."""

    engine = "onnxruntime"
    onednn, onednn_note, precision, keep_buffers, kept_bytes = False, "", "fp32", None, None

    def __init__(self, model_dir: str, variant: Optional[str] = None, threads: int = 0):
        super().__init__(model_dir, variant, threads)
        if not self.entry.get("onnx_file"):
            raise ValueError(f"{os.path.join(self.model_dir, EXPORT_META)}: variant {self.variant!r} has no ONNX "
                             f"graph; export it with tools/export.py --onnx")
        from .export import onnx_session

        self.onnx_file = self._file("onnx_file")
        self._session = onnx_session(self.onnx_file, self.threads)
        self._check_graph_inputs(self.onnx_file, [i.name for i in self._session.get_inputs()])

    def run_list(self, inputs: Dict[str, np.ndarray]) -> List[np.ndarray]:
        """Outputs in the export's order (a list of numpy arrays)."""
        return self._session.run(None, self._checked(inputs))

    def describe(self) -> dict:
        return {**super().describe(), "onnx_file": self.onnx_file}


class PredictorModule:
    """An exported graph called like the paddle Layer it was exported from (``module(**inputs)`` or
    positionally in the export's input order), returning paddle Tensors: lets a task's ``predict_step``
    run on Paddle Inference unchanged (``Global.eval_engine: inference``)."""

    def __init__(self, predictor: Predictor):
        self.predictor = predictor

    def eval(self):
        return self

    def train(self, *_):
        raise RuntimeError(f"{self.predictor.model_dir}: an exported graph cannot be trained")

    def __call__(self, *args, **kwargs):
        import paddle

        names = self.predictor.input_names
        if len(args) > len(names):
            raise InputError(f"{self.predictor.model_dir}: {len(args)} positional inputs, the graph takes {names}")
        feed = dict(zip(names, args))
        feed.update(kwargs)
        outs = [paddle.to_tensor(o) for o in self.predictor.run_list(feed)]
        return outs[0] if len(outs) == 1 else tuple(outs)


# ---- raw inputs -> batches (the training preprocessing) ------------------------------------------
def detect_multimodal_format(path: str) -> str:
    """``jsonl`` for ``*.jsonl``; for ``*.json``: an object keyed by item id is MR2's ``dataset_items``, a
    list is MVSA's layout."""
    low = path.lower()
    if low.endswith(".jsonl"):
        return "jsonl"
    if low.endswith(".json"):
        with open(path, "r", encoding="utf-8") as f:
            head = f.read(4096).lstrip()
        if head.startswith("{"):
            return "mr2"
        if head.startswith("["):
            return "mvsa"
        raise ValueError(f"{path}: expected a JSON object (MR2 dataset_items) or a list (MVSA), starting with "
                         f"{head[:20]!r}")
    raise ValueError(f"{path}: unknown input layout (use a .jsonl file of the JSONL layout, an MR2 "
                     f"dataset_items_<split>.json, or a .npz of input arrays)")


def multimodal_input(model_dir: str, meta: dict, input_file: str, on_bad_image: Optional[str] = None,
                     data_overrides: Optional[dict] = None):
    """(dataset, collate) for a raw input file, built by the training code (``paddle_models.multimodal.data``)
    with the export's ``Data`` settings and tokenizer; image paths resolve under the input file's folder.
    ``data_overrides`` changes some of those settings for this input (``{"allow_empty_text": True}``)."""
    from ..multimodal import data as D
    from ..multimodal.tokenizer import load_tokenizer

    pre = meta.get("preprocess") or {}
    if pre.get("family") != "multimodal":
        raise ValueError(f"{model_dir}: not a multimodal export (no multimodal preprocessing in {EXPORT_META})")
    path = os.path.abspath(input_file)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{input_file}: input file not found")
    fmt = detect_multimodal_format(path)
    base = os.path.basename(path)
    split = base[:-len(".jsonl")] if fmt == "jsonl" else os.path.splitext(base)[0]
    if fmt == "mr2" and split.startswith("dataset_items_"):
        split = split[len("dataset_items_"):]
    data = dict(pre["data"])
    for k, v in (data_overrides or {}).items():
        if k not in data:
            raise ValueError(f"Data.{k}: not a preprocessing setting of this export (settings: {', '.join(data)})")
        if k in ("max_len", "image_crop", "image_resize", "image_mean", "image_std", "label_names") and v != data[k]:
            raise ValueError(f"Data.{k}: fixed by the trained model ({data[k]!r}); it cannot change at inference")
        data[k] = v
    data.update({"format": fmt, "root": os.path.dirname(path), "files": {split: base}, "limit": 0})
    if on_bad_image:
        data["on_bad_image"] = on_bad_image
    mods = list(pre.get("modalities") or ["text", "image"])
    use_text, use_image = "text" in mods, "image" in mods
    ds = D.build_dataset(data, split, use_text, use_image, require_label=False)
    tok = load_tokenizer(os.path.join(model_dir, pre["tokenizer"]))
    collate = D.build_collate(data, tok, use_text, use_image)
    return ds, collate


# ---- the oneDNN probe (a subprocess) ---------------------------------------------------------------
def _probe_command(model_dir: str, variant: str, threads: int, input_files: List[str], out_dir: str) -> List[str]:
    return [sys.executable, "-m", "paddle_models.engine.predictor", "--probe", model_dir, "--variant", variant,
            "--threads", str(threads), "--out", out_dir, "--inputs", *input_files]


def probe_onednn(model_dir: str, variant: str = "model", threads: int = 0, inputs: Optional[list] = None,
                 timeout: float = 900.0, use_cache: bool = True) -> dict:
    """Run ``variant`` with oneDNN on and off in a subprocess on ``inputs`` (default: the saved example).

    Returns ``{"ok", "error", "max_rel_err" (on vs off), "outputs" (oneDNN-on outputs per input batch),
    "seconds"}``; ``ok`` is false when the subprocess fails or crashes, or when oneDNN and the plain CPU
    kernels disagree by more than ``PROBE_TOL``."""
    model_dir = os.path.abspath(model_dir)
    meta = read_export_meta(model_dir)
    entry = meta["variants"][variant]
    mf = os.path.join(model_dir, entry["model_file"])
    st = os.stat(mf)
    key = (mf, st.st_mtime_ns, st.st_size, default_threads(threads))
    if inputs is None and use_cache and key in _PROBE_CACHE:
        return _PROBE_CACHE[key]
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="onednn_probe_") as tmp:
        if inputs is None:
            files = [os.path.join(model_dir, entry["example"])]
        else:
            files = []
            for i, arrays in enumerate(inputs):
                files.append(os.path.join(tmp, f"in_{i}.npz"))
                save_npz(files[-1], arrays)
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("GLOG_minloglevel", "2")
        cmd = _probe_command(model_dir, variant, default_threads(threads), files, tmp)
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            res = {"ok": False, "error": f"the probe did not finish within {timeout:.0f} s", "outputs": None}
        else:
            res = _probe_result(proc, tmp, len(files))
    res["seconds"] = round(time.time() - t0, 3)
    if inputs is None:
        _PROBE_CACHE[key] = res
    return res


def _probe_result(proc, tmp: str, n: int) -> dict:
    if proc.returncode != 0:
        if proc.returncode < 0:
            import signal

            try:
                why = f"the probe process was killed by {signal.Signals(-proc.returncode).name}"
            except ValueError:
                why = f"the probe process died (signal {-proc.returncode})"
        else:
            lines = [ln for ln in (proc.stderr or "").strip().splitlines() if ln.strip()]
            tail = next((ln for ln in reversed(lines) if "Error" in ln or "error" in ln), lines[-1] if lines else "")
            why = f"the probe exited with status {proc.returncode}: {tail.strip()[:300]}"
        return {"ok": False, "error": why, "outputs": None}
    try:
        report = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"ok": False, "error": f"the probe printed no result ({(proc.stdout or '')[-200:]!r})",
                "outputs": None}
    outs = []
    for i in range(n):
        z = load_npz(os.path.join(tmp, f"out_{i}.npz"))
        outs.append([z[f"o{j}"] for j in range(len(z))])
    err = float(report["max_rel_err"])
    ok = err <= PROBE_TOL
    return {"ok": ok, "max_rel_err": err, "outputs": outs,
            "error": "" if ok else f"oneDNN and the plain CPU kernels disagree by {err:.3g} relative (> {PROBE_TOL:g})"}


def _probe_main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="oneDNN probe (run by probe_onednn in a subprocess)")
    ap.add_argument("--probe", required=True, help="export folder")
    ap.add_argument("--variant", default="model")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", required=True)
    ap.add_argument("--inputs", nargs="+", required=True)
    a = ap.parse_args(argv)
    off = Predictor(a.probe, a.variant, threads=a.threads, onednn="off")
    on = Predictor(a.probe, a.variant, threads=a.threads, onednn="on", fallback=False)  # a failure is the answer
    worst = 0.0
    for i, f in enumerate(a.inputs):
        x = load_npz(f)
        ref = off.run_list(x)
        got = on.run_list(x)
        worst = max(worst, max_rel_err(got, ref))
        save_npz(os.path.join(a.out, f"out_{i}.npz"), {f"o{j}": o for j, o in enumerate(got)})
    print(json.dumps({"ok": True, "max_rel_err": worst}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_probe_main())
