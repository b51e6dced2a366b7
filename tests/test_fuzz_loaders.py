"""Property tests of the weight loaders (``safe_pickle.safe_load``: the restricted unpickler for
``.pdparams`` / ``.pdopt``, and safetensors files): any bytes give a state dict or a named error
(``UnsafeModelFile`` / ``UnreadableModelFile``, their message naming the file), never code run, and memory
bounded by the file's size.

The pickles are programs: random calls of the admitted globals (arrays, dtypes, containers) with hostile
arguments, of globals that would run code, and random mutations of real ``paddle.save`` files."""
import io
import itertools
import json
import pickle
import struct
import tracemalloc

import numpy as np
import pytest
from fuzz_settings import DEEP, fuzz
from hypothesis import given
from hypothesis import strategies as st

from paddle_models.safe_pickle import UnreadableModelFile, UnsafeModelFile, safe_load

FAST = fuzz(150)
_names = itertools.count()
CANARY = "/tmp/paddle-models-fuzz-canary"  # a refused global that ran would create it

ADMITTED = [("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"), ("numpy", "ndarray"),
            ("numpy", "dtype"), ("builtins", "tuple"), ("builtins", "list"), ("builtins", "dict"), ("builtins", "set"),
            ("__builtin__", "frozenset"), ("builtins", "bytearray"), ("builtins", "complex"),
            ("collections", "OrderedDict"), ("_codecs", "encode")]
REFUSED = [("os", "system"), ("posix", "system"), ("builtins", "eval"), ("builtins", "exec"), ("builtins", "getattr"),
           ("subprocess", "Popen"), ("builtins", "__import__"), ("numpy", "load"), ("numpy.testing", "assert_"),
           ("paddle", "load"), ("builtins", "open"), ("pickle", "loads")]


# ---- a tiny pickle writer: expression trees -> protocol 2 opcodes ----------------------------------------
def emit(node) -> bytes:
    kind = node[0]
    if kind == "int":
        v = node[1]
        return b"J" + struct.pack("<i", v) if -2**31 <= v < 2**31 else b"\x8a" + _long(v)
    if kind == "float":
        return b"G" + struct.pack(">d", node[1])
    if kind == "str":
        data = node[1].encode("utf-8", "surrogatepass")
        return b"X" + struct.pack("<I", len(data)) + data
    if kind == "bytes":  # SHORT_BINBYTES is protocol 3; the hostile declared length of BINBYTES8 is protocol 4
        return b"C" + bytes([len(node[1])]) + node[1]
    if kind == "bigbytes":
        return b"\x8e" + struct.pack("<Q", node[1]) + node[2]
    if kind == "none":
        return b"N"
    if kind == "tuple":
        return b"(" + b"".join(emit(x) for x in node[1]) + b"t"
    if kind == "list":
        return b"]" + (b"(" + b"".join(emit(x) for x in node[1]) + b"e" if node[1] else b"")
    if kind == "dict":
        return b"}" + (b"(" + b"".join(emit(k) + emit(v) for k, v in node[1]) + b"u" if node[1] else b"")
    if kind == "call":
        (module, name), args = node[1], node[2]
        return b"c" + f"{module}\n{name}\n".encode() + emit(("tuple", args)) + b"R"
    if kind == "build":
        return emit(node[1]) + emit(node[2]) + b"b"
    raise AssertionError(kind)


def _long(v: int) -> bytes:
    data = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
    return bytes([len(data)]) + data


def program(tree) -> bytes:
    return b"\x80\x04" + emit(tree) + b"."


leaves = st.one_of(
    st.tuples(st.just("int"), st.one_of(st.integers(-5, 5), st.sampled_from([2**31 - 1, 2**40, 10**12, -2**63]))),
    st.tuples(st.just("float"), st.floats()), st.tuples(st.just("str"), st.text(max_size=8)),
    st.tuples(st.just("str"), st.sampled_from(["latin1", "utf-8", "f4", "<f8", "V1000000000", "O", "b", CANARY])),
    st.tuples(st.just("bytes"), st.binary(max_size=16)), st.just(("none",)),
    st.tuples(st.just("bigbytes"), st.sampled_from([2**31, 10**11, 2**62]), st.binary(max_size=4)))


def trees():
    def extend(inner):
        seq = st.lists(inner, max_size=4)
        return st.one_of(st.tuples(st.just("tuple"), seq), st.tuples(st.just("list"), seq),
                         st.tuples(st.just("dict"), st.lists(st.tuples(inner, inner), max_size=3)),
                         st.tuples(st.just("call"), st.sampled_from(ADMITTED), seq),
                         st.tuples(st.just("call"), st.sampled_from(REFUSED), seq),
                         st.tuples(st.just("build"), inner, inner))
    return st.recursive(leaves, extend, max_leaves=10)


def real_files():
    """paddle.save-like pickles of small state dicts (protocols 2 and 4), to be mutated."""
    state = {"w": np.arange(6, dtype="float32").reshape(2, 3), "b": np.zeros(3, "int64"), "step": 3}
    return [pickle.dumps(state, protocol=p) for p in (2, 4)] + [pickle.dumps([("x", np.ones(2))], protocol=2)]


mutations = st.tuples(st.sampled_from(real_files()), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)),
                                                             max_size=4), st.integers(0, 10**6))


def mutate(base: bytes, flips, cut) -> bytes:
    data = bytearray(base)
    for pos, value in flips:
        data[pos % len(data)] = value
    return bytes(data[: max(1, cut % (len(data) + 1))])


# ---- the property ------------------------------------------------------------------------------------------
def check_load(tmp_path_factory, data: bytes, suffix: str):
    """safe_load of ``data`` written as a file: a result or a named error (returned), no code run, memory
    bounded."""
    import os

    path = tmp_path_factory.getbasetemp() / f"fuzz_{next(_names)}{suffix}"
    path.write_bytes(data)
    tracemalloc.start()
    error = None
    try:
        safe_load(str(path))
    except (UnsafeModelFile, UnreadableModelFile) as e:
        assert str(e).startswith(f"{path}: "), str(e)
        error = e
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        path.unlink()
    assert peak <= 64 * len(data) + (16 << 20), f"{peak} bytes allocated for a file of {len(data)} bytes"
    assert not os.path.exists(CANARY)
    return error


@FAST
@given(trees())
def test_pickle_programs(tmp_path_factory, tree):
    check_load(tmp_path_factory, program(tree), ".pdparams")


@FAST
@given(mutations)
def test_mutated_state_dicts(tmp_path_factory, mutation):
    check_load(tmp_path_factory, mutate(*mutation), ".pdparams")


@FAST
@given(st.binary(max_size=300))
def test_any_bytes_as_a_pickle(tmp_path_factory, data):
    check_load(tmp_path_factory, data, ".pdopt")


def safetensors_files():
    """A safetensors header (tensors with any dtype, shape and offsets; a length that may lie) and data."""
    tensor = st.fixed_dictionaries({"dtype": st.sampled_from(["F32", "F64", "I64", "U8", "BOOL", "BF16", "X9", 3]),
                                    "shape": st.lists(st.integers(-1, 2**33), max_size=3),
                                    "data_offsets": st.lists(st.integers(-1, 2**40), min_size=0, max_size=3)})
    header = st.dictionaries(st.text(max_size=5), st.one_of(tensor, st.integers(), st.text(max_size=4)), max_size=3)
    return st.tuples(header, st.binary(max_size=64), st.one_of(st.none(), st.integers(0, 2**64 - 1)))


def safetensors_bytes(header, data, declared) -> bytes:
    text = json.dumps(header).encode()
    length = len(text) if declared is None else declared
    return struct.pack("<Q", length) + text + data


@FAST
@given(safetensors_files())
def test_safetensors_files(tmp_path_factory, spec):
    check_load(tmp_path_factory, safetensors_bytes(*spec), ".safetensors")


def test_a_good_file_still_loads_exactly(tmp_path):
    """The checks refuse nothing a state dict is made of: pickles of protocol 2 and 4, and safetensors."""
    from safetensors.numpy import save_file

    state = {"w": np.arange(6, dtype="float32").reshape(2, 3), "b": np.zeros(3, "int64")}
    for protocol in (2, 4):
        (tmp_path / f"s{protocol}.pdparams").write_bytes(pickle.dumps(state, protocol=protocol))
        got = safe_load(str(tmp_path / f"s{protocol}.pdparams"))
        assert set(got) == set(state) and all(np.array_equal(got[k], state[k]) for k in state)
    save_file(state, str(tmp_path / "s.safetensors"))
    got = safe_load(str(tmp_path / "s.safetensors"))
    assert all(np.array_equal(got[k], state[k]) for k in state)
    bytearray_state = {"raw": bytearray(b"\x00\x01")}
    (tmp_path / "ba.pdparams").write_bytes(pickle.dumps(bytearray_state, protocol=2))
    assert safe_load(str(tmp_path / "ba.pdparams")) == bytearray_state


@pytest.mark.parametrize("tree,words", [
    (("call", ("builtins", "bytearray"), [("int", 2**30)]), "bytearray"),
    (("call", ("numpy", "ndarray"), [("tuple", [("int", 10**5), ("int", 10**5)]), ("str", "f8")]), "numpy.ndarray"),
    (("call", ("numpy.core.multiarray", "_reconstruct"),
      [("call", ("numpy", "dtype"), [("str", "f8")]), ("tuple", [("int", 10**10)]), ("bytes", b"b")]), "_reconstruct"),
    (("bigbytes", 2**33, b"ab"), "expected 8589934592 bytes in a bytes8, but only"),
])
def test_allocation_bombs_are_refused_before_they_allocate(tmp_path_factory, tree, words):
    """A few bytes asking for gigabytes: bytearray(n), a direct numpy.ndarray(shape) call, _reconstruct of
    a huge shape, a BINBYTES8 whose declared length is far beyond the file's end."""
    error = check_load(tmp_path_factory, program(tree), ".pdparams")
    assert error is not None and words in str(error), error


@pytest.mark.slow
@DEEP
@given(st.one_of(trees().map(program), mutations.map(lambda m: mutate(*m)), st.binary(max_size=2000)))
def test_pickle_loader_deep(tmp_path_factory, data):
    check_load(tmp_path_factory, data, ".pdparams")


@pytest.mark.slow
@DEEP
@given(safetensors_files())
def test_safetensors_deep(tmp_path_factory, spec):
    check_load(tmp_path_factory, safetensors_bytes(*spec), ".safetensors")


def test_the_writer_makes_valid_pickles():
    """The test's own pickle writer, checked against pickle.loads on plain values."""
    tree = ("dict", [(("str", "a"), ("list", [("int", 1), ("float", 2.5), ("int", 2**40)])),
                     (("str", "b"), ("tuple", [("none",), ("bytes", b"xy")]))])
    assert pickle.load(io.BytesIO(program(tree))) == {"a": [1, 2.5, 2**40], "b": (None, b"xy")}
