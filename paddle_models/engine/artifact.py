"""The export folder format, read by predictors and servers and written by the exporter.

An export folder holds, per *variant* (a named graph: ``model``, or the Transformer's ``encoder`` and
``decoder_step``, DSSM's towers):

``<variant>.json`` + ``<variant>.pdiparams``
    the static graph and its weights (``paddle.jit.save``; ``.pdmodel`` before Paddle 3's PIR).
``example_<variant>.npz``
    the example inputs of the export's parity check (the oneDNN probe replays them).
``<variant>.onnx``
    optional, from ``tools/export.py --onnx``.
``<variant>.int8.onnx``
    optional, from ``tools/export.py --quantize int8`` (the variant's ``int8_file``; export.yaml's
    ``quantization`` says how it was made and how well it agrees with fp32).

and once:

``export.yaml``
    ``format_version``, ``family``, ``model``, ``paddle_version``, the checkpoint's path and sha256, the
    family's ``labels`` and ``preprocess`` (``Task.export_metadata``), and per variant its files, inputs
    (name, shape with ``-1`` for dynamic dimensions, dtype) and outputs.
``config.yaml``
    the full training config.

Everything here is plain data: YAML (safe loader), npz without pickle, no code.
"""
from __future__ import annotations

import hashlib
import io
import os
import zipfile

import numpy as np
import yaml

from ..fileio import atomic_write

EXPORT_META = "export.yaml"
CONFIG_FILE = "config.yaml"
FORMAT_VERSION = 1


def to_builtin(x):
    """numpy scalars/arrays and tuples -> plain Python values (for JSON and YAML output)."""
    if isinstance(x, dict):
        return {str(k): to_builtin(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_builtin(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    return x


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---- npz without pickle, byte-stable ----------------------------------------------------------------
def save_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` with fixed zip timestamps (numpy stamps the current time: files would differ)."""
    with atomic_write(path, "wb") as f, zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())


def load_npz(path: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


# ---- export.yaml ---------------------------------------------------------------------------------------
def write_yaml(path: str, data: dict) -> None:
    with atomic_write(path) as f:
        yaml.safe_dump(to_builtin(data), f, sort_keys=False, allow_unicode=True, default_flow_style=None, width=100)


def read_export_meta(model_dir: str) -> dict:
    """The folder's ``export.yaml``, checked to be an export description this code understands."""
    path = os.path.join(model_dir, EXPORT_META)
    if not os.path.isdir(model_dir):
        raise FileNotFoundError(f"{model_dir}: export folder not found")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{model_dir}: no {EXPORT_META} here (not an export folder; make one with "
                                f"tools/export.py -c CONFIG -o Global.checkpoint=CKPT --out DIR)")
    with open(path, encoding="utf-8") as f:
        meta = yaml.safe_load(f)
    if not isinstance(meta, dict) or "variants" not in meta:
        raise ValueError(f"{path}: not an export description (no 'variants')")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {meta.get('format_version')} is newer than this code "
                         f"understands ({FORMAT_VERSION})")
    return meta


def graph_files(out_dir: str, variant: str) -> tuple:
    """(model file, params file) of a saved variant: ``.json`` under PIR (Paddle 3), else ``.pdmodel``."""
    js = os.path.join(out_dir, f"{variant}.json")
    pd = os.path.join(out_dir, f"{variant}.pdmodel")
    return (js if os.path.isfile(js) or not os.path.isfile(pd) else pd), os.path.join(out_dir, f"{variant}.pdiparams")


def spec_entry(spec) -> dict:
    """An ``InputSpec`` as export.yaml writes it: name, shape (``-1`` = dynamic), dtype name."""
    import paddle

    shape = [-1 if (d is None or int(d) < 0) else int(d) for d in spec.shape]
    dtype = spec.dtype if isinstance(spec.dtype, str) else paddle.base.data_feeder.convert_dtype(spec.dtype)
    return {"name": spec.name, "shape": shape, "dtype": str(dtype).replace("paddle.", "")}


def output_names(meta: dict, variant: str, n: int) -> list[str]:
    """``output_<i>``, except a whole model's single output named by its family (multimodal: ``logits``)."""
    pre = meta.get("preprocess") or {}
    if n == 1 and variant == "model" and pre.get("output"):
        return [str(pre["output"])]
    return [f"output_{i}" for i in range(n)]


def default_variant(meta: dict, variant: str | None = None) -> str:
    """``variant`` if given, else ``model`` (or the only variant)."""
    variants = meta["variants"]
    if variant is None:
        variant = "model" if "model" in variants or len(variants) != 1 else next(iter(variants))
    return variant


def version_hash(model_dir: str) -> str:
    """sha256 over export.yaml and every graph, weights and ONNX file it lists (in a fixed order): two
    folders with the same hash serve the same function."""
    meta = read_export_meta(model_dir)
    h = hashlib.sha256()
    names = [EXPORT_META]
    for v in sorted(meta["variants"]):
        e = meta["variants"][v]
        names += [e[k] for k in ("model_file", "params_file", "onnx_file", "int8_file") if e.get(k)]
    for n in names:
        h.update(n.encode())
        h.update(file_sha256(os.path.join(model_dir, n)).encode())
    return h.hexdigest()
