"""Bad input on the recommender data paths: every bad byte, cell, index or request value gives an error naming
the file and the line (and the token or field), or the config key; a bad validation record is reported
before the run writes anything; one request record's values never change its neighbours' encodings or
probabilities. Property tests (hypothesis) feed arbitrary bytes to the libfm and CSV readers."""
import gzip
import math
import re

import numpy as np
import paddle
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from paddle_models.config import load_config
from paddle_models.engine.trainer import Trainer
from paddle_models.rec import readers as R
from paddle_models.rec import serving
from paddle_models.rec.features import FeatureError, FeatureMap, Table, parse_feature
from paddle_models.registry import build_model, get_task

#: bounded example counts (each example reads a small file; the suite runs on 2 cores); no example database, so
#: a run depends on nothing a previous run left behind
PROPERTY = settings(max_examples=60, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
INT64_MAX = 2 ** 63 - 1


def write(tmp_path, name, data: bytes | str):
    p = tmp_path / name
    p.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return str(p)


def read_error(fmt, path, data_cfg=None) -> str:
    with pytest.raises(FeatureError) as e:
        R.read_table(fmt, path, data_cfg or {})
    return str(e.value)


# ---------------------------------------------------------------------------------------------- 1. libfm indices
def test_libfm_index_beyond_int64_names_file_line_and_token(tmp_path):
    path = write(tmp_path, "big.libfm", f"1 0:1 5:1\n-1 {10 ** 30}:1 6:1\n")
    msg = read_error("libfm", path)
    assert msg.startswith(f"{path}: line 2: field 'f0' (token 1): index '{10 ** 30}' is out of range (0 .. 2^63-1)")


def test_libfm_index_near_int64_max_keeps_its_field(tmp_path):
    """Indices up to 2^63-1 are read; the field check does not wrap (it did for index * fields + position)."""
    big = 2 ** 63 // 10 + 5
    line = " ".join(f"{i}:1" for i in range(9))
    path = write(tmp_path, "near.libfm", f"1 {line} {big}:1\n-1 {line} {INT64_MAX}:1\n")
    t = R.read_table("libfm", path, {})
    assert t.columns["f9"].tolist() == [big, INT64_MAX] and t.label.tolist() == [1.0, 0.0]
    path = write(tmp_path, "moved.libfm", f"1 {line} {big}:1\n-1 {big}:1 {line[4:]} 9:1\n")
    msg = read_error("libfm", path)
    assert msg.startswith(f"{path}: line 2: field 'f0': index {big} was in field 'f9' on line 1")


# ---------------------------------------------------------------------------------------------- 2. bytes and gzip
@pytest.mark.parametrize("fmt,body,line", [
    ("libfm", b"1 0:1 5:1\n-1 1:1 6:1\xff\n", 2),
    ("criteo", b"label,I1,C1\n0,3,a\n1,4,b\xc3\n", 3),
    ("slot", b"click:0 dense_feature:0.1 1:5\nclick:1 dense_feature:0.2 1:\xfe6\n", 2),
])
def test_non_utf8_byte_names_file_and_line(tmp_path, fmt, body, line):
    path = write(tmp_path, f"bad.{fmt}", body)
    assert read_error(fmt, path).startswith(f"{path}: line {line}: not valid UTF-8")
    gz = write(tmp_path, f"bad.{fmt}.gz", gzip.compress(body))
    assert read_error(fmt, gz).startswith(f"{gz}: line {line}: not valid UTF-8")


def test_non_utf8_in_atomic_file(tmp_path):
    path = write(tmp_path, "x.inter", b"user_id:token\titem_id:token\n1\t2\n3\t\x80\n")
    with pytest.raises(FeatureError, match=re.escape(f"{path}: line 3: not valid UTF-8")):
        R.read_atomic(path)


def test_damaged_gzip_names_file_and_line(tmp_path):
    body = "".join(f"{i % 2} {i % 7}:1 {10 + i % 5}:1\n" for i in range(30000)).encode()
    packed = gzip.compress(body)
    cut = write(tmp_path, "cut.libfm.gz", packed[: len(packed) // 2])
    msg = read_error("libfm", cut)
    assert re.match(rf"{re.escape(cut)}: line \d+: the gzip data is damaged or cut short", msg), msg
    garbage = write(tmp_path, "garbage.libfm.gz", b"\x1f\x8b" + b"not a deflate stream" * 4)
    assert read_error("libfm", garbage).startswith(f"{garbage}: line 1: the gzip data is damaged")


# ---------------------------------------------------------------------------------------------- 3. huge CSV cell
def test_huge_csv_cell_names_file_and_line(tmp_path):
    path = write(tmp_path, "huge.csv", "label,I1,C1\n0,3,a\n1,4," + "x" * (10 << 20) + "\n0,5,c\n")
    msg = read_error("criteo", path)
    assert msg.startswith(f"{path}: line 3: ") and "field larger than field limit" in msg
    assert len(msg) < 500  # the cell is not echoed


def test_csv_lines_are_numbered_by_the_file(tmp_path):
    """A stray carriage return inside a line is a named error; line numbers count the file's lines."""
    path = write(tmp_path, "cr.csv", "label,I1,C1\n0,3,a\n1,4,b\rc\n")
    assert read_error("criteo", path).startswith(f"{path}: line 3: ")
    path = write(tmp_path, "crlf.csv", "label,I1,C1\r\n0,3,a\r\n\r\n1,4\r\n")
    assert read_error("criteo", path).startswith(f"{path}: line 4: expected 3 fields")


# ---------------------------------------------------------------------------------------------- 4. every split first
def criteo_csv(path, n, seed, bad_line=None, bad_cell=""):
    rng = np.random.RandomState(seed)
    lines = ["label,I1,I2,C1,C2"]
    for i in range(n):
        i1 = bad_cell if bad_line == i + 2 else str(rng.randint(0, 50))
        lines.append(f"{rng.randint(0, 2)},{i1},{rng.randint(0, 9)},{'abcdef'[rng.randint(6)]},u{rng.randint(20)}")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def rec_run_cfg(tmp_path, **data):
    return load_config(data={
        "Arch": {"name": "lr"}, "Data": {"format": "criteo", **data},
        "Global": {"epochs": 1, "batch_size": 32, "output_dir": str(tmp_path / "run"), "progress": False,
                   "num_threads": 1},
        "Optimizer": {"lr": 0.05}})


def written(folder) -> list[str]:
    """The files a run left in its output folder (a lock file it removed is not there)."""
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.mark.parametrize("cell", ["nan", "inf", "1e400", "seven"])
def test_bad_validation_file_value_is_reported_before_anything_is_written(tmp_path, cell):
    train = criteo_csv(tmp_path / "train.csv", 200, 0)
    val = criteo_csv(tmp_path / "val.csv", 80, 1, bad_line=57, bad_cell=cell)
    cfg = rec_run_cfg(tmp_path, path=train, val_path=val)
    with pytest.raises(FeatureError) as e:
        Trainer(cfg, get_task("rec")(cfg)).fit()
    assert str(e.value).startswith(f"{val}: line 57: field 'I1': '{cell}' is not ")
    assert written(tmp_path / "run") == []


def test_bad_validation_row_of_the_split_file_is_reported_before_anything_is_written(tmp_path):
    """Without val_path the rows of Data.path that the permutation sends to validation are checked too."""
    path = tmp_path / "all.csv"
    criteo_csv(path, 300, 2)
    cfg = rec_run_cfg(tmp_path, path=str(path))
    task = get_task("rec")(cfg)
    val_line = int(task.data._all_rows().take(task.data.split_indices(300)[1]).lines[0])
    criteo_csv(path, 300, 2, bad_line=val_line, bad_cell="inf")
    cfg = rec_run_cfg(tmp_path, path=str(path))
    with pytest.raises(FeatureError, match=re.escape(f"{path}: line {val_line}: field 'I1': 'inf' is not")):
        Trainer(cfg, get_task("rec")(cfg)).fit()
    assert written(tmp_path / "run") == []


def test_streaming_validation_rows_are_checked_before_anything_is_written(tmp_path):
    train = criteo_csv(tmp_path / "train.csv", 200, 0)
    val = criteo_csv(tmp_path / "val.csv", 300, 1, bad_line=250, bad_cell="nan")
    cfg = rec_run_cfg(tmp_path, path=train, val_path=val, streaming=True, chunk_rows=64, shuffle_buffer=0)
    with pytest.raises(FeatureError, match=re.escape(f"{val}: line 250: field 'I1': 'nan' is not")):
        Trainer(cfg, get_task("rec")(cfg)).fit()
    assert written(tmp_path / "run") == []


def test_good_splits_still_train_and_write_their_files(tmp_path):
    cfg = rec_run_cfg(tmp_path, path=criteo_csv(tmp_path / "t.csv", 200, 0), val_path=criteo_csv(tmp_path / "v.csv",
                                                                                                   60, 1))
    res = Trainer(cfg, get_task("rec")(cfg)).fit()
    assert 0.0 <= res["auc"] <= 1.0 and res["steps"] == 7  # 200 rows, batches of 32
    assert {"config.yaml", "feature_map.json", "metrics.jsonl", "result.json"} <= set(written(tmp_path / "run"))


# ---------------------------------------------------------------------------------------------- 5, 6. serving
@pytest.fixture(scope="module")
def serving_map():
    """Integer categories (user, item: a libfm-style vocabulary), a text category, a numeric column and an
    integer sequence, fitted on 60 rows."""
    rng = np.random.RandomState(0)
    n = 60
    seq = np.full((n, 3), -1, np.int64)
    for i in range(n):
        k = rng.randint(0, 4)
        seq[i, :k] = rng.randint(100, 110, k)
    table = Table({"user": rng.randint(0, 12, n).astype(np.int64), "item": rng.randint(50, 70, n).astype(np.int64),
                   "city": np.array([f"c{v}" for v in rng.randint(0, 5, n)]), "price": rng.rand(n) * 10,
                   "hist": seq}, rng.randint(0, 2, n).astype(np.float32), "train")
    specs = [{"name": "user", "type": "categorical"}, {"name": "item", "type": "categorical"},
             {"name": "city", "type": "categorical"}, {"name": "price", "type": "numeric", "normalize": "standard"},
             {"name": "hist", "type": "sequence", "max_len": 3}]
    return FeatureMap([parse_feature(s, f"features[{i}]") for i, s in enumerate(specs)]).fit([table])


def good_record(i=0):
    return {"id": f"r{i}", "user": 3, "item": 55, "city": "c2", "price": 4.5, "hist": [101, 103]}


def encode_alone(fmap, record):
    items, errors = serving.records_to_items([record], fmap)
    return items[0], errors[0]


def same_item(a, b, same_id: bool = True) -> bool:
    """The same encoding (and, with ``same_id``, the same id: a record without one is named by its position)."""
    if (a is None) != (b is None):
        return False
    return a is None or ((a["id"] == b["id"] or not same_id) and np.array_equal(a["ids"], b["ids"])
                         and np.array_equal(a.get("values"), b.get("values"), equal_nan=True))


def test_string_where_integers_are_expected_changes_no_neighbour(serving_map):
    """Fault 5: {"user": "alice"} made every record's user OOV; now only its own (the documented OOV of a
    value that is not an integer among integer categories), and the neighbours' probabilities stay."""
    records = [good_record(0), {**good_record(1), "user": "alice"}, {**good_record(2), "user": 7}]
    items, errors = serving.records_to_items(records, serving_map)
    assert errors == [None, None, None]
    for i in (0, 2):
        assert same_item(items[i], encode_alone(serving_map, records[i])[0])
    user = serving_map.by_name["user"]
    assert items[1]["ids"][0] == user.offset  # local id 0: out of vocabulary
    assert items[0]["ids"][0] != user.offset and items[2]["ids"][0] != user.offset
    assert encode_alone(serving_map, {**good_record(3), "user": "3"})[0]["ids"][0] == items[0]["ids"][0]
    paddle.seed(0)
    cfg = load_config(data={"Arch": {"name": "deepfm", "embedding_dim": 4, "hidden_units": [8]}})
    model = build_model(cfg, layout=serving_map.layout())
    model.eval()

    def probabilities(recs):
        good, _ = serving.records_to_items(recs, serving_map)
        batch = serving.collate(good)
        out = model(paddle.to_tensor(batch["ids"]), paddle.to_tensor(batch["values"]))
        return [row["probabilities"]["click"] for row in serving.ctr_rows({"prob": out.numpy()}, batch)]

    together = probabilities(records)
    assert [together[0], together[2]] == [probabilities([records[0]])[0], probabilities([records[2]])[0]]


def test_integer_beyond_int64_is_that_records_error(serving_map):
    """Fault 6: an OverflowError failed the whole request; now it is the record's own 422."""
    records = [good_record(0), {**good_record(1), "item": 10 ** 30}, {**good_record(2), "hist": [5, -(2 ** 70)]},
               {**good_record(3), "price": 10 ** 400}, good_record(4)]
    items, errors = serving.records_to_items(records, serving_map)
    assert [e is None for e in errors] == [True, False, False, False, True]
    assert (errors[1].field, errors[2].field, errors[3].field) == ("item", "hist", "price")
    assert "int64" in str(errors[1]) and "int64" in str(errors[2]) and "finite" in str(errors[3])
    assert same_item(items[0], encode_alone(serving_map, records[0])[0])
    assert same_item(items[4], encode_alone(serving_map, records[4])[0])


_ANY_VALUE = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=-(2 ** 80), max_value=2 ** 80),
                       st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6),
                       st.sampled_from(["3", "55", "c2", "alice", " 7 ", "1e400", "nan", "", "101 103", "-5"]),
                       st.lists(st.one_of(st.integers(min_value=-(2 ** 66), max_value=2 ** 66), st.text(max_size=4)),
                                max_size=4))
_COLUMNS = ("user", "item", "city", "price", "hist")
_RECORD = st.one_of(st.fixed_dictionaries({c: _ANY_VALUE for c in _COLUMNS}),
                    st.dictionaries(st.sampled_from(_COLUMNS + ("id",)), _ANY_VALUE, max_size=6),
                    st.sampled_from([None, 3, "x", []]))


@PROPERTY
@given(target=st.one_of(st.just(good_record(9)), _RECORD), before=st.lists(_RECORD, max_size=4),
       after=st.lists(_RECORD, max_size=4))
def test_a_records_encoding_is_the_same_whatever_its_neighbours(serving_map, target, before, after):
    alone_item, alone_error = encode_alone(serving_map, target)
    items, errors = serving.records_to_items(before + [target] + after, serving_map)
    at = len(before)
    assert same_item(items[at], alone_item, same_id=isinstance(target, dict) and "id" in target)
    if alone_error is None:
        assert errors[at] is None
    else:
        assert errors[at] is not None and errors[at].field == alone_error.field
        assert str(errors[at]).split(": ", 1)[1] == str(alone_error).split(": ", 1)[1]


# ---------------------------------------------------------------------------------------------- property tests
_NAMED = re.compile(r": line (\d+)")


def text_lines(data: bytes) -> list[str]:
    """The file's lines as the formats define them, computed here without the readers: gzip is detected by its
    magic bytes, a leading byte-order mark is dropped, lines end at ``\\n``."""
    text = (gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data).decode("utf-8")
    return (text[1:] if text.startswith("\ufeff") else text).split("\n")


def check_read(fmt, path, data_cfg=None):
    """Rows, or a FeatureError that names ``path`` and a line within the file (or says that no rows were read)."""
    try:
        table = R.read_table(fmt, path, data_cfg or {})
    except FeatureError as e:
        msg = str(e)
        assert msg.startswith(path), msg
        named = _NAMED.search(msg)
        assert named or "no rows read" in msg, msg
        if named and "the gzip data is damaged" not in msg:  # the line named is one of the file's lines
            with open(path, "rb") as f:
                raw = f.read()
            content = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
            assert 1 <= int(named.group(1)) <= content.count(b"\n") + 1, msg
        return None
    assert len(table) >= 1 and all(len(v) == len(table) for v in table.columns.values())
    assert np.all(np.diff(table.lines) > 0)
    return table


def nonblank_lines(lines: list[str], skip_first: bool = False) -> list[int]:
    """The numbers (from 1) of the lines holding more than white space."""
    return [k + 1 for k, line in enumerate(lines) if line.strip() and not (skip_first and k == 0)]


def maybe_gzip(data: bytes, how: int) -> bytes:
    """0: plain; 1: gzipped; 2: gzipped and cut short."""
    if how == 0:
        return data
    packed = gzip.compress(data)
    return packed if how == 1 else packed[: max(2, len(packed) * 2 // 3)]


_LIBFM_PIECES = st.sampled_from([b"1", b"-1", b"0", b"2", b" ", b"\t", b"\n", b"\r\n", b":", b":1", b"5:1", b"7:1",
                                 b"3:1", b"x", b"nan", b"1e3", b"9" * 25, str(INT64_MAX).encode(), b"\xff", b"\xc3\xa9",
                                 b"\xef\xbb\xbf", b"\x00", b"-3:1", b"1_0:1"])


#: whole lines of a two-field libfm file (field f0: indices 0..9, f1: 10..19), so that many files are read whole
_LIBFM_LINES = st.builds("{} {}:1 {}:1{}".format, st.sampled_from(["1", "-1", "0"]), st.integers(0, 9),
                         st.integers(10, 19), st.sampled_from(["\n", "\r\n", " \n"])).map(str.encode)


def _insert(lines: list[bytes], damaged: bytes | None, at: int) -> bytes:
    """``lines`` joined, with ``damaged`` (unless None) before line ``at`` (modulo the count)."""
    at %= len(lines) + 1
    return b"".join(lines if damaged is None else lines[:at] + [damaged] + lines[at:])


def file_bytes(good_lines, pieces):
    """Any bytes (pieces of the format and of anything), or (twice as often) good lines with, half the time, one
    line of such pieces among them."""
    any_piece = st.one_of(pieces, st.binary(max_size=3))
    damaged = st.one_of(st.none(), st.lists(any_piece, min_size=1, max_size=6).map(lambda p: b"".join(p) + b"\n"))
    lines = st.builds(_insert, st.lists(good_lines, min_size=1, max_size=12), damaged, st.integers(0, 12))
    return st.one_of(st.lists(any_piece, max_size=60).map(b"".join), lines, lines)


@PROPERTY
@given(content=file_bytes(_LIBFM_LINES, _LIBFM_PIECES), how=st.sampled_from([0, 0, 1, 2]))
def test_any_bytes_in_a_libfm_file_give_rows_or_a_named_error(tmp_path, content, how):
    data = maybe_gzip(content, how)
    path = write(tmp_path, "p.libfm", data)
    table = check_read("libfm", path)
    event("rows" if table is not None else "named error")
    if table is not None:  # every line with a token is a row: none dropped, none invented
        assert table.lines.tolist() == nonblank_lines(text_lines(data))
        assert all(v.dtype == np.int64 and (v >= 0).all() for v in table.columns.values())


_CSV_PIECES = st.sampled_from([b"label,I1,C1\n", b"label\tI1\tC1\n", b"0", b"1", b",", b"\t", b"\n", b"\r\n", b"\r",
                               b'"', b'"a,b"', b"abc", b"3.5", b"nan", b"1e400", b"", b"\xff", b"\xe2\x82",
                               b"\xef\xbb\xbf", b"\x00", b"-1", b"x" * 40])


#: whole rows of a label,I1,C1 file, so that many files are read whole
_CSV_LINES = st.builds("{},{},{}{}".format, st.sampled_from(["0", "1"]), st.sampled_from(["3", "", "2.5", "-1"]),
                       st.sampled_from(["a", "b c", "", "é"]), st.sampled_from(["\n", "\r\n"])).map(str.encode)


@PROPERTY
@given(first=st.sampled_from([b"", b"label,I1,C1\n", b"\xef\xbb\xbflabel,I1,C1\r\n"]),
       content=file_bytes(_CSV_LINES, _CSV_PIECES), how=st.sampled_from([0, 0, 1, 2]),
       header=st.sampled_from(["auto", "yes", "no"]))
def test_any_bytes_in_a_csv_file_give_rows_or_a_named_error(tmp_path, first, content, how, header):
    data = maybe_gzip(first + content, how)
    path = write(tmp_path, "p.csv", data)
    table = check_read("criteo", path, {"has_header": header})
    event("rows" if table is not None else "named error")
    if table is not None:
        lines = text_lines(data)
        rows = table.lines.tolist()
        if b'"' in first + content:  # a quoted cell may span lines: at most one row per line with text
            assert set(rows) <= set(nonblank_lines(lines))
        else:  # every line with text is a row, but a header line: none dropped, none invented
            headed = {"yes": [True], "no": [False], "auto": [True, False]}[header]
            assert any(rows == nonblank_lines(lines, skip_first=h) for h in headed), (rows, lines[:5])
        assert set(np.unique(table.label)) <= {0.0, 1.0}
        for name in table.columns:  # numeric parsing of every column: a value or a named error
            try:
                values = table.numeric(name)
            except FeatureError as e:
                assert str(e).startswith(path) and _NAMED.search(str(e)), str(e)
            else:
                assert not np.isinf(values).any() and all(math.isnan(v) or math.isfinite(v) for v in values)
