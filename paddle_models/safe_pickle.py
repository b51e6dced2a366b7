"""Opening pickled Paddle state dicts (``.pdparams``, ``.pdopt``) without running code from the file.

A pickle names the callables that rebuild its objects, and ``pickle.load`` imports and calls whatever
it names: a ``.pdparams`` whose ``__reduce__`` returns ``(os.system, ("...",))`` runs that command when
opened with ``paddle.load``. ``RestrictedUnpickler`` looks up every name through ``find_class`` and
admits only what a Paddle state dict is made of; any other name is refused before anything is called,
with ``UnsafeModelFile`` naming the file and the global.

Admitted (``admitted_globals()``):

* numpy arrays: ``numpy.core.multiarray._reconstruct`` (allocates an empty array), ``numpy.ndarray``
  (the class it allocates; the data then comes from ``ndarray.__setstate__``), ``numpy.dtype``;
  numpy scalars: ``numpy.core.multiarray.scalar`` (a scalar from a dtype and its raw bytes). numpy 2
  pickles spell the same functions ``numpy._core.multiarray``; both spellings map to the installed
  numpy's functions. Arrays of dtype ``object`` are refused after loading (a state dict holds numbers).
* builtin containers and scalars a pickle may build through a call: ``tuple`` (``paddle.save`` writes a
  tensor nested in a non-state-dict object as ``tuple((name, ndarray))``), ``list``, ``dict``, ``set``,
  ``frozenset``, ``bytearray``, ``complex`` (protocol 2 writes sets and complex numbers this way), each
  also under its Python 2 module name ``__builtin__``; ``collections.OrderedDict``.
* ``_codecs.encode``: protocol 2 writes ``bytes`` (an array's raw data among them) as
  ``_codecs.encode(text, "latin1")``. Only that call is admitted: a stand-in accepts a ``str`` and the
  ``latin1`` codec and returns the bytes; any other argument is refused.

``load_rng_pickle`` additionally admits ``paddle.base.libpaddle.GeneratorState`` for the ``rng.pkl``
of old checkpoints: a stand-in records the state the file gives (three ints and a list of ints) and
never constructs the Paddle object; the caller validates and applies it.

Bounded memory: before unpickling, the opcodes are read once (``pickletools.genops``, every read cut at
the file's end), so a length a pickle declares beyond the end is an error, not an allocation; the admitted
callables that take a size are guarded: ``bytearray`` only rebuilds bytes (from a ``str`` and the latin-1
codec, or from bytes), ``numpy.ndarray`` is never called directly, and ``_reconstruct`` only makes the empty
array ``ndarray.__setstate__`` then fills (a shape of at most one element). Anything that does not unpickle
raises ``UnreadableModelFile`` naming the file.

``safe_load(path)`` returns what ``paddle.load(path, return_numpy=True)`` returns for a state dict or an
optimizer state (big arrays split by ``paddle.save`` under ``UnpackBigParamInfor@@`` are joined again,
the ``StructuredToParameterName@@`` table is dropped, ``(name, ndarray)`` tensor tuples become arrays);
a safetensors file (by its ``.safetensors`` name, or by its header: ``paddle.save(..., safetensors=True)``
keeps whatever name it is given) is read with ``safetensors.numpy``.
"""
from __future__ import annotations

import io
import os
import pickle

_PACKED = "UnpackBigParamInfor@@"  # paddle.save's key for arrays split into slices (its spelling)
_NAME_TABLE = "StructuredToParameterName@@"


class UnsafeModelFile(ValueError):
    """A model/state file references a global that a state dict never needs; nothing from it was run."""


class UnreadableModelFile(ValueError):
    """A model/state file is not a readable pickle or safetensors file (truncated, corrupt, not one at all);
    the message names the file and what failed."""


def _refusal(path, what: str) -> UnsafeModelFile:
    return UnsafeModelFile(f"{path}: refuses to load: the file references {what} "
                           "(only arrays and plain containers are allowed)")


def _numpy_globals() -> dict:
    import collections

    import numpy as np

    try:  # numpy >= 2
        from numpy._core import multiarray as ma
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray as ma
    out = {}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out[(mod, "_reconstruct")] = ma._reconstruct
        out[(mod, "scalar")] = ma.scalar
    out[("numpy", "ndarray")] = np.ndarray
    out[("numpy", "dtype")] = np.dtype
    for name, obj in (("tuple", tuple), ("list", list), ("dict", dict), ("set", set), ("frozenset", frozenset),
                      ("bytearray", bytearray), ("complex", complex)):
        out[("builtins", name)] = obj
        out[("__builtin__", name)] = obj  # the module's name in Python 2 pickles
    out[("collections", "OrderedDict")] = collections.OrderedDict
    return out


_ADMITTED = None


def admitted_globals() -> dict:
    """(module, name) -> the object a restricted load returns for it (``_codecs.encode`` is added per load)."""
    global _ADMITTED
    if _ADMITTED is None:
        _ADMITTED = _numpy_globals()
    return dict(_ADMITTED)


class GeneratorStateRecord:
    """Stand-in for ``paddle.base.libpaddle.GeneratorState`` in an old ``rng.pkl``: keeps the pickled state."""

    state = None

    def __setstate__(self, state):
        self.state = state


class _NotCalled:
    """What ``find_class("numpy", "ndarray")`` gives: the class as ``_reconstruct``'s argument (a pickled
    array names it so), refused when a pickle calls it (``ndarray(shape)`` allocates the shape)."""

    def __init__(self, name: str):
        self.name = name

    def __call__(self, *args, **kwargs):
        raise _refusal(self.name, "a direct call of numpy.ndarray")


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose ``find_class`` admits only ``admitted_globals()`` (plus ``extra``), with the
    size-taking callables guarded (see the module doc)."""

    def __init__(self, file, name: str, extra: dict | None = None):
        super().__init__(file, encoding="latin1")
        self.name = name
        self.admitted = admitted_globals()
        self._ndarray = _NotCalled(name)
        self._reconstruct = self.admitted[("numpy.core.multiarray", "_reconstruct")]
        self.admitted[("_codecs", "encode")] = self._latin1_bytes
        self.admitted[("numpy", "ndarray")] = self._ndarray
        for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
            self.admitted[(mod, "_reconstruct")] = self._empty_array
        for mod in ("builtins", "__builtin__"):
            self.admitted[(mod, "bytearray")] = self._bytearray
        self.admitted.update(extra or {})

    def find_class(self, module, name):
        obj = self.admitted.get((module, name))
        if obj is None:
            raise _refusal(self.name, f"{module}.{name}")
        return obj

    def persistent_load(self, pid):
        raise _refusal(self.name, f"a persistent object id ({str(pid)[:60]!r})")

    def _latin1_bytes(self, text, encoding="utf-8", errors="strict"):
        if not isinstance(text, str) or str(encoding).lower().replace("-", "") != "latin1" or errors != "strict":
            raise _refusal(self.name, f"_codecs.encode with the codec {encoding!r}")
        return text.encode("latin1")

    def _bytearray(self, source=b"", encoding=None):
        if isinstance(source, str) and encoding is not None:
            return bytearray(self._latin1_bytes(source, encoding))
        if isinstance(source, (bytes, bytearray)) and encoding is None:
            return bytearray(source)
        raise _refusal(self.name, f"bytearray of a {type(source).__name__} (it rebuilds bytes, nothing else)")

    def _empty_array(self, cls, shape, dtype):
        import numpy as np

        size = np.prod(shape, dtype=object) if isinstance(shape, tuple) else None
        if cls is not self._ndarray or size is None or not 0 <= size <= 1:
            raise _refusal(self.name, f"numpy _reconstruct of {type(cls).__name__} with the shape {shape!r} (a "
                                      f"pickled array rebuilds an empty one)")
        return self._reconstruct(np.ndarray, shape, dtype)


class _BoundedReader:
    """A binary file whose reads stop at its end (``read(n)`` of a huge ``n`` allocates nothing)."""

    def __init__(self, file, size: int):
        self.file, self.left = file, size

    def read(self, n: int = -1) -> bytes:
        data = self.file.read(self.left if n < 0 else min(n, self.left))
        self.left -= len(data)
        return data

    def readline(self) -> bytes:
        line = self.file.readline(self.left)
        self.left -= len(line)
        return line


def _unpickle(file, name: str, extra: dict | None = None):
    """The object of the pickle in ``file`` (a seekable binary file): its opcodes read once first, every
    declared length checked against the end; UnreadableModelFile for anything that does not unpickle."""
    import pickletools

    size = file.seek(0, io.SEEK_END)
    try:
        file.seek(0)
        for _ in pickletools.genops(_BoundedReader(file, size)):
            pass
        file.seek(0)
        return RestrictedUnpickler(file, name, extra).load()
    except UnsafeModelFile:
        raise
    except Exception as e:  # truncated, corrupt, not a pickle, a call with wrong arguments, nesting too deep
        raise UnreadableModelFile(f"{name}: not a readable pickle ({type(e).__name__}: {str(e)[:200]})") from None


def restricted_loads(data: bytes, name: str, extra: dict | None = None):
    """Unpickle ``data`` through ``RestrictedUnpickler``; ``name`` is the file named in errors."""
    return _unpickle(io.BytesIO(data), name, extra)


def _join_packed(obj):
    """Join arrays that ``paddle.save`` split into slices (protocol 2/3, > 1 GiB each)."""
    import numpy as np

    if isinstance(obj, dict) and _PACKED in obj:
        info = obj.pop(_PACKED)
        for key, meta in info.items():
            parts = [obj.pop(p) for p in meta["slices"]]
            obj[key] = np.concatenate(parts).reshape(meta["OriginShape"])
    return obj


def _is_tensor_tuple(v) -> bool:
    import numpy as np

    return type(v) is tuple and len(v) == 2 and isinstance(v[0], str) and isinstance(v[1], np.ndarray)


def _tensor_tuples_to_arrays(obj):
    """``(name, ndarray)`` tuples (how ``paddle.save`` writes a tensor outside a flat state dict) -> arrays."""
    if _is_tensor_tuple(obj):
        return obj[1]
    if isinstance(obj, dict):
        for k in list(obj):
            obj[k] = _tensor_tuples_to_arrays(obj[k])
        return obj
    if type(obj) is list:
        return [_tensor_tuples_to_arrays(v) for v in obj]
    if type(obj) in (tuple, set):
        return type(obj)(_tensor_tuples_to_arrays(v) for v in obj)
    return obj


def _contains_tensor_tuple(obj) -> bool:
    if _is_tensor_tuple(obj):
        return True
    if isinstance(obj, dict):
        return any(_contains_tensor_tuple(v) for v in obj.values())
    if type(obj) in (list, tuple, set):
        return any(_contains_tensor_tuple(v) for v in obj)
    return False


def _check_no_object_arrays(obj, name: str):
    import numpy as np

    if isinstance(obj, np.ndarray) or isinstance(obj, np.generic):
        if obj.dtype.hasobject:
            raise UnsafeModelFile(f"{name}: refuses to load: an array of Python objects (dtype {obj.dtype}); "
                                  "a state dict holds numeric arrays only")
    elif isinstance(obj, dict):
        for v in obj.values():
            _check_no_object_arrays(v, name)
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for v in obj:
            _check_no_object_arrays(v, name)


def is_safetensors(path: str) -> bool:
    """Whether ``path`` is a safetensors file: named ``.safetensors``, or starting with the format's header
    (an 8-byte little-endian length, then the JSON header's ``{``)."""
    if path.endswith(".safetensors"):
        return True
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and head[5:8] == b"\0\0\0" and head[0] != 0x80


def safe_load(path: str):
    """Read a Paddle state dict / optimizer state like ``paddle.load(path, return_numpy=True)``, without
    running code from the file. A safetensors file (``is_safetensors``) is read with ``safetensors.numpy``.
    Raises ``UnsafeModelFile`` for a pickle that references anything beyond arrays and plain containers."""
    path = os.fspath(path)
    if is_safetensors(path):
        from safetensors.numpy import load_file

        try:
            return load_file(path)
        except Exception as e:  # safetensors' own error names no file
            raise UnreadableModelFile(f"{path}: not a readable safetensors file ({type(e).__name__}: "
                                      f"{str(e)[:200]})") from None
    with open(path, "rb") as f:
        obj = _unpickle(f, path)
    _check_no_object_arrays(obj, path)
    if isinstance(obj, dict):
        obj = _join_packed(obj)
        if _NAME_TABLE in obj:  # a flat state dict: every tensor was written as a bare ndarray
            del obj[_NAME_TABLE]
            return obj
    if _contains_tensor_tuple(obj):
        obj = _tensor_tuples_to_arrays(obj)
    return obj


def load_rng_pickle(path: str):
    """Unpickle an old checkpoint's ``rng.pkl`` ({"python": ..., "numpy": ..., "paddle": [GeneratorState]})
    admitting, beyond arrays and containers, only Paddle's generator state, which is returned as
    ``GeneratorStateRecord`` objects (their ``state`` attribute holds what the file gives)."""
    record = type("GeneratorStateRecord", (GeneratorStateRecord,), {})  # a fresh class: a load cannot alter the next
    extra = {("paddle.base.libpaddle", "GeneratorState"): record, ("paddle.fluid.libpaddle", "GeneratorState"): record}
    with open(path, "rb") as f:
        obj = _unpickle(f, path, extra)
    _check_no_object_arrays(obj, path)
    return obj
