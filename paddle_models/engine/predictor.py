"""Run an exported graph: Paddle Inference (``paddle.inference.Config`` / ``create_predictor``), or
onnxruntime on the export's ONNX graph (:class:`OnnxPredictor`, same inputs, checks and outputs).

    pred = Predictor("output/export_small", threads=2, onednn="auto")
    outputs = pred.run({"input_ids": ids, ...})        # {"logits": array}

A predictor knows graphs and arrays only; turning a family's raw records into these arrays is the
family's ``Task.read_inputs`` / ``prepare_inputs``.

* Inputs are checked against ``export.yaml`` before they reach Paddle: a missing or unknown input, a
  wrong dtype, rank or fixed dimension, or inputs that disagree on the batch size raise
  :class:`InputError` naming the input, what was expected and what came.
* CPU threads: ``threads`` (0: all cores). glog's info lines are switched off.
* oneDNN: ``"on"``, ``"off"`` or ``"auto"``. ``"auto"`` first runs the oneDNN probe
  (:mod:`paddle_models.engine.onednn_probe`, a subprocess) and uses oneDNN only when it passes; ``"on"``
  skips the probe. In both, an error raised while creating the predictor or on a run falls back to oneDNN
  off with a warning (``pred.onednn`` says what is in use, ``pred.onednn_note`` why; ``fallback=False``
  raises instead).
* Precision: ``"fp32"`` (the exported function, parity-checked at export) or ``"bf16"``: oneDNN runs the
  matmuls and convolutions in bfloat16 on CPUs with native support (AVX512-BF16 / AMX). Not the same
  function (logits within about 1e-2 relative): an opt-in. ``None`` (default) takes the export's
  ``precision`` (``Global.precision`` at export; fp32 when absent; an export made for bf16 runs fp32 with a
  warning on a CPU without native bfloat16 or with oneDNN off, while an explicit ``"bf16"`` raises there).
  Needs oneDNN; when oneDNN falls back, so does the precision (``pred.precision`` says what runs).
* Buffers: Paddle's executor frees every intermediate tensor after its last reader ran and allocates it
  again on the next call. ``keep_buffers="on"`` turns that off for this predictor
  (``FLAGS_eager_delete_tensor_gb=-1`` while its executor is built, on the first run; the process's flag
  is restored after): intermediates stay allocated and are reused by the next call of the same or a
  smaller shape. Same outputs; costs the sum of all intermediate tensors in memory (``pred.kept_bytes``,
  measured on the first run). ``"auto"`` (default) keeps them for graphs whose weights are under
  ``KEEP_BUFFERS_AUTO_MAX_PARAMS``. The README's inference table gives the measured effect.

``python -m paddle_models.engine.predictor --probe DIR ...`` is the probe's child process.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Sequence

import numpy as np

from ..runtime import PRECISIONS
from .artifact import EXPORT_META, default_variant, export_path, load_npz, read_export_meta, save_npz
from .onednn_probe import PROBE_TOL, default_threads, probe_onednn  # noqa: F401  (PROBE_TOL: re-exported)
from .onnx import onnx_session
from .parity import max_rel_err

log = logging.getLogger("paddle_models")

MODES = ("auto", "on", "off")  # onednn= and keep_buffers=
_FIRST_RUN_LOCK = threading.Lock()  # first runs read a process-wide flag: one at a time


class InputError(ValueError):
    """Inputs that do not match the exported graph; the message names the input, expected and got."""


def _shape_text(shape) -> str:
    return "[" + ", ".join("N" if d == -1 else str(d) for d in shape) + "]"


def check_inputs(specs: Sequence[dict], inputs, where: str = "") -> dict[str, np.ndarray]:
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
    out: dict[str, np.ndarray] = {}
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
        for axis, (want, got) in enumerate(zip(shape, a.shape, strict=True)):
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


class _ExportedGraph:
    """One variant of an export folder: its ``export.yaml`` entry, input / output specs and example. The
    engines below load the graph and provide ``run_list(inputs)`` (outputs in the export's order)."""

    engine = ""

    def __init__(self, model_dir: str, variant: str | None = None, threads: int = 0):
        self.model_dir = os.path.abspath(model_dir)
        self.meta = read_export_meta(self.model_dir)
        variants = self.meta["variants"]
        variant = default_variant(self.meta, variant)
        if variant not in variants:
            raise ValueError(f"{os.path.join(self.model_dir, EXPORT_META)}: no variant {variant!r} "
                             f"(variants: {', '.join(variants)})")
        self.variant = variant
        self.entry = variants[variant]
        self.input_specs: list[dict] = list(self.entry["inputs"])
        self.output_specs: list[dict] = list(self.entry.get("outputs") or [])
        self.input_names = [s["name"] for s in self.input_specs]
        self.threads = default_threads(threads)

    def _file(self, key: str) -> str:
        path = export_path(self.model_dir, f"variants.{self.variant}.{key}", self.entry[key])
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: missing from the export folder (listed in {EXPORT_META})")
        return path

    def _checked(self, inputs) -> dict[str, np.ndarray]:
        return check_inputs(self.input_specs, inputs, where=f"{os.path.basename(self.model_dir)} [{self.variant}]")

    def _check_graph_inputs(self, graph_file: str, names) -> None:
        """The loaded graph takes the inputs ``export.yaml`` lists (in any order)."""
        if sorted(names) != sorted(self.input_names):
            raise ValueError(f"{graph_file}: the graph's inputs {list(names)} differ from {EXPORT_META}'s "
                             f"{self.input_names}")

    def describe(self) -> dict:
        return {"engine": self.engine, "model_dir": self.model_dir, "variant": self.variant, "threads": self.threads}

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``{output name: array}`` (names from ``export.yaml``: ``logits`` for the multimodal model)."""
        outs = self.run_list(inputs)
        names = [o["name"] for o in self.output_specs] if len(self.output_specs) == len(outs) else \
            [f"output_{i}" for i in range(len(outs))]
        return dict(zip(names, outs, strict=True))

    __call__ = run

    def example_inputs(self) -> dict[str, np.ndarray]:
        """The inputs saved at export for the parity check."""
        return load_npz(export_path(self.model_dir, f"variants.{self.variant}.example", self.entry["example"]))


class Predictor(_ExportedGraph):
    """A Paddle Inference predictor for one variant of an export folder (see the module doc)."""

    engine = "paddle_inference"

    def __init__(self, model_dir: str, variant: str | None = None, threads: int = 0, onednn="auto",
                 onednn_cache_capacity: int = 16, fallback: bool = True, precision: str | None = None,
                 keep_buffers="auto"):
        if precision is not None and precision not in PRECISIONS:
            raise ValueError(f"precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
        super().__init__(model_dir, variant, threads)
        variant = self.variant
        self.onednn_note = ""
        if precision is None:  # the export's own (Global.precision at export), fp32 when it names none
            precision = str(self.meta.get("precision", "fp32"))
            if precision == "bf16" and (_mode("onednn", onednn) == "off" or not bf16_supported()):
                why = "oneDNN is off" if _mode("onednn", onednn) == "off" else "this CPU has no native bfloat16"
                log.warning("%s: exported for bf16, but %s: running fp32", self.model_dir, why)
                self.onednn_note = f"exported for bf16, but {why}: fp32"
                precision = "fp32"
        self.model_file = self._file("model_file")
        self.params_file = self._file("params_file") if self.entry.get("params_file") else ""
        self.keep_buffers = _keep_buffers(keep_buffers, self.params_file)
        self.kept_bytes: int | None = None  # intermediates held between calls, measured on the first run
        self.onednn_cache_capacity = int(onednn_cache_capacity)
        self.requested_onednn = _mode("onednn", onednn)
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
    def _run_checked(self, arrays: dict[str, np.ndarray]) -> list[np.ndarray]:
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

    def run_list(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
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
    the README's inference table compares the engines. ``precision="int8"`` runs the variant's int8 graph
    (``tools/export.py --quantize int8``; checked at export by the agreement gate, not by parity)."""

    engine = "onnxruntime"
    onednn, onednn_note, keep_buffers, kept_bytes = False, "", None, None

    def __init__(self, model_dir: str, variant: str | None = None, threads: int = 0, precision: str = "fp32"):
        if precision not in ("fp32", "int8"):
            raise ValueError(f"onnxruntime precision: {precision!r} is not fp32 or int8")
        super().__init__(model_dir, variant, threads)
        self.precision = precision
        key = "int8_file" if precision == "int8" else "onnx_file"
        if not self.entry.get(key):
            how = "--quantize int8" if precision == "int8" else "--onnx"
            raise ValueError(f"{os.path.join(self.model_dir, EXPORT_META)}: variant {self.variant!r} has no "
                             f"{'int8' if precision == 'int8' else 'ONNX'} graph; export it with tools/export.py {how}")
        self.onnx_file = self._file(key)
        self._session = onnx_session(self.onnx_file, self.threads)
        self._check_graph_inputs(self.onnx_file, [i.name for i in self._session.get_inputs()])

    def run_list(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs in the export's order (a list of numpy arrays)."""
        return self._session.run(None, self._checked(inputs))

    def describe(self) -> dict:
        return {**super().describe(), "precision": self.precision, "onnx_file": self.onnx_file}


ENGINES = ("auto", "paddle", "onnxruntime")


def has_int8(model_dir: str, variant: str | None = None) -> bool:
    """The export folder holds an int8 graph for ``variant`` (``tools/export.py --quantize int8``)."""
    meta = read_export_meta(model_dir)
    return bool((meta["variants"].get(default_variant(meta, variant)) or {}).get("int8_file"))


def open_predictor(model_dir: str, variant: str | None = None, threads: int = 0, engine: str = "auto",
                   precision: str = "auto", onednn="auto", keep_buffers="auto"):
    """The predictor an export folder asks for: with ``engine`` and ``precision`` ``"auto"``, an export with
    an int8 graph runs it on onnxruntime (:class:`OnnxPredictor` ``precision="int8"``), any other runs on
    Paddle Inference in the export's own precision (:class:`Predictor` ``precision=None``: fp32, or bf16 for
    an export made with ``Global.precision: bf16``). ``precision="fp32"`` runs an int8 export's fp32 graph;
    ``bf16`` is Paddle Inference only, ``int8`` onnxruntime only."""
    if engine not in ENGINES:
        raise ValueError(f"engine: {engine!r} is not one of {', '.join(ENGINES)}")
    if precision not in ("auto",) + PRECISIONS + ("int8",):
        raise ValueError(f"precision: {precision!r} is not one of auto, {', '.join(PRECISIONS)}, int8")
    if precision == "auto":  # None: Predictor takes the export's own precision
        precision = "int8" if has_int8(model_dir, variant) and engine != "paddle" else None
    if engine == "auto":
        engine = "onnxruntime" if precision == "int8" else "paddle"
    if precision == "int8" and engine != "onnxruntime":
        raise ValueError("precision int8 runs the export's int8 ONNX graph on onnxruntime; not with engine paddle")
    if precision == "bf16" and engine != "paddle":
        raise ValueError("precision bf16 is a Paddle Inference setting (oneDNN); onnxruntime runs fp32 or int8")
    if engine == "onnxruntime":
        return OnnxPredictor(model_dir, variant=variant, threads=threads, precision=precision or "fp32")
    return Predictor(model_dir, variant=variant, threads=threads, onednn=onednn, precision=precision,
                     keep_buffers=keep_buffers)


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
        feed = dict(zip(names, args, strict=False))  # positional inputs fill the first names, the rest by keyword
        feed.update(kwargs)
        outs = [paddle.to_tensor(o) for o in self.predictor.run_list(feed)]
        return outs[0] if len(outs) == 1 else tuple(outs)


def _probe_main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="oneDNN probe (run by probe_onednn in a subprocess)")
    ap.add_argument("--probe", required=True, help="export folder")
    ap.add_argument("--variant", default="model")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", required=True)
    ap.add_argument("--inputs", nargs="+", required=True)
    a = ap.parse_args(argv)
    off = Predictor(a.probe, a.variant, threads=a.threads, onednn="off", precision="fp32")
    # fallback off: a failure is the answer
    on = Predictor(a.probe, a.variant, threads=a.threads, onednn="on", fallback=False, precision="fp32")
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
