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

export.yaml's ``files`` records the sha256 of every other file of the folder (written last, by
:func:`write_files_manifest`). :func:`read_export_meta` refuses a folder whose files differ from that
record (a file changed, missing, or added after export, each named) and any path export.yaml names that
leaves the folder (absolute elsewhere, ``..``, a symbolic link out: :func:`export_path`, which families use
for their own keys such as ``preprocess.tokenizer``). The folder itself may be a symbolic link. The hashes
guard against corruption and mix-ups (a partial copy, a file of another export), not against someone who
can also rewrite export.yaml. An export.yaml without ``files`` (written before it existed) loads unchecked.
``checkpoint.path`` records where the weights came from; it is never opened.

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
from ..paths import PathOutsideRoot, contained_path

EXPORT_META = "export.yaml"
CONFIG_FILE = "config.yaml"
FORMAT_VERSION = 1
FILES_KEY = "files"
VARIANT_FILE_KEYS = ("model_file", "params_file", "example", "onnx_file", "int8_file")


class ExportFolderError(ValueError):
    """export.yaml names a path that leaves the export folder, or a file of the folder differs from
    export.yaml's record of it; the message names the key or the file."""


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


_DIGESTS: dict[tuple, str] = {}


def cached_sha256(path: str) -> str:
    """:func:`file_sha256`, remembered per file version in this process (device, inode, size, mtime and
    ctime: any write changes the ctime), so loading an export again hashes nothing unchanged."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = file_sha256(path)
    return _DIGESTS[key]


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
    """The folder's ``export.yaml``, checked to be an export description this code understands, whose paths
    stay inside the folder and whose files are the ones recorded at export (:func:`check_export_files`)."""
    path = os.path.join(model_dir, EXPORT_META)
    if not os.path.isdir(model_dir):
        raise FileNotFoundError(f"{model_dir}: export folder not found")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{model_dir}: no {EXPORT_META} here (not an export folder; make one with "
                                f"tools/export.py -c CONFIG -o Global.checkpoint=CKPT --out DIR)")
    with open(path, encoding="utf-8") as f:
        meta = yaml.safe_load(f)
    if not isinstance(meta, dict) or not isinstance(meta.get("variants"), dict):
        raise ValueError(f"{path}: not an export description (no 'variants')")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {meta.get('format_version')} is newer than this code "
                         f"understands ({FORMAT_VERSION})")
    check_export_files(model_dir, meta)
    return meta


# ---- paths and file hashes of an export folder ----------------------------------------------------------
def export_path(model_dir: str, key: str, rel) -> str:
    """The file or folder that export.yaml's ``key`` (``variants.model.model_file``, ``preprocess.tokenizer``)
    names, inside ``model_dir``; :class:`ExportFolderError` naming the key when it leaves the folder."""
    try:
        return contained_path(model_dir, rel)
    except PathOutsideRoot as e:
        through = f" through a symbolic link (it resolves to {e.resolved})" if e.resolved else ""
        what = "is not a path" if e.reason.startswith(("not a path", "a NUL")) else "leaves the export folder"
        raise ExportFolderError(f"{os.path.join(model_dir, EXPORT_META)}: {key}: {rel!r} {what} "
                                f"{os.path.abspath(model_dir)}{through}") from None


def manifest_paths(meta: dict) -> list[tuple[str, str]]:
    """(key, path) of every path the engine reads from export.yaml: ``config`` and each variant's files."""
    out = [("config", meta["config"])] if meta.get("config") is not None else []
    for name, entry in sorted((meta.get("variants") or {}).items()):
        if not isinstance(entry, dict):
            raise ExportFolderError(f"{EXPORT_META}: variants.{name}: expected a mapping, got {entry!r}")
        out += [(f"variants.{name}.{k}", entry[k]) for k in VARIANT_FILE_KEYS if entry.get(k) is not None]
    return out


def folder_files(model_dir: str) -> list[str]:
    """Every file under ``model_dir`` but its export.yaml, as sorted ``/``-separated relative paths."""
    names = []
    for folder, dirs, files in os.walk(model_dir):
        dirs.sort()
        rel_folder = os.path.relpath(folder, model_dir)
        for name in files:
            rel = name if rel_folder == "." else os.path.join(rel_folder, name)
            names.append(rel.replace(os.sep, "/"))
    return sorted(n for n in names if n != EXPORT_META)


def files_manifest(model_dir: str) -> dict[str, str]:
    """``{relative path: sha256}`` of every file of the export folder but export.yaml."""
    return {rel: file_sha256(export_path(model_dir, f"{FILES_KEY}.{rel}", rel)) for rel in folder_files(model_dir)}


def write_files_manifest(model_dir: str) -> None:
    """Record :func:`files_manifest` under export.yaml's ``files`` (the last write of an export)."""
    path = os.path.join(model_dir, EXPORT_META)
    with open(path, encoding="utf-8") as f:
        meta = yaml.safe_load(f)
    meta[FILES_KEY] = files_manifest(model_dir)
    write_yaml(path, meta)


def check_export_files(model_dir: str, meta: dict) -> None:
    """Every path the engine reads stays inside the folder; with a ``files`` record, the folder holds exactly
    those files with those sha256 (:class:`ExportFolderError` naming the first that differs)."""
    for key, rel in manifest_paths(meta):
        export_path(model_dir, key, rel)
    recorded = meta.get(FILES_KEY)
    if recorded is None:
        return
    where = os.path.join(model_dir, EXPORT_META)
    if not isinstance(recorded, dict):
        raise ExportFolderError(f"{where}: {FILES_KEY}: expected a mapping of file -> sha256")
    present = set(folder_files(model_dir))
    for rel in sorted(present):
        if rel not in recorded:
            raise ExportFolderError(f"{os.path.join(model_dir, rel)}: not a file of this export (added after "
                                    f"export: {EXPORT_META}'s {FILES_KEY} does not list it); remove it or export again")
    for rel, digest in recorded.items():
        path = export_path(model_dir, f"{FILES_KEY}.{rel}", rel)
        if rel not in present:
            raise ExportFolderError(f"{path}: missing from the export folder ({EXPORT_META}'s {FILES_KEY} lists it)")
        if cached_sha256(path) != digest:
            raise ExportFolderError(f"{path}: its sha256 differs from the one {EXPORT_META} records (the file "
                                    f"changed after export); restore it or export again")


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
        h.update(cached_sha256(os.path.join(model_dir, n)).encode())
    return h.hexdigest()
