"""safetensors files read and written with numpy only, bfloat16 included.

``load_safetensors(path)`` gives what ``safetensors.numpy.load_file`` gives, as read-only views of the
memory-mapped file (no copy), ``BF16`` tensors included (numpy has no such type: ``ml_dtypes.bfloat16``).
``save_safetensors(arrays, path)`` streams the arrays into the format (an 8-byte little-endian header length,
the JSON header naming each tensor's dtype, shape and byte range, then the bytes), written atomically with
``fileio.atomic_write``: no copy of the whole file is built in memory.
"""
from __future__ import annotations

import json
import os
import struct


def numpy_dtype(name: str):
    """``numpy.dtype(name)``; ``bfloat16`` is ``ml_dtypes.bfloat16``."""
    import numpy as np

    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def _safetensors_header(path: str) -> tuple[dict, int]:
    """The JSON header of a safetensors file and where its data starts."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
        (length,) = struct.unpack("<Q", head)
        if length > os.path.getsize(path) - 8:
            raise ValueError(f"{path}: not a safetensors file (header length {length} past the end of the file)")
        return json.loads(f.read(length)), 8 + length


#: safetensors dtype names -> numpy dtypes (``BF16`` is added as ``ml_dtypes.bfloat16`` when needed)
SAFETENSORS_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
                      "I8": "i1", "U8": "u1", "BOOL": "?"}


def load_safetensors(path: str) -> dict:
    """Arrays of a safetensors file, as read-only views of the file memory-mapped (nothing is read until
    used), bfloat16 as ``ml_dtypes.bfloat16`` (``safetensors.numpy`` has no numpy type for it). Each tensor's
    byte range is checked to lie in the file and to hold its shape."""
    import mmap

    import numpy as np

    header, start = _safetensors_header(path)
    dtypes = {**SAFETENSORS_DTYPES, "BF16": numpy_dtype("bfloat16")}
    size = os.path.getsize(path) - start
    with open(path, "rb") as f:
        data = memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))[start:] if size else b""
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info.get("dtype") not in dtypes:
            raise ValueError(f"{path}: tensor {name!r}: dtype {info.get('dtype')} is not supported")
        dtype = np.dtype(dtypes[info["dtype"]])
        begin, end = info["data_offsets"]
        count = int(np.prod(info["shape"], dtype=np.int64))
        if not 0 <= begin <= end <= size or end - begin != count * dtype.itemsize:
            raise ValueError(f"{path}: tensor {name!r}: bytes {begin}..{end} do not hold shape {info['shape']} "
                             f"of {info['dtype']} inside the file's {size} data bytes")
        out[name] = np.frombuffer(data, dtype=dtype, count=count, offset=begin).reshape(info["shape"])
    return out


def save_safetensors(arrays: dict, path: str, metadata: dict | None = None) -> str:
    """Write ``arrays`` (name -> numpy array) to ``path`` as a safetensors file; returns ``path``."""
    import numpy as np

    from .fileio import atomic_write

    names = {np.dtype(v).str: k for k, v in SAFETENSORS_DTYPES.items()}
    header, offset, ordered = ({"__metadata__": dict(metadata)} if metadata else {}), 0, []
    for name, value in arrays.items():
        array = np.ascontiguousarray(value)
        code = "BF16" if array.dtype.name == "bfloat16" else names.get(array.dtype.newbyteorder("<").str)
        if code is None:
            raise ValueError(f"{path}: tensor {name!r}: dtype {array.dtype} has no safetensors name")
        header[name] = {"dtype": code, "shape": list(array.shape), "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
        ordered.append(array.astype(array.dtype.newbyteorder("<"), copy=False))
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    with atomic_write(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for array in ordered:
            f.write(memoryview(array.reshape(-1).view(np.uint8)))
    return path
