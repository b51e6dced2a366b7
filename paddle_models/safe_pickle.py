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
keeps whatever name it is given) is read by ``paddle_models.safetensors_io.load_safetensors`` (``BF16``
tensors, which numpy has no type for, as ``ml_dtypes.bfloat16``).

PyTorch files (``torch.save``'s zip format: ``.pth``, ``.pt``, ``pytorch_model.bin``) are read without torch
by ``load_torch``: the archive holds ``<name>/data.pkl`` (the pickled object), ``<name>/data/<key>`` (one raw
storage per key) and ``<name>/byteorder``. ``TorchUnpickler`` admits, beyond the globals above, only what a
state dict of plain tensors is pickled with:

* ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])`` and
  ``torch._utils._rebuild_parameter(tensor, requires_grad, hooks)``: stand-ins return a numpy view of the
  storage with that offset, shape and stride (checked to stay inside the storage; empty hooks only);
* the storage types of plain dtypes, ``torch.FloatStorage`` ... ``torch.BoolStorage`` (``TORCH_STORAGE_DTYPES``;
  ``BFloat16Storage`` as ``ml_dtypes.bfloat16``), named by the pickle's persistent ids
  ``("storage", type, key, location, numel)``; each storage is read once from ``data/<key>``.

Anything else is refused with ``UnsafeModelFile`` naming the file and the global. PyTorch's legacy format
(before 1.6: a bare pickle stream), TorchScript archives and other files get a ``ValueError`` naming the file.
"""
from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile

from .safetensors_io import load_safetensors, numpy_dtype

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


def _named_failure(load, path: str, kind: str):
    """``load(path)``; a failure that does not name the file yet (safetensors' or zipfile's own errors on a
    damaged file) becomes UnreadableModelFile naming it."""
    try:
        return load(path)
    except (UnsafeModelFile, UnreadableModelFile):
        raise
    except Exception as e:  # a damaged header or archive: ValueError, KeyError, TypeError, zipfile.BadZipFile, ...
        message = str(e) if isinstance(e, ValueError) and path in str(e) else \
            f"{path}: not a readable {kind} ({type(e).__name__}: {str(e)[:200]})"
        raise UnreadableModelFile(message) from None


def safe_load(path: str):
    """Read a Paddle state dict / optimizer state like ``paddle.load(path, return_numpy=True)``, without
    running code from the file. A safetensors file (``is_safetensors``) is read by ``load_safetensors``, a
    zip archive by ``load_torch`` (PyTorch's format). Raises ``UnsafeModelFile`` for a pickle that references
    anything beyond arrays, plain containers (and, in a PyTorch file, plain tensors)."""
    path = os.fspath(path)
    if is_safetensors(path):
        return _named_failure(load_safetensors, path, "safetensors file")
    if zipfile.is_zipfile(path):
        return _named_failure(load_torch, path, "PyTorch file")
    _refuse_legacy_torch(path)
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


# ---- PyTorch's zip format --------------------------------------------------------------------
#: ``torch.<name>`` storage types admitted in a PyTorch file, and the numpy dtype of their elements
TORCH_STORAGE_DTYPES = {"DoubleStorage": "float64", "FloatStorage": "float32", "HalfStorage": "float16",
                        "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
                        "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool"}
#: how every pickle of ``torch.save`` before PyTorch 1.6 starts: protocol 2, then the magic number as a long
_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"


class TorchStorageType:
    """What a PyTorch file's ``torch.<X>Storage`` global is read as: the name and the element dtype."""

    def __init__(self, name: str):
        self.name, self.dtype = name, numpy_dtype(TORCH_STORAGE_DTYPES[name])


class _Storage:
    """One storage read from ``data/<key>``: a flat read-only numpy array."""

    def __init__(self, array):
        self.array = array


def _sizes(xs) -> bool:
    return type(xs) is tuple and all(type(x) is int and x >= 0 for x in xs)


def _strided(storage: _Storage, offset, size, stride, where: str):
    """The numpy array a tensor of ``storage`` is (a view when it is contiguous, else a copy)."""
    import numpy as np

    if type(offset) is not int or offset < 0 or not _sizes(size) or not _sizes(stride) or len(size) != len(stride):
        raise ValueError(f"{where}: a tensor with offset {offset!r}, size {size!r}, stride {stride!r}")
    flat = storage.array
    if 0 in size:
        return np.zeros(size, dtype=flat.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if last >= flat.size:
        raise ValueError(f"{where}: a tensor of size {size} and stride {stride} at offset {offset} reaches "
                         f"element {last} of a storage of {flat.size}")
    item = flat.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(flat[offset:], shape=size, strides=[s * item for s in stride],
                                           writeable=False)
    return view if view.flags.c_contiguous else np.ascontiguousarray(view)


class TorchUnpickler(RestrictedUnpickler):
    """``RestrictedUnpickler`` plus the rebuild functions and storage types of plain PyTorch tensors; the
    storages come from ``archive`` (``<prefix>/data/<key>``) in the byte order ``byteorder``."""

    def __init__(self, file, name: str, archive: zipfile.ZipFile, prefix: str, byteorder: str, mapped):
        extra = {("torch._utils", "_rebuild_tensor_v2"): self._rebuild_tensor,
                 ("torch._utils", "_rebuild_parameter"): self._rebuild_parameter}
        extra.update({("torch", k): TorchStorageType(k) for k in TORCH_STORAGE_DTYPES})
        super().__init__(file, name, extra)
        self.archive, self.prefix, self.byteorder, self.mapped = archive, prefix, byteorder, mapped
        self.storages: dict[str, _Storage] = {}

    def persistent_load(self, pid):
        ok = (type(pid) is tuple and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], TorchStorageType)
              and type(pid[2]) is str and type(pid[4]) is int)
        if not ok:
            raise _refusal(self.name, f"a persistent object id other than a storage ({str(pid)[:60]!r})")
        _, storage_type, key, _location, numel = pid
        if key not in self.storages:
            self.storages[key] = _Storage(self._read_storage(storage_type, key, numel))
        return self.storages[key]

    def _read_storage(self, storage_type: TorchStorageType, key: str, numel: int):
        import numpy as np

        entry = f"{self.prefix}/data/{key}"
        try:
            data = _entry_bytes(self.archive, entry, self.mapped)
        except KeyError:
            raise ValueError(f"{self.name}: storage {key!r} is named by data.pkl but {entry} is not in the archive") \
                from None
        dtype = storage_type.dtype.newbyteorder("<" if self.byteorder == "little" else ">")
        if len(data) != numel * dtype.itemsize:
            raise ValueError(f"{self.name}: {entry} has {len(data)} bytes, not the {numel} x {dtype.itemsize} "
                             f"of a {storage_type.name} of {numel} elements")
        array = np.frombuffer(data, dtype=dtype)
        return array if dtype.isnative else array.astype(dtype.newbyteorder("="))

    def _rebuild_tensor(self, storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                        metadata=None):
        if not isinstance(storage, _Storage):
            raise _refusal(self.name, "torch._utils._rebuild_tensor_v2 on something other than a storage")
        self._check_hooks(backward_hooks)
        return _strided(storage, storage_offset, size, stride, self.name)

    def _rebuild_parameter(self, data, requires_grad=False, backward_hooks=None):
        import numpy as np

        if not isinstance(data, np.ndarray):
            raise _refusal(self.name, "torch._utils._rebuild_parameter on something other than a tensor")
        self._check_hooks(backward_hooks)
        return data

    def _check_hooks(self, hooks):
        if hooks:  # an OrderedDict of hooks would need the hook functions: nothing a state dict holds
            raise _refusal(self.name, "tensor backward hooks")


def _entry_bytes(archive: zipfile.ZipFile, name: str, mapped):
    """The bytes of an archive entry: for an uncompressed entry (torch.save stores storages uncompressed) a
    read-only view of ``mapped`` (the file, memory-mapped: nothing is read until used), else the decompressed
    bytes."""
    info = archive.getinfo(name)
    if info.compress_type != zipfile.ZIP_STORED or info.file_size == 0:
        return archive.read(name)
    archive.fp.seek(info.header_offset)
    local = archive.fp.read(30)  # the local file header: its name and extra field lengths are at bytes 26..30
    name_length, extra_length = struct.unpack("<HH", local[26:30])
    start = info.header_offset + 30 + name_length + extra_length
    return memoryview(mapped)[start:start + info.file_size]


def _torch_prefix(archive: zipfile.ZipFile, path: str) -> str:
    """The archive's top folder (``<prefix>/data.pkl``); TorchScript archives and other zips are refused."""
    names = archive.namelist()
    pickles = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
    if len(pickles) == 1:
        return pickles[0][: -len("/data.pkl")]
    if any(n.endswith("/constants.pkl") for n in names):
        raise ValueError(f"{path}: a TorchScript archive (torch.jit.save), not a state dict; save the model's "
                         "state_dict() with torch.save instead")
    raise ValueError(f"{path}: a zip archive but not a PyTorch checkpoint (no <name>/data.pkl in it)")


def _refuse_legacy_torch(path: str) -> None:
    with open(path, "rb") as f:
        head = f.read(len(_TORCH_LEGACY_MAGIC))
    if head == _TORCH_LEGACY_MAGIC:
        raise UnreadableModelFile(
            f"{path}: PyTorch's legacy format (torch.save before PyTorch 1.6, or with "
            "_use_new_zipfile_serialization=False) is not read; load it once with torch and save it "
            "again with torch.save (the zip format) or as safetensors")


def load_torch(path: str):
    """What ``torch.load(path, weights_only=True)`` returns for a checkpoint of plain tensors, with numpy
    arrays for the tensors, without torch and without running code from the file (see the module doc)."""
    path = os.fspath(path)
    if not zipfile.is_zipfile(path):
        _refuse_legacy_torch(path)
        raise ValueError(f"{path}: not a PyTorch checkpoint (torch.save's zip format)")
    import mmap

    with open(path, "rb") as raw:
        mapped = mmap.mmap(raw.fileno(), 0, access=mmap.ACCESS_READ)
    with zipfile.ZipFile(path) as archive:
        prefix = _torch_prefix(archive, path)
        try:
            byteorder = archive.read(f"{prefix}/byteorder").decode().strip()
        except KeyError:  # files written before the byteorder record are little-endian
            byteorder = "little"
        if byteorder not in ("little", "big"):
            raise ValueError(f"{path}: {prefix}/byteorder says {byteorder!r} (expected little or big)")
        with archive.open(f"{prefix}/data.pkl") as f:
            unpickler = TorchUnpickler(io.BytesIO(f.read()), path, archive, prefix, byteorder, mapped)
        try:
            obj = unpickler.load()
        except TypeError as e:  # an admitted rebuild function called with arguments it does not take
            raise ValueError(f"{path}: {prefix}/data.pkl rebuilds a tensor with unexpected arguments ({e})") from None
    _check_no_object_arrays(obj, path)
    return obj
