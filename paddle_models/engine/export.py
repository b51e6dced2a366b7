"""Export a trained model to a static graph for serving, with parity checks.

``export_model(cfg, out_dir)`` builds the model of ``cfg`` (weights from ``Global.checkpoint``), and for
every graph the task names in ``Task.export_variants`` (the whole model by default; the Transformer also
its encoder and a decoder step, DSSM may name its two towers) runs ``paddle.jit.save`` with the task's ``InputSpec``s
(batch size, evidence count and sequence lengths stay dynamic). Paddle 3 writes ``<variant>.json`` +
``<variant>.pdiparams`` (the variant named ``model`` gives ``model.json`` / ``model.pdiparams``). Beside
them:

The folder's format (export.yaml, config.yaml, example inputs, ONNX graphs) is described in
:mod:`paddle_models.engine.artifact`; what a family adds to export.yaml (labels, preprocessing, copied
vocabulary files) comes from its ``Task.export_metadata``.

Parity: the dygraph model and the exported graph (Paddle Inference, oneDNN off; and oneDNN on in a
probe subprocess when ``check_onednn``) must agree on the example batch and on its first sample alone
(a different batch size, so a frozen dimension shows) within ``1e-5`` relative, the ONNX graph within
``1e-4``; otherwise the export fails and ``out_dir`` is left as it was (the folder is built as
``<out_dir>.tmp`` and renamed into place at the end). The error measure is
:func:`max_rel_err`: the largest absolute difference divided by the largest magnitude of the
reference output.

Exporting the same weights twice gives byte-identical files, in one process or two: the names Paddle
numbers per process (op name structs, unique names) are reset around each ``paddle.jit.save``, parameters
and buffers are saved under their structured names (``param:ernie.encoder.layers.0...``) instead of
``linear_12.w_0``, the npz files carry fixed timestamps, and nothing time- or machine-dependent is written.

A forward input that does not reach the outputs (the multimodal ``fusion: baseline`` never reads
``attention_mask``) is kept as a graph input, so the inputs of a variant are always the task's full list.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import paddle

from ..config import dump_config
from ..fileio import new_temp_folder, replace_folder
from ..runtime import check_precision
from .artifact import (
    CONFIG_FILE,
    EXPORT_META,
    FORMAT_VERSION,
    file_sha256,
    graph_files,
    output_names,
    save_npz,
    spec_entry,
    write_files_manifest,
    write_yaml,
)
from .onednn_probe import probe_onednn
from .onnx import OnnxConversionError, convert_onnx, onnx_session
from .parity import first_sample, flatten_outputs, max_rel_err
from .predictor import Predictor
from .signals import restore_handlers

log = logging.getLogger("paddle_models")

PARITY_TOL = 1e-5
ONNX_PARITY_TOL = 1e-4


QUANTIZED_VARIANT = "model"


class ExportError(RuntimeError):
    """Export failed (parity, conversion, missing inputs); the message says which variant and why."""


# ---- deterministic saving ----------------------------------------------------------------------
@contextlib.contextmanager
def deterministic_names():
    """Reset the per-process name counters Paddle writes into a saved program (``struct_name`` of each op:
    ``/ErnieMModel_1/`` on a second save in the same process), so two exports give identical files."""
    framework = paddle.base.framework
    saved = getattr(framework, "_name_struct", None)
    if saved is not None and hasattr(framework, "NameStruct"):
        framework._name_struct = framework.NameStruct()
    try:
        with paddle.utils.unique_name.guard():
            yield
    finally:
        if saved is not None:
            framework._name_struct = saved


@contextlib.contextmanager
def canonical_tensor_names(layer):
    """Name every parameter and buffer of ``layer`` by its structured name (``param:ernie.encoder...``) while
    saving, then restore the names. Paddle's own names (``linear_12.w_0``) count the layers created earlier in
    the process, and they are written into model.json and order model.pdiparams."""
    renamed, seen = [], set()
    for prefix, named in (("param:", layer.named_parameters()), ("buffer:", layer.named_buffers())):
        for n, t in named:
            if t is None or id(t) in seen:
                continue
            seen.add(id(t))
            renamed.append((t, t.name, prefix + n))
    try:
        for t, _, new in renamed:
            t.name = new
        yield
    finally:
        for t, old, _ in renamed:
            t.name = old


def save_static(layer, path_prefix: str, spec: list) -> None:
    """``paddle.jit.save`` with deterministic names. An input that does not reach the outputs (the
    multimodal ``fusion: baseline`` ignores ``attention_mask``) makes Paddle's pruning fail; the graph is
    then saved unpruned, so every variant keeps the task's full input list (unused ops are removed by the
    predictor's dead-code pass)."""
    try:
        with deterministic_names(), canonical_tensor_names(layer):
            paddle.jit.save(layer, path_prefix, input_spec=spec)
    except ValueError as e:
        if "is not involved in the target_vars calculation" not in str(e):
            raise
        log.info("%s: some inputs do not reach the outputs; saving the graph with all inputs kept",
                 os.path.basename(path_prefix))
        with deterministic_names(), canonical_tensor_names(layer):
            paddle.jit.save(layer, path_prefix, input_spec=spec, skip_prune_program=True)


def graph_output_shapes(model_file: str) -> list[list[int]] | None:
    """Static output shapes of a saved PIR graph (``-1`` = dynamic), read from the program alone (no
    parameters loaded); None when the file cannot be read this way (an old ``.pdmodel``)."""
    if not model_file.endswith(".json"):
        return None
    try:
        from paddle.base import core

        with paddle.pir_utils.IrGuard():
            prog = paddle.static.Program()
            core.deserialize_pir_program(model_file, prog, 1)
        return [[int(d) for d in op.operand_source(0).shape] for op in prog.global_block().ops
                if op.name() == "pd_op.fetch"]
    except Exception as e:  # the shapes are informative only; the dygraph ones are used instead
        log.debug("could not read the output shapes of %s: %s", model_file, e)
        return None


def _check_example(variant: str, spec: list, example: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = [s.name for s in spec]
    if any(not n for n in names):
        raise ExportError(f"variant {variant!r}: every InputSpec needs a name (got {names})")
    if len(set(names)) != len(names):
        raise ExportError(f"variant {variant!r}: duplicate InputSpec names {names}")
    missing = [n for n in names if n not in example]
    if missing:
        raise ExportError(f"variant {variant!r}: example inputs lack {missing} (have {sorted(example)})")
    out = {}
    for s in spec:
        declared = spec_entry(s)
        array = example[s.name]
        array = array.numpy() if isinstance(array, paddle.Tensor) else np.asarray(array)
        if str(array.dtype) != declared["dtype"]:
            raise ExportError(f"variant {variant!r}: example input {s.name!r} is {array.dtype}, its InputSpec says "
                              f"{declared['dtype']}")
        shape = declared["shape"]
        if array.ndim != len(shape) or any(d != -1 and d != n for d, n in zip(shape, array.shape, strict=True)):
            raise ExportError(f"variant {variant!r}: example input {s.name!r} has shape {list(array.shape)}, its "
                              f"InputSpec says {shape}")
        out[s.name] = np.ascontiguousarray(array)
    return out


# ---- the dygraph reference ---------------------------------------------------------------------
def dygraph_outputs(layer, spec: list, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Outputs of the dygraph ``layer`` in eval mode, inputs passed positionally in InputSpec order."""
    layer.eval()
    with paddle.no_grad():
        out = layer(*[paddle.to_tensor(inputs[s.name]) for s in spec])
    return flatten_outputs(out)


# ---- building -----------------------------------------------------------------------------------
def build_for_export(cfg, task=None, require_checkpoint: bool = True):
    """(task, model in eval mode) with the weights of ``Global.checkpoint`` loaded, after checking that the
    checkpoint was trained with the preprocessing the task finds."""
    from ..registry import get_task
    from .checkpoint import check_preprocessing, load_model_weights

    task = task or get_task(cfg["_family"])(cfg)
    model = task.build_model()
    checkpoint = cfg["Global"]["checkpoint"]
    if checkpoint:
        check_preprocessing(checkpoint, task.preprocessing_fingerprint())
        load_model_weights(model, checkpoint)
    elif require_checkpoint:
        raise ValueError("set the weights to export with -o Global.checkpoint=PATH (a checkpoint folder such as "
                         "<output_dir>/checkpoints/best, or a .safetensors / .pdparams file)")
    model.eval()
    return task, model


def export_variants_of(task, model) -> dict[str, tuple]:
    """``task.export_variants(model)`` checked: ``{name: (layer, input_spec, example_inputs)}``."""
    variants = task.export_variants(model)
    if not variants:
        raise ExportError(f"{type(task).__name__}.export_variants returned nothing to export")
    for name, v in variants.items():
        if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
            raise ExportError(f"export variant name {name!r}: use a plain file-name stem")
        if not (isinstance(v, (tuple, list)) and len(v) == 3):
            raise ExportError(f"export variant {name!r}: expected (layer, input_spec, example_inputs), got {type(v)}")
    return variants


# ---- the export -----------------------------------------------------------------------------------
@dataclass
class _Checks:
    """What the export checks, and how closely: ``onnx`` also converts and checks ONNX graphs."""
    onnx: bool
    threads: int
    check_onednn: bool
    parity_tol: float
    onnx_parity_tol: float
    precision: str = "fp32"


@dataclass
class _Variant:
    """One saved graph: its layer and inputs, its ``export.yaml`` entry, the dygraph outputs on the example
    (``refs``), the batches its parity is checked on and its part of the result."""
    name: str
    layer: Any
    spec: list
    example: dict[str, np.ndarray]
    entry: dict
    result: dict
    refs: list[np.ndarray] = field(default_factory=list)
    batches: list[tuple] = field(default_factory=list)


def _check_parity(what: str, variant: str, err: float, tol: float):
    if not err <= tol:  # also catches NaN
        raise ExportError(f"variant {variant!r}: {what} differs from the dygraph model by {err:.3g} relative "
                          f"(> {tol:g}); the export is not faithful")


def export_model(cfg, out_dir: str, onnx: bool = False, task=None, model=None, threads: int = 0,
                 check_onednn: bool = True, parity_tol: float = PARITY_TOL,
                 onnx_parity_tol: float = ONNX_PARITY_TOL, quantize: dict | None = None) -> dict:
    """Export every variant of the model of ``cfg`` into ``out_dir`` (see the module doc); return a result
    dict with ``parity_max_rel_err`` (and ``onnx_parity_max_rel_err``), the files and timings.

    ``quantize`` (opt-in int8, :mod:`paddle_models.engine.quantize`): a dict with ``method``,
    ``calibration_items`` (from the ``calibration_split``, default ``train``), ``agreement_items`` (from the
    ``agreement_split``, default the task's evaluation split, never the calibration one), ``min_agreement``
    and optionally ``calibration`` / ``heldout`` (lists of input batches given instead of split items). It
    implies ``onnx``; the int8 graph is written beside the fp32 files and the export fails when it misses
    the agreement gate.

    ``model``/``task`` may be given (already built, weights loaded); otherwise they are built from ``cfg``
    with ``Global.checkpoint``. The folder is written as ``<out_dir>.tmp`` and renamed into place only
    after every parity check passed."""
    t0 = time.time()
    out_dir = os.path.abspath(out_dir)
    _check_out_dir(out_dir)
    task, model = _task_and_model(cfg, task, model)
    restore_handlers()  # the imports of building the model (paddlenlp) may have replaced SIGTERM's handler
    checks = _Checks(onnx or bool(quantize), threads, check_onednn, parity_tol, onnx_parity_tol)
    tmp = new_temp_folder(out_dir)
    try:
        result = _export_into(cfg, task, model, tmp, checks)
        if quantize:
            result["quantization"] = _quantize_into(task, tmp, quantize, threads)
            result["variants"][QUANTIZED_VARIANT]["int8_file"] = result["quantization"]["file"]
        write_files_manifest(tmp)  # last: the sha256 of every file, checked when the folder is loaded
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_folder(tmp, out_dir)
    for v in result["variants"].values():
        for k in ("model_file", "params_file", "onnx_file", "int8_file"):
            if k in v:
                v[k] = os.path.join(out_dir, v[k])
    result.update({"out_dir": out_dir, "export_yaml": os.path.join(out_dir, EXPORT_META),
                   "seconds": round(time.time() - t0, 3)})
    return result


def _check_out_dir(out_dir: str) -> None:
    """``out_dir`` may be absent, empty or an earlier export (which the new one replaces); nothing else."""
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not os.path.isfile(os.path.join(out_dir, EXPORT_META)):
        raise ExportError(f"{out_dir}: exists, is not empty and is not an export folder; choose another --out")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ExportError(f"{out_dir}: exists and is not a folder; choose another --out")


def _task_and_model(cfg, task, model):
    """(task, model in eval mode): the given ones, or built from ``cfg`` with ``Global.checkpoint``."""
    if model is None:
        task, model = build_for_export(cfg, task)
    elif task is None:
        from ..registry import get_task

        task = get_task(cfg["_family"])(cfg)
    model.eval()
    return task, model


def _export_into(cfg, task, model, out_dir: str, checks: _Checks) -> dict:
    """Save every variant into ``out_dir`` with its config, example inputs and export.yaml, then check each
    one's parity (and convert it to ONNX); return the result dict (file names relative to ``out_dir``)."""
    meta = _base_metadata(cfg, task, out_dir)
    checks.precision = check_precision(cfg)  # the same check and spelling as training and eval
    if checks.precision != "fp32":
        meta["precision"] = checks.precision  # what predictors of this folder run by default (precision=None)
    dump_config(cfg, os.path.join(out_dir, CONFIG_FILE))
    variants = [_save_variant(name, *v, out_dir) for name, v in export_variants_of(task, model).items()]
    meta["variants"] = {v.name: v.entry for v in variants}
    for v in variants:  # outputs: names and shapes from the dygraph reference (the graph's fetch order)
        _describe_outputs(v, meta, out_dir)
    write_yaml(os.path.join(out_dir, EXPORT_META), meta)
    for v in variants:
        v.batches = _parity_batches(v)
        _check_paddle_inference(v, out_dir, checks)
        if checks.check_onednn:
            _check_onednn(v, out_dir, checks)
        if checks.onnx:
            _convert_and_check_onnx(v, out_dir, checks)
    if checks.onnx:
        write_yaml(os.path.join(out_dir, EXPORT_META), meta)
    return _export_result(cfg, meta, variants, checks)


def _base_metadata(cfg, task, out_dir: str) -> dict:
    """export.yaml without its variants: format, model, the weights' file and sha256, the family's part."""
    meta = {"format_version": FORMAT_VERSION, "family": cfg["_family"], "model": cfg["Arch"]["name"],
            "paddle_version": paddle.__version__, "config": "config.yaml"}
    checkpoint = cfg["Global"]["checkpoint"]
    if checkpoint:
        from .checkpoint import resolve_weights

        weights_path = resolve_weights(checkpoint)
        meta["checkpoint"] = {"path": os.path.abspath(weights_path), "sha256": file_sha256(weights_path)}
    meta.update(task.export_metadata(out_dir) or {})
    return meta


def _save_variant(name: str, layer, spec, example, out_dir: str) -> _Variant:
    """``paddle.jit.save`` of one variant and its example inputs (``example_<name>.npz``)."""
    spec = list(spec)
    example = _check_example(name, spec, example)
    layer.eval()
    t = time.time()
    save_static(layer, os.path.join(out_dir, name), spec)
    save_seconds = time.time() - t
    model_file, params_file = graph_files(out_dir, name)
    if not os.path.isfile(model_file):
        raise ExportError(f"variant {name!r}: paddle.jit.save wrote no {os.path.basename(model_file)}")
    save_npz(os.path.join(out_dir, f"example_{name}.npz"), example)
    entry = {"model_file": os.path.basename(model_file),
             "params_file": os.path.basename(params_file) if os.path.isfile(params_file) else None,
             "example": f"example_{name}.npz",
             "inputs": [spec_entry(s) for s in spec]}
    result = {"model_file": entry["model_file"], "save_seconds": round(save_seconds, 3)}
    if entry["params_file"]:
        result["params_file"] = entry["params_file"]
    return _Variant(name, layer, spec, example, entry, result)


def _describe_outputs(v: _Variant, meta: dict, out_dir: str) -> None:
    """The variant's outputs in its entry (name, dtype, shape: the saved graph's when it can be read and fits,
    else the dygraph one with a dynamic batch axis); keeps the dygraph outputs as the parity reference."""
    v.refs = dygraph_outputs(v.layer, v.spec, v.example)
    names = output_names(meta, v.name, len(v.refs))
    shapes = graph_output_shapes(os.path.join(out_dir, v.entry["model_file"]))
    if not shapes or len(shapes) != len(v.refs) or any(len(s) != r.ndim for s, r in zip(shapes, v.refs, strict=True)):
        shapes = [([-1] + [int(d) for d in r.shape[1:]]) if r.ndim else [] for r in v.refs]
    v.entry["outputs"] = [{"name": n, "dtype": str(r.dtype), "shape": s}
                          for n, r, s in zip(names, v.refs, shapes, strict=True)]


def _parity_batches(v: _Variant) -> list[tuple]:
    """``(what, inputs, dygraph outputs)``: the example batch, and its first sample alone when the batch axis
    is dynamic and the example holds more than one (a frozen batch dimension then shows)."""
    batches = [("example", v.example, v.refs)]
    dynamic_batch = all(s.shape[0] is None or int(s.shape[0]) < 0 for s in v.spec)
    if dynamic_batch and next(iter(v.example.values())).shape[0] > 1:
        one = first_sample(v.example)
        batches.append(("first sample", one, dygraph_outputs(v.layer, v.spec, one)))
    return batches


def _check_paddle_inference(v: _Variant, out_dir: str, checks: _Checks) -> None:
    """Paddle Inference with oneDNN off, in this process, against dygraph on every parity batch."""
    predictor = Predictor(out_dir, variant=v.name, threads=checks.threads, onednn="off", precision="fp32")
    err = 0.0
    for what, inputs, ref in v.batches:
        e = max_rel_err(predictor.run_list(inputs), ref)
        _check_parity(f"Paddle Inference on the {what} batch", v.name, e, checks.parity_tol)
        err = max(err, e)
    v.result["parity_max_rel_err"] = err


def _check_onednn(v: _Variant, out_dir: str, checks: _Checks) -> None:
    """Paddle Inference with oneDNN on, in a subprocess (a crash there must not take the export down); a
    oneDNN that fails here is recorded, not an error. bf16 exports also get their agreement measured."""
    probe = probe_onednn(out_dir, v.name, threads=checks.threads, inputs=[b[1] for b in v.batches])
    v.result["onednn"] = "ok" if probe["ok"] else "unavailable"
    if probe["ok"]:
        e = max(max_rel_err(o, b[2]) for o, b in zip(probe["outputs"], v.batches, strict=True))
        _check_parity("Paddle Inference with oneDNN", v.name, e, checks.parity_tol)
        v.result["onednn_parity_max_rel_err"] = e
    else:
        v.result["onednn_error"] = probe["error"]
        log.warning("variant %s: oneDNN is unusable for this graph on this machine (%s); predictors "
                    "will run without it", v.name, probe["error"])
    if checks.precision == "bf16":
        v.result.update(_bf16_agreement(out_dir, v.name, checks.threads, v.batches, probe["ok"]))


def _convert_and_check_onnx(v: _Variant, out_dir: str, checks: _Checks) -> None:
    """``<variant>.onnx`` converted from the saved graph; its inputs must be the InputSpec's and onnxruntime
    must agree with dygraph on every parity batch."""
    model_file = os.path.join(out_dir, v.entry["model_file"])
    params_file = os.path.join(out_dir, v.entry["params_file"]) if v.entry["params_file"] else ""
    onnx_file = os.path.join(out_dir, f"{v.name}.onnx")
    t = time.time()
    try:
        convert_onnx(model_file, params_file, onnx_file)
    except OnnxConversionError as e:
        raise ExportError(f"variant {v.name!r}: {e}") from None
    v.result["onnx_seconds"] = round(time.time() - t, 3)
    session = onnx_session(onnx_file, checks.threads)
    onnx_inputs = [i.name for i in session.get_inputs()]
    if sorted(onnx_inputs) != sorted(s.name for s in v.spec):
        raise ExportError(f"variant {v.name!r}: the ONNX graph's inputs {onnx_inputs} differ from the InputSpec "
                          f"{[s.name for s in v.spec]}")
    err = 0.0
    for what, inputs, ref in v.batches:
        e = max_rel_err(session.run(None, {k: inputs[k] for k in onnx_inputs}), ref)
        _check_parity(f"onnxruntime on the {what} batch", v.name, e, checks.onnx_parity_tol)
        err = max(err, e)
    v.result["onnx_file"] = os.path.basename(onnx_file)
    v.result["onnx_parity_max_rel_err"] = err
    v.entry["onnx_file"] = os.path.basename(onnx_file)


def _export_result(cfg, meta: dict, variants: list[_Variant], checks: _Checks) -> dict:
    """The result dict: per variant its files, timings and errors; the worst errors and their tolerances."""
    result = {"family": cfg["_family"], "model": cfg["Arch"]["name"],
              "variants": {v.name: v.result for v in variants}}
    result["parity_max_rel_err"] = max([0.0] + [v.result[k] for v in variants
                                                for k in ("parity_max_rel_err", "onednn_parity_max_rel_err")
                                                if k in v.result])
    result["parity_tolerance"] = checks.parity_tol
    if checks.onnx:
        result["onnx_parity_max_rel_err"] = max([0.0] + [v.result["onnx_parity_max_rel_err"] for v in variants])
        result["onnx_parity_tolerance"] = checks.onnx_parity_tol
    if "labels" in meta:
        result["labels"] = meta["labels"]
    return result


def _bf16_agreement(out_dir, name, threads, batches, onednn_ok) -> dict:
    """An export for ``Global.precision: bf16`` is not the fp32 function: instead of parity, report how far the
    bf16 predictor's outputs are from dygraph fp32 on the check batches (max relative error; and the share of
    rows whose argmax agrees, for 2-D outputs). The quality gate on real held-out data is the README's."""
    if not onednn_ok:
        raise ExportError(f"variant {name!r}: Global.precision: bf16 runs on oneDNN, and the oneDNN probe failed "
                          f"on this graph here; export with Global.precision: fp32")
    pred = Predictor(out_dir, variant=name, threads=threads, onednn="on", precision="bf16", fallback=False)
    err, agree, rows = 0.0, 0, 0
    for _, inputs, ref in batches:
        outs = pred.run_list(inputs)
        err = max(err, max_rel_err(outs, ref))
        if outs[0].ndim == 2 and outs[0].shape[1] > 1:
            agree += int((outs[0].argmax(1) == ref[0].argmax(1)).sum())
            rows += outs[0].shape[0]
    agreement = {"bf16_max_rel_err": err}
    if rows:
        agreement["bf16_argmax_agrees"] = agree / rows
    return agreement


# ---- int8 (opt-in) ----------------------------------------------------------------------------------------
def _quantize_into(task, out_dir: str, options: dict, threads: int) -> dict:
    """Quantize the ``model`` variant's ONNX graph in ``out_dir`` and record it in export.yaml (see
    :mod:`paddle_models.engine.quantize`); raise :class:`ExportError` when it fails the agreement gate."""
    from .artifact import read_export_meta
    from .quantize import DEFAULT_METHOD, INT8_SUFFIX, MIN_AGREEMENT, QuantizeError, quantize_and_check

    meta = read_export_meta(out_dir)
    if set(meta["variants"]) != {QUANTIZED_VARIANT}:
        raise ExportError(f"--quantize int8 covers exports of one graph named {QUANTIZED_VARIANT!r}; this task "
                          f"exports {sorted(meta['variants'])}")
    entry = meta["variants"][QUANTIZED_VARIANT]
    method = options.get("method") or DEFAULT_METHOD
    min_agreement = float(options.get("min_agreement", MIN_AGREEMENT))
    int8_file = f"{QUANTIZED_VARIANT}{INT8_SUFFIX}"
    try:
        calibration, heldout, splits = _quantization_batches(task, options, [s["name"] for s in entry["inputs"]])
        checked = quantize_and_check(os.path.join(out_dir, entry["onnx_file"]), os.path.join(out_dir, int8_file),
                                     calibration, heldout, method=method, min_agreement=min_agreement,
                                     threads=threads)
    except QuantizeError as e:
        raise ExportError(f"--quantize int8: {e}") from None
    facts = {"precision": "int8", "method": method, "engine": "onnxruntime", "file": int8_file,
             "calibration": {"split": splits[0], "items": checked["calibration_items"]},
             "agreement": {"split": splits[1], **checked["agreement"]}}
    entry["int8_file"] = int8_file
    meta["quantization"] = facts  # no timings in export.yaml: two exports of the same weights stay identical
    write_yaml(os.path.join(out_dir, EXPORT_META), meta)
    agreement = checked["agreement"]
    log.info("int8 (%s): same class as fp32 on %.2f%% of %d held-out items, max |prob diff| %.3g", method,
             100 * agreement["same_class_rate"], agreement["items"], agreement["max_prob_diff"])
    return {**facts, "seconds": checked["seconds"]}


def _quantization_batches(task, options: dict, input_names: list):
    """(calibration batches, held-out batches, (their split names or "given")): the batches given in
    ``options``, else items of the calibration split (default ``train``) and of the agreement split (default
    the task's evaluation split), which must differ."""
    from .quantize import AGREEMENT_ITEMS, CALIBRATION_ITEMS, split_batches

    calibration_split = options.get("calibration_split", "train")
    agreement_split = options.get("agreement_split") or task.default_eval_split()
    if options.get("heldout") is None and agreement_split == calibration_split:
        raise ExportError(f"the agreement split must differ from the calibration split ({calibration_split!r})")
    calibration, heldout = options.get("calibration"), options.get("heldout")
    splits = (calibration_split if calibration is None else "given", agreement_split if heldout is None else "given")
    if calibration is None:
        calibration = split_batches(task, calibration_split,
                                    int(options.get("calibration_items", CALIBRATION_ITEMS)), input_names)
    if heldout is None:
        heldout = split_batches(task, agreement_split, int(options.get("agreement_items", AGREEMENT_ITEMS)),
                                input_names)
    return calibration, heldout, splits
