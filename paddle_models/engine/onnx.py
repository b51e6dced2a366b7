"""ONNX: convert an exported Paddle graph with paddle2onnx, and open ONNX graphs with onnxruntime (CPU)."""
from __future__ import annotations

import os

ONNX_OPSET = 13


class OnnxConversionError(RuntimeError):
    """paddle2onnx could not convert a graph; the message names the file."""


def convert_onnx(model_file: str, params_file: str, onnx_file: str, opset: int = ONNX_OPSET) -> str:
    """paddle2onnx without its optimizer step (its default, polygraphy, pip-installs at run time)."""
    try:
        import paddle2onnx
    except ImportError as e:
        raise OnnxConversionError(f"--onnx needs paddle2onnx ({e})") from None
    if os.path.exists(onnx_file):
        os.remove(onnx_file)
    try:
        paddle2onnx.export(model_file, params_file, onnx_file, opset_version=opset, auto_upgrade_opset=True,
                           enable_onnx_checker=True, optimize_tool="None", verbose=False)
    except Exception as e:  # paddle2onnx logs the real cause and then fails on its own unset result
        raise OnnxConversionError(f"paddle2onnx could not convert {model_file} ({type(e).__name__}: {e}); its log "
                                  f"above names the unsupported operator") from None
    if not os.path.isfile(onnx_file) or os.path.getsize(onnx_file) == 0:
        raise OnnxConversionError(f"paddle2onnx wrote no {onnx_file}; its log above says why")
    return onnx_file


def onnx_session(onnx_file, threads: int = 0):
    """A CPU onnxruntime session on an ONNX file (or a serialized model's bytes); ``threads`` > 0 fixes the
    intra-op threads (and one inter-op thread)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads > 0:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    return ort.InferenceSession(onnx_file, sess_options=so, providers=["CPUExecutionProvider"])
