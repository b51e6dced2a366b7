"""Data of one rec config: read, split, fit (or load) the feature map, encode, batch.

CTR formats (``libfm``, ``criteo``, ``slot``, ``synthetic``): ``Data.path`` is read once; without
``Data.val_path`` its rows are permuted with ``numpy.random.RandomState(Data.split_seed)`` and the first
``Data.split[0]`` fraction trains, the rest validates (the Frappe protocol). Split ``test`` reads
``Data.test_path``. Every split is encoded once into numpy arrays; a dataset item is a row number and
the Loader gathers a whole batch with one ``take`` per array (no per-sample Python work).

``Data.streaming: true`` reads ``Data.path`` in chunks instead (an ``IterableDataset`` with a shuffling
buffer, for files larger than memory); without ``val_path`` a row then validates when a seeded hash of
its line number falls in the last ``split[1]`` fraction.

Retrieval (``recbole`` format, DSSM): leave-last-out splits (``retrieval_split.py``). Datasets are in
``datasets.py``, generated data in ``synthetic.py``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os

import numpy as np
import paddle

from ..fileio import write_json_atomic
from . import readers
from .datasets import ArrayDataset, RetrievalTrainDataset, StreamingCTRDataset, group_codes
from .features import CATEGORICAL, NUMERIC, SEQUENCE, FeatureError, FeatureMap, Table, parse_feature
from .retrieval_split import prepare_leave_last_out
from .synthetic import synthetic_ctr_table, synthetic_recbole

log = logging.getLogger("paddle_models")
FEATURE_MAP_FILE = "feature_map.json"
CTR_FORMATS = ("libfm", "criteo", "slot", "synthetic")
RETRIEVAL_FORMATS = ("recbole", "synthetic")


def resolve_path(path: str | None) -> str | None:
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
def _libfm_features(columns: list[str], data_cfg: dict) -> list[dict]:
    """Every field categorical."""
    return [{"name": c, "type": CATEGORICAL, "min_count": int(data_cfg["min_count"])} for c in columns]


def _criteo_features(columns: list[str], data_cfg: dict) -> list[dict]:
    """``I*`` numeric (log, standardised), the other columns categorical."""
    min_count = int(data_cfg["min_count"])
    return [{"name": c, "type": NUMERIC, "transform": "log", "normalize": "standard"}
            if c[:1] == "I" and c[1:].isdigit() else {"name": c, "type": CATEGORICAL, "min_count": min_count}
            for c in columns]


def _slot_features(columns: list[str], data_cfg: dict) -> list[dict]:
    """``dense_feature_*`` numeric, the slots categorical."""
    min_count = int(data_cfg["min_count"])
    return [{"name": c, "type": NUMERIC} if c.startswith("dense_feature_")
            else {"name": c, "type": CATEGORICAL, "min_count": min_count} for c in columns]


def _history_feature(history_len: int) -> list[dict]:
    """The user's last ``history_len`` items, sharing the item vocabulary ([] when 0)."""
    if history_len <= 0:
        return []
    return [{"name": "history", "type": SEQUENCE, "tower": "user", "share_vocab": "item_id", "max_len": history_len,
             "keep": "last"}]


def _recbole_features(columns: list[str], data_cfg: dict) -> list[dict]:
    """User tower: user id, age, gender, occupation, history; item tower: item id, release year, genres."""
    min_count = int(data_cfg["min_count"])
    features = [{"name": "user_id", "type": CATEGORICAL, "tower": "user", "min_count": min_count}]
    features += [{"name": c, "type": CATEGORICAL, "tower": "user"} for c in ("age", "gender", "occupation")
                 if c in columns]
    features += _history_feature(int(data_cfg["history_len"]))
    features.append({"name": "item_id", "type": CATEGORICAL, "tower": "item", "min_count": min_count})
    if "release_year" in columns:
        features.append({"name": "release_year", "type": CATEGORICAL, "tower": "item"})
    if "class" in columns:
        features.append({"name": "class", "type": SEQUENCE, "tower": "item", "max_len": 6, "sep": " "})
    return features


def _synthetic_retrieval_features(columns: list[str], data_cfg: dict) -> list[dict]:
    """User id and history; item id and genre."""
    return ([{"name": "user_id", "type": CATEGORICAL, "tower": "user"}]
            + _history_feature(int(data_cfg["history_len"]))
            + [{"name": "item_id", "type": CATEGORICAL, "tower": "item"},
               {"name": "genre", "type": CATEGORICAL, "tower": "item"}])


def _synthetic_ctr_features(columns: list[str], data_cfg: dict) -> list[dict]:
    """``c*`` categorical, ``n*`` numeric (standardised), ``s*`` a sequence of ``synthetic.sequence_len`` ids."""
    out = []
    for c in columns:
        kind = {"c": CATEGORICAL, "n": NUMERIC, "s": SEQUENCE}[c[0]]
        spec = {"name": c, "type": kind}
        if kind == NUMERIC:
            spec["normalize"] = "standard"
        if kind == SEQUENCE:
            spec["max_len"] = int(data_cfg["synthetic"]["sequence_len"])
        out.append(spec)
    return out


_DEFAULT_FEATURES = {"libfm": _libfm_features, "criteo": _criteo_features, "slot": _slot_features,
                     "recbole": _recbole_features}


def default_features(fmt: str, columns: list[str], data_cfg: dict, retrieval: bool = False) -> list[dict]:
    """The feature schema used when ``Data.features`` is empty."""
    if fmt == "synthetic":
        make = _synthetic_retrieval_features if retrieval else _synthetic_ctr_features
    elif fmt in _DEFAULT_FEATURES:
        make = _DEFAULT_FEATURES[fmt]
    else:
        raise FeatureError(f"Data.format: unknown format {fmt!r} (libfm, criteo, slot, recbole, synthetic)")
    return make(columns, data_cfg)


def build_feature_map(data_cfg: dict, columns: list[str], retrieval: bool = False) -> FeatureMap:
    specs = list(data_cfg["features"]) or default_features(data_cfg["format"], columns, data_cfg, retrieval)
    features = [parse_feature(s, f"Data.features[{i}]", int(data_cfg["min_count"])) for i, s in enumerate(specs)]
    for j, cross in enumerate(data_cfg["crosses"]):
        if not isinstance(cross, list) or len(cross) < 2:
            raise FeatureError(f"Data.crosses[{j}]: a cross is a list of two or more feature names, got {cross!r}")
        features.append(parse_feature({"name": "_x_".join(cross), "type": CATEGORICAL, "cross": list(cross),
                                       "embed": False, "min_count": int(data_cfg["cross_min_count"]),
                                       "hash_buckets": int(data_cfg["cross_hash_buckets"])}, f"Data.crosses[{j}]"))
    return FeatureMap(features)


def schema_key(data_cfg: dict) -> str:
    """Fingerprint of the Data settings that shape the feature map (to check a saved map still fits)."""
    keys = ("format", "features", "crosses", "cross_min_count", "cross_hash_buckets", "min_count", "field_names",
            "history_len", "split", "split_seed")
    blob = json.dumps({k: data_cfg[k] for k in keys}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------- the data holder
class RecData:
    """Reads, splits and encodes the data of a config; owns the fitted :class:`FeatureMap`."""

    def __init__(self, cfg, retrieval: bool = False):
        self.cfg = cfg
        self.data_cfg = cfg["Data"]
        self.retrieval = retrieval
        fmt = self.data_cfg["format"]
        allowed = RETRIEVAL_FORMATS if retrieval else CTR_FORMATS
        if fmt not in allowed:
            kind = "retrieval (DSSM)" if retrieval else "CTR"
            raise FeatureError(f"Data.format: {fmt!r} is not a {kind} format (use one of {', '.join(allowed)})")
        self.fmap: FeatureMap | None = None
        self._table: Table | None = None
        self._datasets: dict[str, paddle.io.Dataset] = {}
        self.group_field = cfg["Metric"]["user_field"] or None
        self.streaming = bool(self.data_cfg["streaming"]) and not retrieval and fmt != "synthetic"

    # ---- reading ---------------------------------------------------------------------------------
    def _path(self, key: str) -> str:
        path = self.data_cfg[key]
        if not path:
            raise FeatureError(f"Data.{key} is not set" + (" (tools/eval.py -o Data.test_path=FILE)"
                                                           if key == "test_path" else ""))
        return resolve_path(path)

    def _read(self, path: str) -> Table:
        if self.data_cfg["format"] == "synthetic":
            return synthetic_ctr_table(self.data_cfg["synthetic"])
        return readers.read_table(self.data_cfg["format"], path, self.data_cfg)

    def _all_rows(self) -> Table:
        if self._table is None:
            self._table = self._read(self._path("path") if self.data_cfg["format"] != "synthetic" else "")
        return self._table

    def split_indices(self, n: int):
        fractions = [float(x) for x in self.data_cfg["split"]]
        if len(fractions) != 2 or fractions[0] <= 0 or fractions[1] < 0 or sum(fractions) > 1 + 1e-9:
            raise FeatureError(f"Data.split: expected [train_fraction, val_fraction] summing to at most 1, "
                               f"got {fractions}")
        perm = np.random.RandomState(int(self.data_cfg["split_seed"])).permutation(n)
        n_train = int(n * fractions[0])
        n_val = n - n_train if fractions[0] + fractions[1] >= 1 - 1e-9 else int(n * fractions[1])
        return perm[:n_train], perm[n_train:n_train + n_val]

    def _raw_split(self, split: str) -> Table:
        if split == "test":
            return self._read(self._path("test_path"))
        if split not in ("train", "val"):
            raise FeatureError(f"unknown split {split!r} (train, val, test)")
        if self.data_cfg["val_path"] and self.data_cfg["format"] != "synthetic":
            return self._all_rows() if split == "train" else self._read(self._path("val_path"))
        t = self._all_rows()
        tr, va = self.split_indices(len(t))
        return t.take(tr if split == "train" else va)

    # ---- streaming -------------------------------------------------------------------------------
    def _keep_fn(self, split: str):
        if split == "test" or self.data_cfg["val_path"]:
            return None
        cut = float(self.data_cfg["split"][0])
        seed = np.uint64(int(self.data_cfg["split_seed"]))

        def keep(lines: np.ndarray) -> np.ndarray:
            with np.errstate(over="ignore"):
                h = (lines.astype(np.uint64) + seed) * np.uint64(0x9E3779B97F4A7C15)
            u = (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)
            return u < cut if split == "train" else u >= cut

        return keep

    def _chunks_fn(self, split: str):
        key = {"train": "path", "val": "val_path" if self.data_cfg["val_path"] else "path", "test": "test_path"}[split]
        path = self._path(key)
        fmt, rows = self.data_cfg["format"], int(self.data_cfg["chunk_rows"])
        keep = self._keep_fn(split)

        def chunks():
            for t in readers.iter_table(fmt, path, self.data_cfg, rows):
                yield t if keep is None else t.take(np.flatnonzero(keep(t.lines)))

        return chunks

    # ---- feature map -----------------------------------------------------------------------------
    def prepare(self, output_dir: str | None = None, is_main: bool = True, checkpoint: str | None = None):
        """Load the feature map saved beside ``checkpoint`` or in ``output_dir``, else fit it on the
        training split (rank 0), and save it to ``output_dir`` (when it is not there yet)."""
        if self.fmap is None:
            self.fmap = self._load_or_fit(output_dir, is_main, checkpoint)
            self._unsaved = True
        if output_dir and is_main and (getattr(self, "_unsaved", False)
                                       or not os.path.isfile(os.path.join(output_dir, FEATURE_MAP_FILE))):
            self._save(output_dir)
            self._unsaved = False
        return self.fmap

    def _saved_map(self, output_dir: str | None, checkpoint: str | None) -> dict | None:
        """The feature map saved beside ``checkpoint`` or in ``output_dir`` (as a dict), when it fits this config's
        Data settings (or ``checkpoint`` was trained with it); else None."""
        found = find_feature_map(output_dir, checkpoint)
        if not found:
            return None
        with open(found, encoding="utf-8") as fh:
            try:
                saved = json.load(fh)
            except json.JSONDecodeError as e:
                raise FeatureError(f"{found}: not a valid feature map ({e})") from None
        if saved.get("schema_key") == schema_key(self.data_cfg):
            return saved
        if checkpoint:  # the weights were trained with this map: keep it
            log.warning("%s was built with other Data settings than this config; using it because "
                        "Global.checkpoint was trained with it", found)
            return saved
        log.info("%s was built with other Data settings: fitting a new feature map", found)
        return None

    def _load_or_fit(self, output_dir: str | None, is_main: bool, checkpoint: str | None) -> FeatureMap:
        saved = self._saved_map(output_dir, checkpoint)
        if saved is not None:
            fmap = FeatureMap.from_dict(saved)
            self._schema_key = saved.get("schema_key")
            if self.retrieval:
                self._retrieval_setup()
            return fmap
        if not is_main:
            raise FileNotFoundError(f"{os.path.join(output_dir or '.', FEATURE_MAP_FILE)}: feature map not written "
                                    f"by rank 0")
        return self._fit()

    def check_splits(self, splits, output_dir: str | None = None, checkpoint: str | None = None) -> None:
        """Read, check and encode every row of ``splits`` (kept for training), writing nothing: the feature map
        is loaded (as :meth:`prepare` would) or fitted in memory first. Streaming splits are read once, in
        chunks: the training rows while fitting the map (when it is fitted here; a loaded map leaves them to
        be checked as they stream), the validation rows in a pass of their own."""
        if self.fmap is None:
            self.fmap = self._load_or_fit(output_dir, True, checkpoint)
            self._unsaved = True
        for split in splits:
            if not self.streaming:
                self.dataset(split)
            elif split != "train":
                for _ in self.dataset(split)._encoded_chunks():
                    pass

    def _save(self, output_dir: str):
        os.makedirs(output_dir, exist_ok=True)
        saved = self.fmap.to_dict()
        saved["schema_key"] = getattr(self, "_schema_key", None) or schema_key(self.data_cfg)
        write_json_atomic(os.path.join(output_dir, FEATURE_MAP_FILE), saved, ensure_ascii=True)

    def _fit(self) -> FeatureMap:
        if self.retrieval:
            self._retrieval_setup()
            fmap = build_feature_map(self.data_cfg, list(self._retrieval_columns), retrieval=True)
            return fmap.fit([self._splits["train_table"]])
        if self.streaming:
            first = next(iter(readers.iter_table(self.data_cfg["format"], self._path("path"), self.data_cfg, 16)))
            fmap = build_feature_map(self.data_cfg, list(first.columns))
            return fmap.fit(self._chunks_fn("train"))
        train = self._raw_split("train")
        fmap = build_feature_map(self.data_cfg, list(train.columns))
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
                                     int(self.data_cfg["shuffle_buffer"]) if split == "train" else 0,
                                     int(self.cfg["Global"]["seed"]), self.group_field)
        else:
            table = self._raw_split(split)
            arrays = self.fmap.transform(table)
            arrays["label"] = table.label.astype(np.float32)
            if self.group_field:
                arrays["group"] = group_codes(table, self.fmap, self.group_field)
            ds = ArrayDataset(arrays)
        self._datasets[split] = ds
        return ds

    # ---- retrieval ---------------------------------------------------------------------------------
    def _retrieval_setup(self):
        if getattr(self, "_splits", None) is not None:
            return
        if self.data_cfg["format"] == "synthetic":
            tables = synthetic_recbole(self.data_cfg["synthetic"])
        else:
            tables = readers.read_recbole(self._path("path"))
        self._splits = prepare_leave_last_out(tables, float(self.data_cfg["rating_threshold"]),
                                           int(self.data_cfg["history_len"]))
        self._retrieval_columns = list(self._splits["train_table"].columns)

    def _retrieval_dataset(self, split: str):
        self._retrieval_setup()
        splits = self._splits
        if "catalog_ids" not in splits:
            splits["catalog_ids"] = self.fmap.transform(splits["catalog"], tower="item")["ids"]
        if split == "train":
            table = splits["train_table"]
            arrays = {"user_ids": self.fmap.transform(table, tower="user")["ids"],
                      "item_ids": self.fmap.transform(table, tower="item")["ids"],
                      "item_index": splits["train_item_index"]}
            return RetrievalTrainDataset(arrays, splits["catalog_ids"], int(self.data_cfg["num_negatives"]))
        if split not in ("val", "test"):
            raise FeatureError(f"unknown split {split!r} (train, val, test)")
        table = splits[f"{split}_users"]
        return ArrayDataset({"user_ids": self.fmap.transform(table, tower="user")["ids"],
                             "target": splits[f"{split}_target"], "exclude": splits[f"{split}_exclude"]})

    @property
    def catalog_ids(self) -> np.ndarray:
        self.dataset("train") if self.retrieval else None
        return self._splits["catalog_ids"]


def find_feature_map(output_dir: str | None, checkpoint: str | None) -> str | None:
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
