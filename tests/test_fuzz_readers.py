"""Property tests of the multimodal readers (JSONL, MR2 dataset_items, MVSA): any file gives one record per
item, every record usable (its text valid Unicode, its label in range, its paths inside the data root), or
a DataError naming the file; never another exception, never an item dropped without a word."""
import itertools
import json
import os

import pytest
from fuzz_settings import DEEP, fuzz
from hypothesis import given
from hypothesis import strategies as st

from paddle_models.multimodal.images import DataError
from paddle_models.multimodal.readers import read_jsonl, read_mr2_items, read_mvsa

LABELS = ["negative", "neutral", "positive"]
_names = itertools.count()
FAST = fuzz(200)  # the readers are quick: more examples than the default in the default suite

# JSON values a careless or hostile file holds: any text (lone surrogates included, as "\ud800" escapes),
# numbers of every kind (NaN and infinities as Python's json writes them), nesting
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 2**70), st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=12), st.sampled_from(["a.png", "../x.png", "/etc/passwd", "", "sub/../a.png",
                                                           "positive", "neutral"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                            max_size=3), max_leaves=6)
texts = st.one_of(st.text(max_size=20), st.sampled_from(["x\ud800y", "\udfff", " ", "ok text"]))
# texts of records that are otherwise valid: any characters (surrogates too), never blank
full_texts = st.one_of(st.text(st.characters(codec=None), min_size=1, max_size=20).filter(str.strip),
                       st.sampled_from(["x\ud800y", "\udfff z", "ok text"]))
label_values = st.one_of(st.sampled_from(LABELS + [0, 1, 2, 3, -1, True, 1.0, None, "Positive"]), values)
images = st.one_of(st.sampled_from(["a.png", "sub/b.png", "../a.png", "/etc/hosts", "link/x.png", "", None,
                                    "x\ud800.png", "a\x00.png"]), values)


good_images = st.sampled_from(["a.png", "sub/b.png", "sub/../a.png", "x\ud800.png", "link/../a.png"])


def jsonl_records():
    """Records near the valid ones (text, image and label right, the rest varied) and anything at all."""
    fields = {"id": st.one_of(st.integers(0, 5), st.text(max_size=3), values), "text": texts, "image": images,
              "label": label_values, "evidence_texts": st.one_of(st.lists(texts, max_size=2), values),
              "evidence_images": st.one_of(st.lists(images, max_size=2), values), "junk": values}
    near = st.fixed_dictionaries({"text": full_texts, "image": good_images, "label": st.sampled_from(LABELS)},
                                 optional={"evidence_texts": st.lists(full_texts, max_size=2),
                                           "evidence_images": st.lists(good_images, max_size=2)})
    return st.one_of(near, near, st.fixed_dictionaries({}, optional=fields))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A data root with two images and a symbolic link that leads out of it."""
    root = tmp_path_factory.mktemp("fuzz_root")
    (root / "sub").mkdir()
    (root / "a.png").write_bytes(b"not read by the readers")
    (root / "sub" / "b.png").write_bytes(b"not read by the readers")
    os.symlink(tmp_path_factory.getbasetemp(), root / "link")
    return root


def write(root, suffix: str, content: bytes):
    path = root / f"input_{next(_names)}{suffix}"
    path.write_bytes(content)
    return path


def check(read, path, root, expected: int):
    """``read()`` gives ``expected`` usable records, or a DataError whose message starts with the file."""
    try:
        records = read()
    except DataError as e:
        assert str(e).startswith(str(path)), str(e)
        return None
    assert len(records) == expected
    for r in records:
        r.text.encode("utf-8")  # valid Unicode: a tokenizer can take it
        assert -1 <= r.label < len(LABELS)
        for rel in [r.image, *r.evidence_images, r.direct_path, r.inv_path]:
            if rel is not None:
                full = os.path.realpath(os.path.abspath(os.path.join(root, rel)))  # as safe_join opens it
                assert os.path.commonpath([full, os.path.realpath(root)]) == os.path.realpath(root)
    return records


def jsonl_bytes(records, raw_lines, ensure_ascii):
    lines = [json.dumps(r, ensure_ascii=ensure_ascii).encode("utf-8", "surrogatepass") for r in records]
    lines += raw_lines
    return b"\n".join(lines) + b"\n", sum(1 for line in lines if line.strip())


def _jsonl(root, records, raw_lines, ensure_ascii, need_image):
    content, nonblank = jsonl_bytes(records, raw_lines, ensure_ascii)
    path = write(root, ".jsonl", content)
    check(lambda: read_jsonl(str(path), str(root), LABELS, need_image=need_image), path, root, nonblank)


raw_line = st.one_of(st.binary(max_size=30), st.sampled_from([b"[1]", b"{", b"\xff\xfe", b"   ", b'{"text": 1}',
                                                               b"[" * 5000 + b"]" * 5000, b'{"a": NaN}']))
raw_lines = st.one_of(st.just([]), st.lists(raw_line, min_size=1, max_size=2))  # a bad line fails the file: rarely


@FAST
@given(st.lists(jsonl_records(), max_size=4), raw_lines, st.booleans(), st.booleans())
def test_jsonl_reader(root, records, raw_lines, ensure_ascii, need_image):
    _jsonl(root, records, raw_lines, ensure_ascii, need_image)


@pytest.mark.slow
@DEEP
@given(st.lists(jsonl_records(), max_size=8), raw_lines, st.booleans(), st.booleans())
def test_jsonl_reader_deep(root, records, raw_lines, ensure_ascii, need_image):
    _jsonl(root, records, raw_lines, ensure_ascii, need_image)


def mr2_items():
    fields = {"caption": texts, "image_path": images, "label": label_values,
              "direct_path": st.one_of(st.sampled_from(["sub", "../..", "link"]), values),
              "inv_path": st.one_of(st.sampled_from(["sub", "/tmp"]), values)}
    near = st.fixed_dictionaries({"caption": full_texts, "image_path": good_images,
                                  "label": st.sampled_from([0, 1, 2])}, optional={"direct_path": st.just("sub")})
    return st.one_of(near, near, st.fixed_dictionaries({}, optional=fields), values)


def mr2_document():
    """An MR2 dataset_items file as text (item keys may repeat: a JSON object may spell a key twice)."""
    return st.lists(st.tuples(st.sampled_from(["0", "1", "2", "x", "\ud800"]), mr2_items()), max_size=4)


def _mr2(root, pairs, ensure_ascii):
    body = ", ".join(f"{json.dumps(k, ensure_ascii=ensure_ascii)}: {json.dumps(v, ensure_ascii=ensure_ascii)}"
                     for k, v in pairs)
    path = write(root, ".json", ("{" + body + "}").encode("utf-8", "surrogatepass"))
    check(lambda: read_mr2_items(str(path), str(root), LABELS), path, root, len(pairs))


@FAST
@given(mr2_document(), st.booleans())
def test_mr2_reader(root, pairs, ensure_ascii):
    _mr2(root, pairs, ensure_ascii)


@pytest.mark.slow
@DEEP
@given(mr2_document(), st.booleans())
def test_mr2_reader_deep(root, pairs, ensure_ascii):
    _mr2(root, pairs, ensure_ascii)


def mvsa_records():
    fields = {"id": st.one_of(st.integers(0, 4), st.text(max_size=3), values), "text": texts,
              "emotion_label": st.one_of(st.integers(-1, 3), values)}
    near = st.fixed_dictionaries({"id": st.integers(0, 10**6), "text": full_texts,
                                  "emotion_label": st.integers(0, 2)})
    return st.one_of(near, near, st.fixed_dictionaries({}, optional=fields), values)


def _mvsa(root, items, image_dir, ensure_ascii):
    path = write(root, ".json", json.dumps(items, ensure_ascii=ensure_ascii).encode("utf-8", "surrogatepass"))
    check(lambda: read_mvsa(str(path), str(root), LABELS, image_dir=image_dir), path, root, len(items))


@FAST
@given(st.lists(mvsa_records(), max_size=4), st.sampled_from(["", "sub", "..", "link", "/etc"]), st.booleans())
def test_mvsa_reader(root, items, image_dir, ensure_ascii):
    _mvsa(root, items, image_dir, ensure_ascii)


@pytest.mark.slow
@DEEP
@given(st.lists(mvsa_records(), max_size=8), st.sampled_from(["", "sub", "..", "link", "/etc"]), st.booleans())
def test_mvsa_reader_deep(root, items, image_dir, ensure_ascii):
    _mvsa(root, items, image_dir, ensure_ascii)


@FAST
@given(st.binary(max_size=200))
def test_any_bytes_as_each_layout(root, data):
    for suffix, read in ((".jsonl", read_jsonl), (".json", read_mr2_items), (".json", read_mvsa)):
        path = write(root, suffix, data)
        try:
            read(str(path), str(root), LABELS)
        except DataError as e:
            assert str(e).startswith(str(path)), str(e)
