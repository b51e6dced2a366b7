"""Rec readers (real samples in ../shared/data and generated files), the feature map (vocabulary,
min_count, OOV, hashing, numeric transforms, bucketize, sequences, crosses), bad input errors, the Frappe
split protocol, leave-last-out and the streaming dataset."""
import os
from pathlib import Path

import numpy as np
import pytest

from paddle_models.config import load_config
from paddle_models.rec import readers as R
from paddle_models.rec.data import RecData
from paddle_models.rec.features import FeatureError, FeatureMap, Table, parse_feature
from paddle_models.rec.retrieval_split import prepare_leave_last_out

DATA = Path(os.environ.get("PADDLE_MODELS_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
FRAPPE = DATA / "frappe" / "frappe.validation.libfm"
CRITEO = DATA / "criteo_samples" / "criteo_sample.txt"
SLOT = DATA / "criteo_samples" / "paddlerec_deepfm_sample_train.txt"
ML100K = DATA / "ml-100k"


def need(path: Path):
    if not path.exists():
        pytest.skip(f"{path} not found (shared data absent; set PADDLE_MODELS_DATA)")


def fmap_of(specs, table, **kw):
    fm = FeatureMap([parse_feature(s, f"features[{i}]") for i, s in enumerate(specs)])
    return fm.fit([table], **kw)


def rec_cfg(**data):
    return load_config(data={"Arch": {"name": "deepfm"}, "Data": data, "Global": {"batch_size": 16}})


# ---------------------------------------------------------------------------------------------- real samples
def test_frappe_libfm():
    need(FRAPPE)
    t = R.read_table("libfm", str(FRAPPE), {})
    assert len(t) == 57722 and list(t.columns) == [f"f{i}" for i in range(10)]
    assert int(t.label.sum()) == 19063
    idx = np.stack([t.columns[f"f{i}"] for i in range(10)], 1)
    assert idx.min() == 0 and idx.max() == 5381
    # every index belongs to exactly one field
    for i in range(10):
        for j in range(i + 1, 10):
            assert not set(np.unique(idx[:, i])) & set(np.unique(idx[:, j]))


def test_frappe_split_protocol():
    """Rows permuted by RandomState(2026).permutation; first 90% train, the rest validation."""
    need(FRAPPE)
    names = ["user", "item", "daytime", "weekday", "isweekend", "homework", "cost", "weather", "country", "city"]
    rd = RecData(rec_cfg(format="libfm", path=str(FRAPPE), field_names=names))
    lines = [ln.split() for ln in open(FRAPPE) if ln.strip()]
    perm = np.random.RandomState(2026).permutation(len(lines))
    n_train = int(len(lines) * 0.9)
    tr, va = rd._raw_split("train"), rd._raw_split("val")
    assert (len(tr), len(va)) == (n_train, len(lines) - n_train) == (51949, 5773)
    for split, rows in ((tr, perm[:n_train]), (va, perm[n_train:])):
        assert np.array_equal(split.label, [1.0 if lines[r][0] == "1" else 0.0 for r in rows])
        assert np.array_equal(split.columns["item"], [int(lines[r][2].split(":")[0]) for r in rows])
        assert np.array_equal(split.lines, rows + 1)
    rd.prepare()
    # vocabularies come from the training rows only: validation-only values are OOV
    f = rd.fmap.by_name["user"]
    assert set(f.vocab.tolist()) == set(np.unique(tr.columns["user"]).tolist())
    va_ids = rd.dataset("val").arrays["ids"][:, 0] - f.offset
    unseen = ~np.isin(va.columns["user"], f.vocab)  # 9 validation rows of users never seen in training
    assert unseen.any() and np.all(va_ids[unseen] == 0) and np.all(va_ids[~unseen] > 0)


def test_criteo_sample_csv():
    need(CRITEO)
    t = R.read_table("criteo", str(CRITEO), {})
    assert len(t) == 200 and len(t.columns) == 39 and int(t.label.sum()) == 49
    rd = RecData(rec_cfg(format="criteo", path=str(CRITEO)))
    fm = rd.prepare()
    lay = fm.layout()
    assert lay.num_dense == 13 and lay.num_sparse == 26
    ds = rd.dataset("train")
    assert ds.arrays["values"].shape == (180, 13) and np.isfinite(ds.arrays["values"]).all()
    # log transform then standardisation with training statistics
    tr = rd._raw_split("train")
    raw = tr.numeric("I5")
    x = np.sign(np.nan_to_num(raw)) * np.log1p(np.abs(np.nan_to_num(raw)))
    np.testing.assert_allclose(ds.arrays["values"][:, 4], (x - x.mean()) / x.std(), rtol=1e-4, atol=1e-5)


def test_paddlerec_slot_sample():
    need(SLOT)
    t = R.read_table("slot", str(SLOT), {})
    assert len(t) == 80 and int(t.label.sum()) == 23
    assert sum(c.startswith("dense_feature_") for c in t.columns) == 13
    assert sum(c.startswith("slot_") for c in t.columns) == 26
    assert max(int(v) for c in t.columns if c.startswith("slot_") for v in t.columns[c]) == 999918
    assert float(t.columns["dense_feature_1"][0]) == pytest.approx(0.00497512437811)
    fm = RecData(rec_cfg(format="slot", path=str(SLOT))).prepare()
    assert fm.layout().num_dense == 13 and fm.layout().num_sparse == 26


def test_ml100k_recbole_and_leave_last_out():
    need(ML100K)
    rb = R.read_recbole(str(ML100K))
    assert len(rb["inter"]) == 100000 and len(rb["user"]) == 943 and len(rb["item"]) == 1682
    assert rb["inter"].types["rating"] == "float" and rb["item"].types["class"] == "token_seq"
    r = prepare_leave_last_out(rb, 0.0, 20)
    assert len(r["val_target"]) == len(r["test_target"]) == 943
    assert len(r["train_table"]) == 100000 - 2 * 943
    # the test item is each user's latest interaction, the validation item the one before
    inter = rb["inter"]
    u, it, ts = inter.columns["user_id"], inter.columns["item_id"], inter.numeric("timestamp")
    cat = r["catalog"].columns["item_id"]
    for k in range(0, 943, 97):
        user = r["test_users"].columns["user_id"][k]
        rows = np.flatnonzero(u == user)
        order = rows[np.lexsort((rows, ts[rows]))]
        assert cat[r["test_target"][k]] == it[order[-1]]
        vk = int(np.flatnonzero(r["val_users"].columns["user_id"] == user)[0])
        assert cat[r["val_target"][vk]] == it[order[-2]]
        # exclusions: training items for validation, plus the validation item for testing
        ex_test = set(r["test_exclude"][k][r["test_exclude"][k] >= 0].tolist())
        assert {cat[i] for i in ex_test} == set(it[order[:-1]])
        hist = r["test_users"].columns["history"][k]
        assert list(hist[hist != ""]) == list(it[order[:-1]][-20:])


# ---------------------------------------------------------------------------------------------- bad input
def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize("body,msg", [
    ("1 0:1 5:1\n-1 1:1 x6:1\n", "line 2: field 'f1' (token 2): bad token 'x6:1'"),
    ("1 0:1 5:1\n-1 1:1 6\n", "line 2: field 'f1' (token 2): bad token '6'"),
    ("1 0:1 5:1\n-1 1:1\n", "line 2: expected 2 index:value tokens"),
    ("1 0:1 5:1\n2 1:1 6:1\n", "line 2: field 'label': label '2' is outside the label set"),
    ("1 0:1 5:1\n1 5:1 0:1\n", "line 2: field 'f1': index 0 was in field 'f0' on line 1"),
    ("1 0:1 5:0.5\n", "line 1: field 'f1' (token 2): value '0.5'"),
])
def test_bad_libfm_lines(tmp_path, body, msg):
    path = write(tmp_path, "bad.libfm", body)
    with pytest.raises(FeatureError) as e:
        R.read_table("libfm", path, {})
    assert path in str(e.value) and msg in str(e.value)


@pytest.mark.parametrize("cell,msg", [("nan", "'nan' is not a finite number"), ("inf", "'inf' is not a finite"),
                                      ("abc", "'abc' is not a number")])
def test_bad_numeric_cell(tmp_path, cell, msg):
    path = write(tmp_path, "bad.csv", f"label,I1,C1\n0,3,a\n1,{cell},b\n0,,c\n")
    t = R.read_table("criteo", path, {})
    fm = FeatureMap([parse_feature({"name": "I1", "type": "numeric"}, "f")])
    with pytest.raises(FeatureError) as e:
        fm.fit([t])
    assert f"{path}: line 3: field 'I1': {msg}" in str(e.value)


def test_missing_numeric_is_filled(tmp_path):
    path = write(tmp_path, "ok.csv", "label,I1,C1\n0,3,a\n1,,b\n0,5,\n")
    t = R.read_table("criteo", path, {})
    fm = fmap_of([{"name": "I1", "type": "numeric", "fill_na": -1.0}, {"name": "C1", "type": "categorical"}], t)
    out = fm.transform(t)
    assert out["values"][:, 0].tolist() == [3.0, -1.0, 5.0]
    assert len(set(out["ids"][:, 0].tolist())) == 3  # the empty category is a value of its own


def test_bad_csv_and_slot_lines(tmp_path):
    path = write(tmp_path, "short.csv", "label,I1,C1\n0,3,a\n1,4\n")
    with pytest.raises(FeatureError, match=r"short.csv: line 3: expected 3 fields"):
        R.read_table("criteo", path, {})
    path = write(tmp_path, "nolabel.txt", "click:0 dense_feature:0.1 1:5\ndense_feature:0.2 1:6\n")
    with pytest.raises(FeatureError, match=r"nolabel.txt: line 2: field 'click': missing label slot"):
        R.read_table("slot", path, {})
    path = write(tmp_path, "bad.inter", "user_id:token\titem_id:token\trating:float\n1\t2\tfive\n")
    with pytest.raises(FeatureError, match=r"bad.inter: line 2: field 'rating': 'five' is not a finite number"):
        R.read_atomic(path)


def test_unknown_feature_key():
    with pytest.raises(FeatureError, match=r"Data.features\[0\] \('x'\): unknown key\(s\) \['min_cnt'\]"):
        parse_feature({"name": "x", "type": "categorical", "min_cnt": 2}, "Data.features[0]")
    with pytest.raises(FeatureError, match="bucketize must be one of"):
        parse_feature({"name": "x", "type": "numeric", "bucketize": "log"}, "f")


def test_criteo_headerless_tsv(tmp_path):
    row = "\t".join(["1"] + [str(i) for i in range(13)] + [f"{i:08x}" for i in range(26)])
    path = write(tmp_path, "train.txt", row + "\n" + row.replace("1\t", "0\t", 1) + "\n")
    t = R.read_table("criteo", path, {})
    assert list(t.columns)[:2] == ["I1", "I2"] and t.label.tolist() == [1.0, 0.0] and len(t.columns) == 39


# ---------------------------------------------------------------------------------------------- features
def test_vocab_min_count_oov_and_offsets():
    tr = Table({"a": np.array(["x", "x", "y", "z", "z", "z"]), "b": np.array([5, 5, 5, 7, 9, 9])}, None, "t")
    fm = fmap_of([{"name": "a", "type": "categorical", "min_count": 2},
                  {"name": "b", "type": "categorical"}], tr)
    a, b = fm.by_name["a"], fm.by_name["b"]
    assert a.vocab.tolist() == ["x", "z"] and b.vocab.tolist() == [5, 7, 9]
    assert (a.offset, a.size, b.offset, b.size) == (1, 3, 4, 4) and fm.vocab_size == 8
    te = Table({"a": np.array(["x", "y", "z", "new"]), "b": np.array([9, 5, 6, 7])}, None, "t")
    ids = fm.transform(te)["ids"]
    assert ids[:, 0].tolist() == [1 + 1, 1 + 0, 1 + 2, 1 + 0]       # y (count 1) and unseen -> OOV 0
    assert ids[:, 1].tolist() == [4 + 3, 4 + 1, 4 + 0, 4 + 2]
    assert fm.layout().num_sparse == 2 and fm.layout().num_id_cols == 2


def test_hashing_is_stable_and_in_range():
    vals = np.array([f"v{i}" for i in range(500)])
    tr = Table({"h": vals, "n": np.arange(500)}, None, "t")
    fm = fmap_of([{"name": "h", "type": "categorical", "hash_buckets": 16},
                  {"name": "n", "type": "categorical", "hash_buckets": 32}], tr)
    ids = fm.transform(tr)["ids"]
    h, n = fm.by_name["h"], fm.by_name["n"]
    assert h.size == 17 and n.size == 33
    assert ids[:, 0].min() >= h.offset + 1 and ids[:, 0].max() < h.offset + h.size
    assert len(np.unique(ids[:, 0])) == 16 and len(np.unique(ids[:, 1])) == 32   # spread over the buckets
    # the same value always hashes the same (also in a fresh map: no salted Python hash)
    fm2 = fmap_of([{"name": "h", "type": "categorical", "hash_buckets": 16},
                   {"name": "n", "type": "categorical", "hash_buckets": 32}], tr.take(np.arange(3)))
    assert np.array_equal(fm2.transform(tr)["ids"], ids)
    import zlib
    assert ids[7, 0] - h.offset == 1 + zlib.crc32(b"v7") % 16


def test_numeric_bucketize_and_normalize():
    x = np.array([-2.0, 0.0, 1.0, 2.0, 3.0, 10.0, 100.0, np.nan])
    tr = Table({"x": x}, None, "t")
    fm = fmap_of([{"name": "cr", "type": "numeric", "source": "x", "bucketize": "criteo"},
                  {"name": "bd", "type": "numeric", "source": "x", "bucketize": "boundaries", "boundaries": [0.5, 5]},
                  {"name": "q", "type": "numeric", "source": "x", "bucketize": "quantile", "num_buckets": 4},
                  {"name": "st", "type": "numeric", "source": "x", "normalize": "standard", "transform": "log"},
                  {"name": "mm", "type": "numeric", "source": "x", "normalize": "minmax"}], tr)
    # criteo convention: floor(ln(x)^2) for x > 2, else int(x); NaN -> fill_na 0
    want = [-2, 0, 1, 2, int(np.floor(np.log(3) ** 2)), int(np.floor(np.log(10) ** 2)),
            int(np.floor(np.log(100) ** 2)), 0]
    assert fm.by_name["cr"].vocab.tolist() == sorted(set(want))
    out = fm.transform(tr)
    cr = out["ids"][:, 0] - fm.by_name["cr"].offset
    assert np.array_equal(fm.by_name["cr"].vocab[cr - 1], want)
    bd = out["ids"][:, 1] - fm.by_name["bd"].offset
    assert np.array_equal(fm.by_name["bd"].vocab[bd - 1], [0, 0, 1, 1, 1, 2, 2, 0])
    filled = np.nan_to_num(x)
    qs = fm.by_name["q"].stats["boundaries"]
    np.testing.assert_allclose(qs, np.quantile(filled, [0.25, 0.5, 0.75]))
    lg = np.sign(filled) * np.log1p(np.abs(filled))
    np.testing.assert_allclose(out["values"][:, 0], (lg - lg.mean()) / lg.std(), rtol=1e-5)
    np.testing.assert_allclose(out["values"][:, 1], (filled + 2) / 102, rtol=1e-5)
    lay = fm.layout()
    assert lay.num_sparse == 3 and lay.num_dense == 2


def test_sequence_features_and_shared_vocab():
    tr = Table({"item": np.array(["a", "b", "c", "a"]),
                "hist": np.array(["a b", "", "c a b d", "b"]),
                "tags": np.array([[3, 4, -1], [4, -1, -1], [5, 3, 3], [-1, -1, -1]])}, None, "t")
    fm = fmap_of([{"name": "item", "type": "categorical"},
                  {"name": "hist", "type": "sequence", "share_vocab": "item", "max_len": 3, "keep": "last"},
                  {"name": "tags", "type": "sequence", "max_len": 2, "pooling": "sum"}], tr)
    it, tags = fm.by_name["item"], fm.by_name["tags"]
    ids = fm.transform(tr)["ids"]
    assert ids.shape == (4, 1 + 3 + 2)
    enc = {v: it.offset + 1 + i for i, v in enumerate(it.vocab.tolist())}
    assert ids[2, 1:4].tolist() == [enc["a"], enc["b"], it.offset]       # last 3 of c a b d; d is OOV
    assert ids[1, 1:4].tolist() == [0, 0, 0]                             # empty history: padding
    assert ids[0, 1:4].tolist() == [enc["a"], enc["b"], 0]
    assert ids[0, 4:].tolist() == [tags.offset + 1, tags.offset + 2]     # first 2 of [3, 4]
    lay = fm.layout()
    assert lay.seq_lens == (3, 2) and lay.seq_pooling == ("mean", "sum") and lay.num_fields == 3


def test_cross_features_are_linear_only():
    tr = Table({"u": np.array([1, 1, 2, 2, 3]), "i": np.array([7, 8, 7, 7, 9])}, None, "t")
    cfg = rec_cfg(format="libfm", crosses=[["u", "i"]], features=[{"name": "u", "type": "categorical"},
                                                                    {"name": "i", "type": "categorical"}])
    from paddle_models.rec.data import build_feature_map

    fm = build_feature_map(cfg["Data"], ["u", "i"]).fit([tr])
    x = fm.by_name["u_x_i"]
    assert x.is_linear_only and len(x.vocab) == 4                      # (1,7) (1,8) (2,7) (3,9)
    te = Table({"u": np.array([1, 2, 3]), "i": np.array([8, 8, 9])}, None, "t")
    ids = fm.transform(te)["ids"]
    assert ids.shape == (3, 3) and fm.layout().num_wide == 1
    assert ids[1, 2] == x.offset                                        # (2, 8) never seen: OOV
    assert ids[0, 2] != ids[2, 2] and ids[0, 2] > x.offset


def test_feature_map_save_load_round_trip(tmp_path):
    tr = Table({"c": np.array(["a", "b", "b"]), "n": np.array([1.0, 2.0, 5.0]), "k": np.array([3, 4, 3])}, None, "t")
    fm = fmap_of([{"name": "c", "type": "categorical"}, {"name": "n", "type": "numeric", "normalize": "standard"},
                  {"name": "k", "type": "categorical", "hash_buckets": 5},
                  {"name": "nb", "type": "numeric", "source": "n", "bucketize": "quantile", "num_buckets": 2}], tr)
    fm.save(str(tmp_path / "fm.json"))
    fm2 = FeatureMap.load(str(tmp_path / "fm.json"))
    a, b = fm.transform(tr), fm2.transform(tr)
    assert np.array_equal(a["ids"], b["ids"]) and np.array_equal(a["values"], b["values"])
    assert fm2.layout() == fm.layout()


# ---------------------------------------------------------------------------------------------- streaming
def _libfm_file(tmp_path, n=3000, seed=0):
    rng = np.random.RandomState(seed)
    u, i, c = rng.randint(0, 40, n), rng.randint(40, 90, n), rng.randint(90, 95, n)
    y = np.where((u + i) % 3 == 0, 1, -1)
    p = tmp_path / f"gen{seed}.libfm"
    p.write_text("".join(f"{a} {b}:1 {d}:1 {e}:1\n" for a, b, d, e in zip(y, u, i, c, strict=True)))
    return str(p)


def test_streaming_dataset_matches_in_memory(tmp_path):
    path = _libfm_file(tmp_path)
    base = dict(format="libfm", path=path, val_path=path, chunk_rows=256)
    mem = RecData(rec_cfg(**base))
    st = RecData(rec_cfg(**base, streaming=True, shuffle_buffer=0))
    mem.prepare()
    st.prepare()
    assert np.array_equal(mem.fmap.to_dict()["features"][0]["vocab"], st.fmap.to_dict()["features"][0]["vocab"])
    ds = st.dataset("train")
    rows = list(iter(ds))
    batch = ds.collate(rows)
    assert np.array_equal(batch["ids"], mem.dataset("train").arrays["ids"])
    assert np.array_equal(batch["label"], mem.dataset("train").arrays["label"])
    # a shuffling buffer permutes (the same multiset of rows), and each epoch differently
    sh = RecData(rec_cfg(**base, streaming=True, shuffle_buffer=1000)).dataset("train")
    sh.set_epoch(0)
    e0 = sh.collate(list(iter(sh)))["ids"]
    sh.set_epoch(1)
    e1 = sh.collate(list(iter(sh)))["ids"]

    def key(a):
        return sorted(map(tuple, a.tolist()))

    assert key(e0) == key(e1) == key(batch["ids"])
    assert not np.array_equal(e0, batch["ids"]) and not np.array_equal(e0, e1)
    # shards are disjoint and cover the file
    sh.set_shard(0, 2)
    a = list(iter(sh))
    sh.set_shard(1, 2)
    b = list(iter(sh))
    assert len(a) + len(b) == 3000 and abs(len(a) - len(b)) <= 1


def test_streaming_without_val_path_splits_by_line_hash(tmp_path):
    path = _libfm_file(tmp_path)
    rd = RecData(rec_cfg(format="libfm", path=path, streaming=True, chunk_rows=500))
    rd.prepare()
    n_tr = sum(1 for _ in rd.dataset("train"))
    n_va = sum(1 for _ in rd.dataset("val"))
    assert n_tr + n_va == 3000 and 2550 < n_tr < 2850
