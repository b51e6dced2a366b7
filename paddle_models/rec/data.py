"""Data of one rec config: read, split, fit (or load) the feature map, encode, batch.

CTR formats (``libfm``, ``criteo``, ``slot``, ``synthetic``): ``Data.path`` is read once; without
``Data.val_path`` its rows are permuted with ``numpy.random.RandomState(Data.split_seed)`` and the first
``Data.split[0]`` fraction trains, the rest validates (the Frappe protocol). Split ``test`` reads
``Data.test_path``. Every split is encoded once into numpy arrays; a dataset item is a row number and
the collate function gathers a whole batch with one ``take`` per array (no per-sample Python work).

``Data.streaming: true`` reads ``Data.path`` in chunks instead (an ``IterableDataset`` with a shuffling
buffer, for files larger than memory); without ``val_path`` a row then validates when a seeded hash of
its line number falls in the last ``split[1]`` fraction.

Retrieval (``recbole`` format, DSSM): each user's interactions sorted by time; the last one is the test
item, the one before it the validation item, the rest train (leave-last-out). Training rows are
(user features + history of earlier items, item features) pairs; evaluation rows are users, ranked
against every item of the catalogue with their training items excluded.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Dict, List, Optional

import numpy as np
import paddle

from . import readers as R
from .features import (CATEGORICAL, NUMERIC, SEQUENCE, FeatureError, FeatureMap, Table, _canon, _hash_values,
                       parse_feature)

log = logging.getLogger("paddle_models")
FEATURE_MAP_FILE = "feature_map.json"
CTR_FORMATS = ("libfm", "criteo", "slot", "synthetic")
RETRIEVAL_FORMATS = ("recbole", "synthetic")


def resolve_path(path: Optional[str]) -> Optional[str]:
    """A data path as given, else relative to the repository root; ``../shared/data/...`` also under
    ``$PADDLE_MODELS_DATA``."""
    if not path:
        return path
    if os.path.isabs(path) or os.path.exists(path):
        return path
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cands = [os.path.join(repo, path)]
    env = os.environ.get("PADDLE_MODELS_DATA")
    norm = path.replace("\\", "/")
    if env and "shared/data/" in norm:
        cands.insert(0, os.path.join(env, norm.split("shared/data/", 1)[1]))
    for c in cands:
        if os.path.exists(c):
            return c
    return path


# ---------------------------------------------------------------------------------------------- schema
def default_features(fmt: str, columns: List[str], d: dict, retrieval: bool = False) -> List[dict]:
    """The feature schema used when ``Data.features`` is empty."""
    mc = int(d["min_count"])
    if fmt == "libfm":
        return [{"name": c, "type": CATEGORICAL, "min_count": mc} for c in columns]
    if fmt == "criteo":
        out = []
        for c in columns:
            if c[:1] == "I" and c[1:].isdigit():
                out.append({"name": c, "type": NUMERIC, "transform": "log", "normalize": "standard"})
            else:
                out.append({"name": c, "type": CATEGORICAL, "min_count": mc})
        return out
    if fmt == "slot":
        return [{"name": c, "type": NUMERIC} if c.startswith("dense_feature_")
                else {"name": c, "type": CATEGORICAL, "min_count": mc} for c in columns]
    if fmt == "recbole":
        L = int(d["history_len"])
        feats = [{"name": "user_id", "type": CATEGORICAL, "tower": "user", "min_count": mc}]
        for c in ("age", "gender", "occupation"):
            if c in columns:
                feats.append({"name": c, "type": CATEGORICAL, "tower": "user"})
        if L > 0:
            feats.append({"name": "history", "type": SEQUENCE, "tower": "user", "share_vocab": "item_id",
                          "max_len": L, "keep": "last"})
        feats.append({"name": "item_id", "type": CATEGORICAL, "tower": "item", "min_count": mc})
        if "release_year" in columns:
            feats.append({"name": "release_year", "type": CATEGORICAL, "tower": "item"})
        if "class" in columns:
            feats.append({"name": "class", "type": SEQUENCE, "tower": "item", "max_len": 6, "sep": " "})
        return feats
    if fmt == "synthetic":
        if retrieval:
            feats = [{"name": "user_id", "type": CATEGORICAL, "tower": "user"}]
            if int(d["history_len"]) > 0:
                feats.append({"name": "history", "type": SEQUENCE, "tower": "user", "share_vocab": "item_id",
                              "max_len": int(d["history_len"]), "keep": "last"})
            return feats + [{"name": "item_id", "type": CATEGORICAL, "tower": "item"},
                            {"name": "genre", "type": CATEGORICAL, "tower": "item"}]
        out = []
        for c in columns:
            kind = {"c": CATEGORICAL, "n": NUMERIC, "s": SEQUENCE}[c[0]]
            spec = {"name": c, "type": kind}
            if kind == NUMERIC:
                spec["normalize"] = "standard"
            if kind == SEQUENCE:
                spec["max_len"] = int(d["synthetic"]["sequence_len"])
            out.append(spec)
        return out
    raise FeatureError(f"Data.format: unknown format {fmt!r} (libfm, criteo, slot, recbole, synthetic)")


def build_feature_map(d: dict, columns: List[str], retrieval: bool = False) -> FeatureMap:
    specs = list(d["features"]) or default_features(d["format"], columns, d, retrieval)
    feats = [parse_feature(s, f"Data.features[{i}]", int(d["min_count"])) for i, s in enumerate(specs)]
    for j, cross in enumerate(d["crosses"] or []):
        if not isinstance(cross, list) or len(cross) < 2:
            raise FeatureError(f"Data.crosses[{j}]: a cross is a list of two or more feature names, got {cross!r}")
        feats.append(parse_feature({"name": "_x_".join(cross), "type": CATEGORICAL, "cross": list(cross),
                                    "embed": False, "min_count": int(d["cross_min_count"]),
                                    "hash_buckets": int(d["cross_hash_buckets"])}, f"Data.crosses[{j}]"))
    return FeatureMap(feats)


def schema_key(d: dict) -> str:
    """Fingerprint of the Data settings that shape the feature map (to check a saved map still fits)."""
    keys = ("format", "features", "crosses", "cross_min_count", "cross_hash_buckets", "min_count", "field_names",
            "history_len", "split", "split_seed")
    blob = json.dumps({k: d.get(k) for k in keys}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------- synthetic
def synthetic_ctr_table(s: dict, seed_offset: int = 0) -> Table:
    """Rows with a planted signal (first-order weights + a pairwise interaction of c0 and c1 + numerics)."""
    rng = np.random.RandomState(int(s["seed"]))
    n, cards = int(s["rows"]), [int(c) for c in s["cardinalities"]]
    cols, score = {}, np.zeros(n)
    for j, c in enumerate(cards):
        v = rng.randint(0, c, n)
        cols[f"c{j}"] = v
        score += rng.randn(c)[v]
    if len(cards) >= 2:
        inter = rng.randn(cards[0], cards[1]) * 1.5
        score += inter[cols["c0"], cols["c1"]]
    for k in range(int(s["numeric"])):
        x = rng.randn(n) * 3 + 1
        cols[f"n{k}"] = x
        score += 0.5 * np.tanh(x)
    L = int(s["sequence_len"])
    if L > 0:
        lens = rng.randint(0, L + 1, n)
        seq = rng.randint(0, 10, (n, L))
        seq[np.arange(L)[None, :] >= lens[:, None]] = -1
        cols["s0"] = seq
        w = rng.randn(10)
        score += np.where(seq >= 0, w[np.maximum(seq, 0)], 0).sum(1) / np.maximum(lens, 1)
    label = (score > np.median(score)).astype(np.float32)
    return Table(cols, label, "<synthetic>")


def synthetic_recbole(s: dict) -> Dict[str, Table]:
    """Users and items in 4 clusters: every user interacts, in random order, with distinct items of its own
    cluster (as many as ``rows / users`` allows); items carry their cluster as a ``genre`` feature."""
    rng = np.random.RandomState(int(s["seed"]))
    n_users, n_items = int(s["cardinalities"][0]), int(s["cardinalities"][1])
    users, items, ts = [], [], []
    for u in range(n_users):
        pool = np.arange(n_items)[np.arange(n_items) % 4 == u % 4]
        k = max(3, min(len(pool), int(s["rows"]) // n_users))
        for t, it in enumerate(rng.permutation(pool)[:k]):
            users.append(str(u)); items.append(str(it)); ts.append(float(t))
    inter = Table({"user_id": np.asarray(users), "item_id": np.asarray(items), "timestamp": np.asarray(ts)},
                  None, "<synthetic>.inter")
    item = Table({"item_id": np.arange(n_items).astype(str), "genre": (np.arange(n_items) % 4).astype(str)},
                 None, "<synthetic>.item")
    return {"inter": inter, "user": None, "item": item}


# ---------------------------------------------------------------------------------------------- datasets
class ArrayDataset(paddle.io.Dataset):
    """Encoded rows of one split. Items are row numbers; :meth:`collate` gathers a batch at once."""

    def __init__(self, arrays: Dict[str, np.ndarray]):
        self.arrays = arrays
        self.n = len(next(iter(arrays.values())))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i) -> int:
        return int(i)

    def row(self, i: int) -> Dict[str, np.ndarray]:
        return {k: v[i] for k, v in self.arrays.items()}

    def collate(self, items) -> Dict[str, np.ndarray]:
        idx = np.asarray(items, dtype=np.int64)
        return {k: v[idx] for k, v in self.arrays.items()}


class RetrievalTrainDataset(ArrayDataset):
    """(user, item) training pairs; with ``num_negatives`` > 0 every batch also carries that many items
    drawn uniformly from the catalogue (shared negatives of the whole batch)."""

    def __init__(self, arrays, catalog_ids: np.ndarray, num_negatives: int):
        super().__init__(arrays)
        self.catalog_ids, self.num_negatives = catalog_ids, int(num_negatives)

    def collate(self, items):
        out = super().collate(items)
        if self.num_negatives > 0:
            neg = np.random.randint(0, len(self.catalog_ids), self.num_negatives)
            out["neg_index"] = neg.astype(np.int64)
            out["neg_ids"] = self.catalog_ids[neg]
        return out


class StreamingCTRDataset(paddle.io.IterableDataset):
    """Rows of a file read in chunks (constant memory), encoded chunk by chunk, shuffled through a
    buffer of ``shuffle_buffer`` rows; ``set_epoch`` reseeds the shuffle, ``set_shard`` keeps every
    ``world_size``-th row. ``keep(lines)`` selects the rows of this split (by line number)."""

    def __init__(self, chunks_fn, fmap: FeatureMap, keep=None, shuffle_buffer: int = 0, seed: int = 0,
                 group_field: Optional[str] = None):
        self.chunks_fn, self.fmap, self.keep = chunks_fn, fmap, keep
        self.shuffle_buffer, self.seed, self.group_field = int(shuffle_buffer), int(seed), group_field
        self.epoch, self.rank, self.world_size = 0, 0, 1

    def set_epoch(self, epoch: int):
        self.epoch = int(epoch)

    def set_shard(self, rank: int, world_size: int):
        self.rank, self.world_size = int(rank), int(world_size)

    def _encoded_chunks(self):
        for t in self.chunks_fn():
            if self.keep is not None:
                t = t.take(np.flatnonzero(self.keep(t.lines)))
            if self.world_size > 1:
                t = t.take(np.flatnonzero(t.lines % self.world_size == self.rank))
            if len(t) == 0:
                continue
            arrays = self.fmap.transform(t)
            arrays["label"] = t.label.astype(np.float32)
            if self.group_field:
                arrays["group"] = group_codes(t, self.fmap, self.group_field)
            yield arrays

    def __iter__(self):
        rng = np.random.RandomState((self.seed * 1000003 + self.epoch) % (2 ** 32))
        buf: List[Dict[str, np.ndarray]] = []
        size = 0
        for arrays in self._encoded_chunks():
            if self.shuffle_buffer <= 0:
                yield from _rows(arrays)
                continue
            buf.append(arrays)
            size += len(arrays["label"])
            if size >= self.shuffle_buffer:
                merged = {k: np.concatenate([b[k] for b in buf]) for k in buf[0]}
                perm = rng.permutation(size)
                keep = perm[: size - self.shuffle_buffer // 2]  # emit most, keep half a buffer to mix with the next
                rest = perm[size - self.shuffle_buffer // 2:]
                yield from _rows({k: v[keep] for k, v in merged.items()})
                buf = [{k: v[rest] for k, v in merged.items()}]
                size = len(rest)
        if buf:
            merged = {k: np.concatenate([b[k] for b in buf]) for k in buf[0]}
            perm = rng.permutation(size)
            yield from _rows({k: v[perm] for k, v in merged.items()})

    @staticmethod
    def collate(items) -> Dict[str, np.ndarray]:
        return {k: np.stack([it[k] for it in items]) for k in items[0]}


def _rows(arrays: Dict[str, np.ndarray]):
    keys = list(arrays)
    cols = [arrays[k] for k in keys]
    for i in range(len(cols[0])):
        yield {k: c[i] for k, c in zip(keys, cols)}


def group_codes(t: Table, fmap: FeatureMap, name: str) -> np.ndarray:
    """Stable integer codes of a feature's raw values (the user of GAUC), equal across files and chunks."""
    f = fmap.by_name.get(name)
    if f is None:
        raise FeatureError(f"Metric.user_field: '{name}' is not a feature (features: {', '.join(fmap.by_name)})")
    raw = _canon(t.column(f.source, name))
    return raw if raw.dtype.kind in "iu" else _hash_values(raw, 1 << 62)


# ---------------------------------------------------------------------------------------------- the data holder
class RecData:
    """Reads, splits and encodes the data of a config; owns the fitted :class:`FeatureMap`."""

    def __init__(self, cfg, retrieval: bool = False):
        self.cfg = cfg
        self.d = cfg["Data"]
        self.retrieval = retrieval
        fmt = self.d["format"]
        allowed = RETRIEVAL_FORMATS if retrieval else CTR_FORMATS
        if fmt not in allowed:
            kind = "retrieval (DSSM)" if retrieval else "CTR"
            raise FeatureError(f"Data.format: {fmt!r} is not a {kind} format (use one of {', '.join(allowed)})")
        self.fmap: Optional[FeatureMap] = None
        self._table: Optional[Table] = None
        self._datasets: Dict[str, paddle.io.Dataset] = {}
        self.group_field = cfg["Metric"].get("user_field") or None
        self.streaming = bool(self.d["streaming"]) and not retrieval and fmt != "synthetic"

    # ---- reading ---------------------------------------------------------------------------------
    def _path(self, key: str) -> str:
        p = self.d.get(key)
        if not p:
            raise FeatureError(f"Data.{key} is not set" + (" (tools/eval.py -o Data.test_path=FILE)"
                                                           if key == "test_path" else ""))
        return resolve_path(p)

    def _read(self, path: str) -> Table:
        if self.d["format"] == "synthetic":
            return synthetic_ctr_table(self.d["synthetic"])
        return R.read_table(self.d["format"], path, self.d)

    def _all_rows(self) -> Table:
        if self._table is None:
            self._table = self._read(self._path("path") if self.d["format"] != "synthetic" else "")
        return self._table

    def split_indices(self, n: int):
        fr = [float(x) for x in self.d["split"]]
        if len(fr) != 2 or fr[0] <= 0 or fr[1] < 0 or fr[0] + fr[1] > 1 + 1e-9:
            raise FeatureError(f"Data.split: expected [train_fraction, val_fraction] summing to at most 1, got {fr}")
        perm = np.random.RandomState(int(self.d["split_seed"])).permutation(n)
        n_train = int(n * fr[0])
        n_val = n - n_train if fr[0] + fr[1] >= 1 - 1e-9 else int(n * fr[1])
        return perm[:n_train], perm[n_train:n_train + n_val]

    def _raw_split(self, split: str) -> Table:
        if split == "test":
            return self._read(self._path("test_path"))
        if split not in ("train", "val"):
            raise FeatureError(f"unknown split {split!r} (train, val, test)")
        if self.d.get("val_path") and self.d["format"] != "synthetic":
            return self._all_rows() if split == "train" else self._read(self._path("val_path"))
        t = self._all_rows()
        tr, va = self.split_indices(len(t))
        return t.take(tr if split == "train" else va)

    # ---- streaming -------------------------------------------------------------------------------
    def _keep_fn(self, split: str):
        if split == "test" or self.d.get("val_path"):
            return None
        cut = float(self.d["split"][0])
        seed = np.uint64(int(self.d["split_seed"]))

        def keep(lines: np.ndarray) -> np.ndarray:
            with np.errstate(over="ignore"):
                h = (lines.astype(np.uint64) + seed) * np.uint64(0x9E3779B97F4A7C15)
            u = (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)
            return u < cut if split == "train" else u >= cut

        return keep

    def _chunks_fn(self, split: str):
        key = {"train": "path", "val": "val_path" if self.d.get("val_path") else "path", "test": "test_path"}[split]
        path = self._path(key)
        fmt, rows = self.d["format"], int(self.d["chunk_rows"])
        keep = self._keep_fn(split)

        def chunks():
            for t in R.iter_table(fmt, path, self.d, rows):
                yield t if keep is None else t.take(np.flatnonzero(keep(t.lines)))

        return chunks

    # ---- feature map -----------------------------------------------------------------------------
    def prepare(self, output_dir: Optional[str] = None, is_main: bool = True, checkpoint: Optional[str] = None):
        """Load the feature map saved beside ``checkpoint`` or in ``output_dir``, else fit it on the
        training split (rank 0) and save it to ``output_dir``."""
        if self.fmap is not None:
            if output_dir and is_main and not os.path.isfile(os.path.join(output_dir, FEATURE_MAP_FILE)):
                self._save(output_dir)
            return self.fmap
        found = find_feature_map(output_dir, checkpoint)
        saved = None
        if found:
            with open(found, encoding="utf-8") as fh:
                try:
                    saved = json.load(fh)
                except json.JSONDecodeError as e:
                    raise FeatureError(f"{found}: not a valid feature map ({e})") from None
            if saved.get("schema_key") != schema_key(self.d):
                if checkpoint:  # the weights were trained with this map: keep it
                    log.warning("%s was built with other Data settings than this config; using it because "
                                "Global.checkpoint was trained with it", found)
                else:
                    log.info("%s was built with other Data settings: fitting a new feature map", found)
                    saved = None
        if saved is not None:
            self.fmap = FeatureMap.from_dict(saved)
            self._schema_key = saved.get("schema_key")
            if self.retrieval:
                self._retrieval_setup()
        elif not is_main:
            raise FileNotFoundError(f"{os.path.join(output_dir or '.', FEATURE_MAP_FILE)}: feature map not written "
                                    f"by rank 0")
        else:
            self.fmap = self._fit()
        if output_dir and is_main:
            self._save(output_dir)
        return self.fmap

    def _save(self, output_dir: str):
        os.makedirs(output_dir, exist_ok=True)
        d = self.fmap.to_dict()
        d["schema_key"] = getattr(self, "_schema_key", None) or schema_key(self.d)
        path = os.path.join(output_dir, FEATURE_MAP_FILE)
        with open(path + ".tmp", "w", encoding="utf-8") as fh:
            json.dump(d, fh)
        os.replace(path + ".tmp", path)

    def _fit(self) -> FeatureMap:
        if self.retrieval:
            self._retrieval_setup()
            fmap = build_feature_map(self.d, list(self._rb_columns), retrieval=True)
            return fmap.fit([self._ret["train_table"]])
        if self.streaming:
            first = next(iter(R.iter_table(self.d["format"], self._path("path"), self.d, 16)))
            fmap = build_feature_map(self.d, list(first.columns))
            return fmap.fit(self._chunks_fn("train"))
        train = self._raw_split("train")
        fmap = build_feature_map(self.d, list(train.columns))
        return fmap.fit([train])

    # ---- encoded splits ------------------------------------------------------------------------
    def layout(self, tower=None):
        return self.prepare().layout(tower)

    def dataset(self, split: str):
        if split in self._datasets:
            return self._datasets[split]
        self.prepare()
        if self.retrieval:
            ds = self._retrieval_dataset(split)
        elif self.streaming:
            ds = StreamingCTRDataset(self._chunks_fn(split), self.fmap, None,
                                     int(self.d["shuffle_buffer"]) if split == "train" else 0,
                                     int(self.cfg["Global"]["seed"]), self.group_field)
        else:
            t = self._raw_split(split)
            arrays = self.fmap.transform(t)
            arrays["label"] = t.label.astype(np.float32)
            if self.group_field:
                arrays["group"] = group_codes(t, self.fmap, self.group_field)
            ds = ArrayDataset(arrays)
        self._datasets[split] = ds
        return ds

    # ---- retrieval ---------------------------------------------------------------------------------
    def _retrieval_setup(self):
        if getattr(self, "_ret", None) is not None:
            return
        if self.d["format"] == "synthetic":
            rb = synthetic_recbole(self.d["synthetic"])
        else:
            rb = R.read_recbole(self._path("path"))
        self._ret = prepare_leave_last_out(rb, float(self.d["rating_threshold"]), int(self.d["history_len"]))
        self._rb_columns = list(self._ret["train_table"].columns)

    def _retrieval_dataset(self, split: str):
        self._retrieval_setup()
        r = self._ret
        if "catalog_ids" not in r:
            r["catalog_ids"] = self.fmap.transform(r["catalog"], tower="item")["ids"]
        if split == "train":
            t = r["train_table"]
            arrays = {"user_ids": self.fmap.transform(t, tower="user")["ids"],
                      "item_ids": self.fmap.transform(t, tower="item")["ids"],
                      "item_index": r["train_item_index"]}
            return RetrievalTrainDataset(arrays, r["catalog_ids"], int(self.d["num_negatives"]))
        if split not in ("val", "test"):
            raise FeatureError(f"unknown split {split!r} (train, val, test)")
        t = r[f"{split}_users"]
        return ArrayDataset({"user_ids": self.fmap.transform(t, tower="user")["ids"],
                             "target": r[f"{split}_target"], "exclude": r[f"{split}_exclude"]})

    @property
    def catalog_ids(self) -> np.ndarray:
        self.dataset("train") if self.retrieval else None
        return self._ret["catalog_ids"]


def prepare_leave_last_out(rb: Dict[str, Table], rating_threshold: float, history_len: int) -> dict:
    """Leave-last-out splits of RecBole tables (see the module docstring); users with fewer than 3
    interactions only train."""
    inter = rb["inter"]
    if rating_threshold > 0 and "rating" in inter.columns:
        inter = inter.take(np.flatnonzero(inter.numeric("rating") >= rating_threshold))
    users = inter.column("user_id").astype(str)
    items = inter.column("item_id").astype(str)
    ts = inter.numeric("timestamp") if "timestamp" in inter.columns else np.arange(len(inter), dtype=np.float64)
    # the catalogue: every item of the .item file, then items only seen in interactions
    item_t = rb.get("item")
    cat_raw = item_t.column("item_id").astype(str) if item_t is not None else np.zeros(0, str)
    extra = np.setdiff1d(np.unique(items), cat_raw)
    cat_raw = np.concatenate([cat_raw, extra]) if len(extra) else cat_raw
    order_cat = np.argsort(cat_raw, kind="stable")
    pos = np.searchsorted(cat_raw[order_cat], items)
    item_idx = order_cat[pos]
    if item_t is not None:
        cat_cols = {k: (np.concatenate([v, np.full(len(extra), "" if v.dtype.kind == "U" else np.nan, v.dtype)])
                        if len(extra) else v) for k, v in item_t.columns.items()}
        cat_cols["item_id"] = cat_raw
        catalog = Table(cat_cols, None, item_t.file)
    else:
        catalog = Table({"item_id": cat_raw}, None, inter.file)
    # sort every user's interactions by time (ties keep file order)
    ucodes, uinv = np.unique(users, return_inverse=True)
    order = np.lexsort((np.arange(len(users)), ts, uinv))
    u_sorted, i_sorted = uinv[order], item_idx[order]
    counts = np.bincount(u_sorted, minlength=len(ucodes))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos_in_user = np.arange(len(order)) - starts[u_sorted]
    cnt = counts[u_sorted]
    is_test = (pos_in_user == cnt - 1) & (cnt >= 3)
    is_val = (pos_in_user == cnt - 2) & (cnt >= 3)
    is_train = ~(is_test | is_val)
    # history: the history_len items before each interaction (the most recent last), "" = padding
    L = max(int(history_len), 1)
    back = np.arange(-L, 0)[None, :]
    src = np.arange(len(order))[:, None] + back
    valid = (pos_in_user[:, None] + back) >= 0
    hist = np.where(valid, cat_raw[i_sorted[np.clip(src, 0, None)]], "")
    # user attributes joined on user_id
    user_t = rb.get("user")
    ucols = {}
    if user_t is not None:
        uraw = user_t.column("user_id").astype(str)
        uo = np.argsort(uraw, kind="stable")
        p = np.minimum(np.searchsorted(uraw[uo], ucodes), len(uraw) - 1)
        hit = uraw[uo][p] == ucodes
        for k, v in user_t.columns.items():
            if k == "user_id":
                continue
            col = v[uo][p]
            ucols[k] = np.where(hit, col, "" if v.dtype.kind == "U" else np.nan)
    def rows_table(mask: np.ndarray, with_item: bool) -> Table:
        sel = np.flatnonzero(mask)
        cols = {"user_id": ucodes[u_sorted[sel]], "history": hist[sel]}
        for k, v in ucols.items():
            cols[k] = v[u_sorted[sel]]
        if with_item:
            for k, v in catalog.columns.items():
                cols[k] = v[i_sorted[sel]]
        return Table(cols, None, inter.file, inter.lines[order[sel]])
    out = {"catalog": catalog, "train_table": rows_table(is_train, True),
           "train_item_index": i_sorted[is_train].astype(np.int64), "n_users": len(ucodes)}
    train_items_of = [[] for _ in range(len(ucodes))]
    for u, it in zip(u_sorted[is_train].tolist(), i_sorted[is_train].tolist()):
        train_items_of[u].append(it)
    for split, mask in (("val", is_val), ("test", is_test)):
        sel = np.flatnonzero(mask)
        out[f"{split}_users"] = rows_table(mask, False)
        out[f"{split}_target"] = i_sorted[sel].astype(np.int64)
        ex = [list(dict.fromkeys(train_items_of[u])) for u in u_sorted[sel].tolist()]
        if split == "test":  # the validation item is known when testing
            vitem = dict(zip(u_sorted[is_val].tolist(), i_sorted[is_val].tolist()))
            ex = [e + [vitem[u]] if u in vitem else e for e, u in zip(ex, u_sorted[sel].tolist())]
        width = max([len(e) for e in ex] + [1])
        arr = np.full((len(ex), width), -1, np.int64)
        for r, e in enumerate(ex):
            arr[r, :len(e)] = e
        out[f"{split}_exclude"] = arr
    return out


def find_feature_map(output_dir: Optional[str], checkpoint: Optional[str]) -> Optional[str]:
    """``feature_map.json`` beside a checkpoint (its folder and three above), else in ``output_dir``."""
    cands = []
    if checkpoint:
        p = os.path.abspath(str(checkpoint))
        p = p if os.path.isdir(p) else os.path.dirname(p)
        for _ in range(4):
            cands.append(os.path.join(p, FEATURE_MAP_FILE))
            p = os.path.dirname(p)
    if output_dir:
        cands.append(os.path.join(output_dir, FEATURE_MAP_FILE))
    for c in cands:
        if os.path.isfile(c):
            return c
    return None


def get_rec_data(cfg, retrieval: bool = False) -> RecData:
    """The :class:`RecData` of a config, created once and kept in ``cfg["_rec_data"]`` so the task and
    the model builders share one read of the data and one feature map."""
    rd = cfg.get("_rec_data")
    if rd is None or rd.retrieval != retrieval:
        rd = RecData(cfg, retrieval)
        cfg["_rec_data"] = rd
    return rd
