"""int8 post-training quantization of an exported graph, with an agreement gate (opt-in at export:
``tools/export.py --quantize int8``).

The export's fp32 ONNX graph (``<variant>.onnx``, parity-checked against dygraph) is quantized with
``onnxruntime.quantization`` into ``<variant>.int8.onnx`` beside it; the fp32 files stay (they are the
reference of the gate, and ``--precision fp32`` still runs them). Methods:

``onnx-static`` (default)
    static quantization: weights int8 per output channel (symmetric), activations uint8 with ranges
    calibrated (min/max) on training items; Conv, Gemm and the MatMuls with a constant weight become
    onnxruntime's integer operators (``QLinearConv``, ``QLinearMatMul``: VNNI on CPUs that have it);
    attention products of two activations stay fp32.
``onnx-static-qdq``
    the same quantization written as QuantizeLinear / DequantizeLinear pairs around fp32 operators (QDQ
    format), which onnxruntime fuses into integer kernels where it can: the portable format, slower here
    (README, "int8").
``onnx-dynamic``
    dynamic quantization: MatMul / Gemm weights int8 per tensor, activation ranges computed per call; no
    calibration data needed (the convolutions stay fp32).

Paddle Inference's own int8 path (oneDNN) is not offered: in Paddle 3.3.1 ``PostTrainingQuantization``
loads only the old ProgramDesc format (``paddle.jit.save`` writes PIR, and saving the old format fails
on this model), and the dygraph ``paddle.quantization.PTQ`` model cannot be saved with a dynamic batch
dimension (README, "int8").

**The agreement gate.** The int8 graph and the fp32 graph run the held-out items (another split than the
calibration items); the export fails unless they give the same class on at least ``min_agreement`` of
them (default 0.99). The class is the argmax of a ``[N, C]`` output (``C >= 2``), or probability > 0.5 of a
single-column output (a sigmoid is applied first when the values are not in [0, 1]). The largest absolute
difference of the class probabilities is reported with the rate.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Sequence

import numpy as np

METHODS = ("onnx-static", "onnx-static-qdq", "onnx-dynamic")
DEFAULT_METHOD = "onnx-static"
MIN_AGREEMENT = 0.99
CALIBRATION_ITEMS = 64  # items of the calibration split the static methods calibrate on
AGREEMENT_ITEMS = 1000  # held-out items the int8 graph must agree with fp32 on
INT8_SUFFIX = ".int8.onnx"


class QuantizeError(RuntimeError):
    """Quantization failed or its graph disagrees with fp32 (the message names the rate and threshold)."""


# ---- classes and agreement ----------------------------------------------------------------------------
def class_probabilities(out: np.ndarray) -> np.ndarray:
    """An output as class probabilities ``[N, C]``: softmax over the last axis of a ``[N, C]`` output with
    ``C >= 2``; a single-column output ``[N]`` / ``[N, 1]`` is P(class 1) (sigmoid first unless every value is
    in [0, 1]) and becomes ``[1 - p, p]``."""
    a = np.asarray(out, dtype=np.float64)
    if a.ndim >= 2 and a.shape[-1] >= 2:
        a = a.reshape(-1, a.shape[-1])
        z = a - a.max(axis=-1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=-1, keepdims=True)
    p = a.reshape(a.shape[0] if a.ndim else 1, -1)[:, 0]
    if p.size and (p.min() < 0.0 or p.max() > 1.0):
        p = 1.0 / (1.0 + np.exp(-p))
    return np.stack([1.0 - p, p], axis=-1)


def agreement(reference: Sequence[np.ndarray], quantized: Sequence[np.ndarray]) -> dict:
    """Compare the first output of each batch: ``items``, ``same_class`` (count), ``same_class_rate`` and
    ``max_prob_diff`` (largest |p_int8 - p_fp32| over items and classes)."""
    same = total = 0
    worst = 0.0
    for r, q in zip(reference, quantized, strict=True):
        pr, pq = class_probabilities(r), class_probabilities(q)
        if pr.shape != pq.shape:
            raise QuantizeError(f"the int8 output has shape {pq.shape}, the fp32 one {pr.shape}")
        same += int(np.sum(pr.argmax(-1) == pq.argmax(-1)))
        total += pr.shape[0]
        d = float(np.max(np.abs(pr - pq))) if pr.size else 0.0
        worst = max(worst, d if np.isfinite(d) else float("inf"))
    return {"items": total, "same_class": same, "same_class_rate": (same / total) if total else 0.0,
            "max_prob_diff": worst}


def check_agreement(result: dict, min_agreement: float, where: str = "") -> None:
    """Raise :class:`QuantizeError` unless ``same_class_rate >= min_agreement`` on at least one item."""
    pre = f"{where}: " if where else ""
    if result["items"] == 0:
        raise QuantizeError(f"{pre}no held-out items to check the int8 graph on")
    rate = result["same_class_rate"]
    if not rate >= min_agreement:
        raise QuantizeError(
            f"{pre}the int8 graph gives the fp32 graph's class on {rate:.2%} of {result['items']} held-out items "
            f"({result['same_class']}), below the agreement threshold {min_agreement:.2%} (max |prob diff| "
            f"{result['max_prob_diff']:.3g}); export without --quantize, calibrate on more items "
            f"(--calibration-items) or try --quantize-method onnx-dynamic")


# ---- quantizing an ONNX graph ---------------------------------------------------------------------------
def _reader(batches: list[dict[str, np.ndarray]]):
    from onnxruntime.quantization import CalibrationDataReader

    class _Batches(CalibrationDataReader):
        def __init__(self):
            self._it = iter(batches)

        def get_next(self):
            return next(self._it, None)

        def rewind(self):
            self._it = iter(batches)

    return _Batches()


def quantize_onnx(onnx_file: str, out_file: str, method: str = DEFAULT_METHOD,
                  calibration: Iterable[dict[str, np.ndarray]] | None = None) -> dict:
    """Write the int8 graph of ``onnx_file`` to ``out_file``; ``calibration``: input batches (dicts of arrays
    named as the graph's inputs; required by ``onnx-static``). Returns ``method``, ``calibration_batches``,
    ``seconds`` and the file size."""
    if method not in METHODS:
        raise QuantizeError(f"quantize method {method!r} is not one of {', '.join(METHODS)}")
    try:
        from onnxruntime.quantization import (
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_dynamic,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as e:
        raise QuantizeError(f"int8 quantization needs onnxruntime's quantization tools ({e})") from None
    t0 = time.time()
    batches = [dict(b) for b in calibration] if calibration is not None else []
    static = method.startswith("onnx-static")
    if static and not batches:
        raise QuantizeError(f"{method} quantization needs calibration batches")
    work = tempfile.mkdtemp(prefix="int8_", dir=os.path.dirname(os.path.abspath(out_file)))
    try:
        pre = os.path.join(work, "pre.onnx")
        # shape inference + graph cleanup (symbolic shape inference would need sympy: skipped)
        quant_pre_process(onnx_file, pre, skip_symbolic_shape=True)
        tmp_out = os.path.join(work, "out.onnx")
        if static:
            fmt = QuantFormat.QDQ if method == "onnx-static-qdq" else QuantFormat.QOperator
            quantize_static(pre, tmp_out, _reader(batches), quant_format=fmt, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=["Conv", "MatMul", "Gemm"],
                            calibrate_method=CalibrationMethod.MinMax,
                            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False,
                                           "MatMulConstBOnly": True})
        else:
            quantize_dynamic(pre, tmp_out, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
        os.replace(tmp_out, out_file)
    except QuantizeError:
        raise
    except Exception as e:
        raise QuantizeError(f"onnxruntime could not quantize {onnx_file} ({method}): {type(e).__name__}: "
                            f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"method": method, "calibration_batches": len(batches), "seconds": round(time.time() - t0, 3),
            "bytes": os.path.getsize(out_file)}


def run_session(sess, batches: Iterable[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """The first output of an onnxruntime session on each batch."""
    names = [i.name for i in sess.get_inputs()]
    return [sess.run(None, {k: b[k] for k in names})[0] for b in batches]


def quantize_and_check(onnx_file: str, out_file: str, calibration: list[dict[str, np.ndarray]],
                       heldout: list[dict[str, np.ndarray]], method: str = DEFAULT_METHOD,
                       min_agreement: float = MIN_AGREEMENT, threads: int = 0) -> dict:
    """:func:`quantize_onnx`, then the agreement gate of the int8 graph against ``onnx_file`` on ``heldout``
    batches. On failure ``out_file`` is removed and :class:`QuantizeError` raised. Returns the quantization
    facts with ``agreement`` (items, same_class_rate, max_prob_diff, threshold)."""
    from .onnx import onnx_session

    static = method.startswith("onnx-static")
    res = quantize_onnx(onnx_file, out_file, method, calibration if static else None)
    res["calibration_items"] = int(sum(next(iter(b.values())).shape[0] for b in calibration)) if static else 0
    try:
        ref = run_session(onnx_session(onnx_file, threads), heldout)
        got = run_session(onnx_session(out_file, threads), heldout)
        agr = agreement(ref, got)
        agr["threshold"] = float(min_agreement)
        res["agreement"] = agr
        check_agreement(agr, min_agreement, where=os.path.basename(out_file))
    except BaseException:
        if os.path.exists(out_file):
            os.remove(out_file)
        raise
    return res


# ---- items from a task's splits -------------------------------------------------------------------------
def split_batches(task, split: str, items: int, input_names: Sequence[str], batch_size: int = 8,
                  skip: int = 0) -> list[dict[str, np.ndarray]]:
    """Up to ``items`` items of ``task.dataset(split)`` (after the first ``skip``), in order, collated by the
    task's collate of that split into batches of at most ``batch_size``, reduced to ``input_names``."""
    ds = task.dataset(split)
    collate = task.collate_fn(split)
    if hasattr(ds, "__len__") and hasattr(ds, "__getitem__"):
        n = max(0, min(int(items), len(ds) - skip))
        samples = (ds[i] for i in range(skip, skip + n))
    else:  # an iterable dataset
        import itertools

        samples = itertools.islice(iter(ds), skip, skip + int(items))
    out, chunk = [], []

    def flush():
        if not chunk:
            return
        b = collate(list(chunk)) if collate is not None else _stack(chunk)
        missing = [k for k in input_names if k not in b]
        if missing:
            raise QuantizeError(f"the {split} split's collated batch lacks the graph inputs {missing}")
        out.append({k: np.ascontiguousarray(b[k].numpy() if hasattr(b[k], "numpy") else np.asarray(b[k]))
                    for k in input_names})
        chunk.clear()

    for s in samples:
        chunk.append(s)
        if len(chunk) == batch_size:
            flush()
    flush()
    return out


def _stack(samples: list) -> dict[str, np.ndarray]:
    return {k: np.stack([np.asarray(s[k]) for s in samples]) for k in samples[0]}
