"""safetensors files read and written with numpy only, bfloat16 included.

``load_safetensors(path)`` is ``safetensors.numpy.load_file``, except that a file holding ``BF16`` tensors
(which numpy has no type for) is read by hand, bfloat16 as ``ml_dtypes.bfloat16``. ``save_safetensors(arrays,
path)`` streams the arrays into the format (an 8-byte little-endian header length, the JSON header naming each
tensor's dtype, shape and byte range, then the bytes), written atomically with ``fileio.atomic_write``:
no copy of the whole file is built in memory.
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
    """Arrays of a safetensors file: ``safetensors.numpy.load_file``, except that a file holding ``BF16``
    tensors is read by hand (``safetensors.numpy`` has no numpy type for them): each tensor from its byte
    range, bfloat16 as ``ml_dtypes.bfloat16``."""
    from safetensors.numpy import load_file

    header, start = _safetensors_header(path)
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    if not any(v.get("dtype") == "BF16" for v in tensors.values()):
        return load_file(path)
    import numpy as np

    dtypes = {**SAFETENSORS_DTYPES, "BF16": numpy_dtype("bfloat16")}
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read()
    out = {}
    for name, info in tensors.items():
        if info["dtype"] not in dtypes:
            raise ValueError(f"{path}: tensor {name!r}: dtype {info['dtype']} is not supported")
        dtype = np.dtype(dtypes[info["dtype"]])
        begin, end = info["data_offsets"]
        out[name] = np.frombuffer(data, dtype=dtype, count=(end - begin) // dtype.itemsize,
                                  offset=begin).reshape(info["shape"])
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
