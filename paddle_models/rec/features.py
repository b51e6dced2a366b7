"""Feature schema from config, the FuxiCTR way: categorical, numeric and sequence features.

A :class:`FeatureMap` is fitted on the *training* rows only and then encodes any table of the same
columns into two numpy arrays that the models read:

``ids``    int64 ``[N, n_id_cols]``: global row numbers of one shared embedding table. The columns are,
           in this order: one column per embedded categorical feature, ``max_len`` columns per sequence
           feature (0 = padding), then one column per linear-only feature (``embed: false``, and the
           cross-product features of ``Data.crosses`` that only the wide/linear part sees).
``values`` float32 ``[N, n_dense]``: numeric features that are not bucketized (after transform and
           normalisation).

Global row 0 is the padding row. Every categorical feature owns rows ``offset .. offset + size - 1``
where local id 0 is its out-of-vocabulary id and local ids 1.. are the vocabulary (values seen at
least ``min_count`` times in the training rows, sorted), or ``1 + hash(value) % hash_buckets`` when
hashing. Numeric features: ``transform`` (``log``: sign(x)*log(1+|x|)), ``normalize``
(``standard`` / ``minmax`` with statistics of the training rows) or ``bucketize`` into a categorical
feature (``criteo``: floor(ln(x)^2) for x > 2 else int(x), the Criteo-challenge convention FuxiCTR
calls ``convert_to_bucket``; ``quantile``: ``num_buckets`` train quantiles; ``boundaries``: given).
Missing numeric cells (empty) become ``fill_na``; a literal NaN or Inf, or a token that is not a
number, is an error naming the file, line and field. Validation and test files are encoded with the map
fitted on the training rows: a category the training rows never had gets its feature's out-of-vocabulary
id, and a column the map needs that a file lacks is an error naming the file and the feature.

Feature spec keys (``Data.features`` entries; unknown keys are errors):
  name, type (categorical | numeric | sequence), source (input column, default: name),
  tower (user | item, DSSM only), min_count, hash_buckets, embed,
  transform, normalize, bucketize, num_buckets, boundaries, fill_na,
  sep, max_len, pooling (mean | sum), share_vocab (sequence: use that categorical feature's rows),
  keep (sequence: first | last tokens when longer than max_len).
"""
from __future__ import annotations

import json
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..fileio import write_json_atomic

CATEGORICAL, NUMERIC, SEQUENCE = "categorical", "numeric", "sequence"
_COMMON_KEYS = {"name", "type", "source", "tower"}
_KEYS = {
    CATEGORICAL: _COMMON_KEYS | {"min_count", "hash_buckets", "embed", "cross"},
    NUMERIC: _COMMON_KEYS | {"transform", "normalize", "bucketize", "num_buckets", "boundaries", "fill_na",
                             "min_count", "embed"},
    SEQUENCE: _COMMON_KEYS | {"min_count", "hash_buckets", "sep", "max_len", "pooling", "share_vocab", "keep"},
}
FORMAT_VERSION = 1


class FeatureError(ValueError):
    """Bad feature schema or bad data; the message names the file, line and field."""


# ---------------------------------------------------------------------------------------------- tables
class Table:
    """Columns of raw values read from one file, with the source line of every row (for errors).

    ``columns``: name -> 1-D numpy array (int64, float64 or str) or, for ready-made sequences, a
    2-D int64 array padded with -1. ``label``: float32 ``[N]`` or None. ``lines``: int64 ``[N]``.
    """

    def __init__(self, columns: dict[str, np.ndarray], label: np.ndarray | None, file: str,
                 lines: np.ndarray | None = None):
        self.columns = dict(columns)
        n = len(next(iter(self.columns.values()))) if self.columns else (0 if label is None else len(label))
        self.label = label
        self.file = file
        self.lines = np.arange(1, n + 1, dtype=np.int64) if lines is None else np.asarray(lines, np.int64)
        self._numeric: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.lines)

    def take(self, idx) -> Table:
        idx = np.asarray(idx)
        return Table({k: v[idx] for k, v in self.columns.items()},
                     None if self.label is None else self.label[idx], self.file, self.lines[idx])

    def column(self, name: str, feature: str = "") -> np.ndarray:
        if name not in self.columns:
            who = f"feature '{feature}': " if feature else ""
            raise FeatureError(f"{self.file}: {who}column '{name}' not found (columns: {', '.join(self.columns)})")
        return self.columns[name]

    def numeric(self, name: str, feature: str = "") -> np.ndarray:
        """The column as float64 with NaN for missing (empty) cells; bad tokens are errors."""
        if name in self._numeric:
            return self._numeric[name]
        raw = self.column(name, feature)
        if raw.dtype.kind in "iuf":  # already parsed by the reader: NaN = missing
            out = raw.astype(np.float64)
            bad = np.isinf(out)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise FeatureError(f"{self.file}: line {self.lines[i]}: field '{name}': value {out[i]!r} is not finite")
        else:
            s = np.char.strip(raw.astype(str))
            empty = s == ""
            out = np.full(len(s), np.nan)
            try:
                out[~empty] = s[~empty].astype(np.float64)
            except ValueError:
                for i in np.flatnonzero(~empty):
                    try:
                        float(s[i])
                    except ValueError:
                        raise FeatureError(f"{self.file}: line {self.lines[i]}: field '{name}': "
                                           f"{str(s[i])!r} is not a number") from None
            bad = ~empty & ~np.isfinite(out)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise FeatureError(f"{self.file}: line {self.lines[i]}: field '{name}': {str(s[i])!r} is not a finite "
                                   f"number (leave the cell empty for a missing value)")
        self._numeric[name] = out
        return out


# ---------------------------------------------------------------------------------------------- helpers
def _hash_values(values: np.ndarray, buckets: int) -> np.ndarray:
    """Deterministic hash of ints or strings into ``0 .. buckets-1`` (stable across runs and machines)."""
    if values.dtype.kind in "iu":
        x = values.astype(np.uint64)
        with np.errstate(over="ignore"):
            x = (x + np.uint64(0x9E3779B97F4A7C15)) * np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(31)
        return (x % np.uint64(buckets)).astype(np.int64)
    uniq, inv = np.unique(values.astype(str), return_inverse=True)
    h = np.fromiter((zlib.crc32(u.encode("utf-8")) for u in uniq), dtype=np.int64, count=len(uniq))
    return (h % buckets)[inv]


def _canon(values: np.ndarray) -> np.ndarray:
    """Categorical values as int64 (integers) or str (everything else; floats like 1.0 -> '1.0')."""
    if values.dtype.kind in "iub":
        return values.astype(np.int64)
    if values.dtype.kind == "f":
        return values.astype(str)
    return values.astype(str)


def _as_kind_of(vocab: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """``values`` in the kind of ``vocab`` (text, or int64) and, when some cannot be (text that is no integer
    literal, for integer training values), the mask of those that can. Each value is converted on its own:
    its result never depends on the other values."""
    if vocab.dtype.kind == values.dtype.kind:
        return values, None
    if vocab.dtype.kind == "U":
        return values.astype(str), None
    try:
        return values.astype(np.int64), None
    except (ValueError, OverflowError):
        pass
    uniq, inverse = np.unique(values, return_inverse=True)
    converted, ok = np.zeros(len(uniq), np.int64), np.zeros(len(uniq), bool)
    for k in range(len(uniq)):
        try:
            converted[k] = uniq[k:k + 1].astype(np.int64)[0]
            ok[k] = True
        except (ValueError, OverflowError):
            pass
    return converted[inverse], ok[inverse]


def _lookup(vocab: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Local ids: position in the sorted vocabulary + 1, or 0 (out of vocabulary, also for a text value that is
    no integer when the vocabulary holds integers)."""
    if len(vocab) == 0 or len(values) == 0:
        return np.zeros(len(values), np.int64)
    values, ok = _as_kind_of(vocab, values)  # e.g. ids read as text from another file
    pos = np.minimum(np.searchsorted(vocab, values), len(vocab) - 1)
    found = vocab[pos] == values if ok is None else (vocab[pos] == values) & ok
    return np.where(found, pos + 1, 0).astype(np.int64)


def _criteo_bucket(x: np.ndarray) -> np.ndarray:
    out = np.trunc(x)
    big = x > 2
    out[big] = np.floor(np.log(x[big]) ** 2)
    return out.astype(np.int64)


class _Counter:
    """Counts of values over chunks (exact), memory bounded by the number of distinct values."""

    def __init__(self):
        self.values: np.ndarray | None = None
        self.counts: np.ndarray | None = None

    def add(self, values: np.ndarray):
        if len(values) == 0:
            return
        u, c = np.unique(values, return_counts=True)
        if self.values is None:
            self.values, self.counts = u, c
            return
        if u.dtype.kind != self.values.dtype.kind:
            u = u.astype(self.values.dtype) if self.values.dtype.kind == "U" else u
            if u.dtype.kind != self.values.dtype.kind:
                self.values = self.values.astype(str)
                u = u.astype(str)
        allv = np.concatenate([self.values, u])
        allc = np.concatenate([self.counts, c])
        uu, inv = np.unique(allv, return_inverse=True)
        self.values, self.counts = uu, np.bincount(inv, weights=allc).astype(np.int64)

    def vocab(self, min_count: int) -> np.ndarray:
        if self.values is None:
            return np.zeros(0, np.int64)
        return self.values[self.counts >= max(1, int(min_count))]


# ---------------------------------------------------------------------------------------------- features
@dataclass
class Feature:
    name: str
    type: str
    source: str
    tower: str | None = None
    min_count: int = 1
    hash_buckets: int = 0
    embed: bool = True
    cross: tuple[str, ...] = ()
    transform: str = "none"
    normalize: str = "none"
    bucketize: str = "none"
    num_buckets: int = 10
    boundaries: tuple[float, ...] = ()
    fill_na: float = 0.0
    sep: str = " "
    max_len: int = 5
    pooling: str = "mean"
    share_vocab: str | None = None
    keep: str = "first"
    # fitted state
    vocab: np.ndarray | None = None
    stats: dict[str, float] = field(default_factory=dict)
    offset: int = 0
    size: int = 0

    @property
    def is_categorical(self) -> bool:
        """Encoded as one id: categorical features, bucketized numerics and crosses."""
        return self.type == CATEGORICAL or (self.type == NUMERIC and self.bucketize != "none")

    @property
    def is_dense(self) -> bool:
        return self.type == NUMERIC and self.bucketize == "none"

    @property
    def is_linear_only(self) -> bool:
        return self.is_categorical and not self.embed

    def spec(self) -> dict:
        keys = ["name", "type", "source", "tower", "min_count", "hash_buckets", "embed", "cross", "transform",
                "normalize", "bucketize", "num_buckets", "boundaries", "fill_na", "sep", "max_len", "pooling",
                "share_vocab", "keep"]
        return {k: (list(getattr(self, k)) if isinstance(getattr(self, k), tuple) else getattr(self, k))
                for k in keys}


def _same(value):
    return value


#: how a feature spec's value is read (keys not named here are kept as given)
_SPEC_TYPES = {"source": str, "min_count": int, "hash_buckets": int, "embed": bool, "cross": tuple,
               "num_buckets": int, "boundaries": lambda values: tuple(float(b) for b in values), "fill_na": float,
               "sep": str, "max_len": int}


def _choice(where: str, key: str, value, allowed: Sequence[str]):
    if value not in allowed:
        raise FeatureError(f"{where}: {key} must be one of {', '.join(allowed)}, got {value!r}")


def parse_feature(spec: dict, where: str, default_min_count: int = 1) -> Feature:
    """A :class:`Feature` from one ``Data.features`` entry; errors name the entry and the key."""
    if not isinstance(spec, dict):
        raise FeatureError(f"{where}: a feature must be a mapping with at least name and type, got {spec!r}")
    if "name" not in spec or "type" not in spec:
        raise FeatureError(f"{where}: a feature needs 'name' and 'type' (categorical, numeric, sequence)")
    ftype = spec["type"]
    _choice(where, "type", ftype, (CATEGORICAL, NUMERIC, SEQUENCE))
    unknown = set(spec) - _KEYS[ftype]
    if unknown:
        raise FeatureError(f"{where} ('{spec['name']}'): unknown key(s) {sorted(unknown)} for a {ftype} feature "
                           f"(allowed: {', '.join(sorted(_KEYS[ftype]))})")
    given = {key: _SPEC_TYPES.get(key, _same)(value) for key, value in spec.items() if key not in ("name", "type")}
    given.setdefault("source", str(spec["name"]))
    given.setdefault("min_count", int(default_min_count))
    f = Feature(name=str(spec["name"]), type=ftype, **given)  # keys not given: the defaults of Feature
    where = f"{where} ('{f.name}')"
    if f.tower is not None:
        _choice(where, "tower", f.tower, ("user", "item"))
    _choice(where, "transform", f.transform, ("none", "log"))
    _choice(where, "normalize", f.normalize, ("none", "standard", "minmax"))
    _choice(where, "bucketize", f.bucketize, ("none", "criteo", "quantile", "boundaries"))
    _choice(where, "pooling", f.pooling, ("mean", "sum"))
    _choice(where, "keep", f.keep, ("first", "last"))
    if f.hash_buckets < 0 or f.min_count < 1 or f.max_len < 1:
        raise FeatureError(f"{where}: hash_buckets must be >= 0, min_count >= 1 and max_len >= 1")
    if f.bucketize == "boundaries" and (not f.boundaries or list(f.boundaries) != sorted(f.boundaries)):
        raise FeatureError(f"{where}: bucketize 'boundaries' needs a sorted, non-empty 'boundaries' list")
    if f.bucketize == "quantile" and f.num_buckets < 2:
        raise FeatureError(f"{where}: bucketize 'quantile' needs num_buckets >= 2")
    if f.is_dense and not f.embed:
        raise FeatureError(f"{where}: embed: false is only for categorical (or bucketized) features")
    return f


@dataclass(frozen=True)
class Layout:
    """What a model needs to know about its inputs (see the module docstring for the id columns)."""
    vocab_size: int                 # rows of the shared embedding table (row 0 = padding)
    num_sparse: int                 # embedded single-id columns
    seq_lens: tuple[int, ...] = ()  # id columns of each sequence feature
    seq_pooling: tuple[str, ...] = ()
    num_wide: int = 0               # linear-only id columns (embed: false, crosses)
    num_dense: int = 0              # columns of ``values``
    field_names: tuple[str, ...] = ()
    embed_vocab_size: int = 0       # rows the embedded columns can index (0: all of vocab_size)

    @property
    def embed_rows(self) -> int:
        """Rows of an embedding table: the shared table up to the last row an embedded column can hold.
        The rows of linear-only features (crosses, ``embed: false``) after it are read by no embedding."""
        return self.embed_vocab_size or self.vocab_size

    @property
    def num_fields(self) -> int:
        """Fields that get an embedding vector: sparse, sequence (pooled) and dense."""
        return self.num_sparse + len(self.seq_lens) + self.num_dense

    @property
    def num_id_cols(self) -> int:
        return self.num_sparse + sum(self.seq_lens) + self.num_wide

    @property
    def num_embed_cols(self) -> int:
        return self.num_sparse + sum(self.seq_lens)


class FeatureMap:
    """Fit (on training tables) and apply the feature schema; saved as JSON beside the checkpoints."""

    def __init__(self, features: list[Feature]):
        names = [f.name for f in features]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise FeatureError(f"Data.features: duplicate feature name(s) {sorted(dup)}")
        self.features = features
        self.by_name = {f.name: f for f in features}
        for f in features:
            for other in f.cross:
                if other not in self.by_name or not self.by_name[other].is_categorical:
                    raise FeatureError(f"cross feature '{f.name}': '{other}' is not a categorical (or bucketized) "
                                       f"feature of Data.features")
            if f.share_vocab is not None:
                o = self.by_name.get(f.share_vocab)
                if o is None or o.type != CATEGORICAL or o.share_vocab:
                    raise FeatureError(f"feature '{f.name}': share_vocab '{f.share_vocab}' must name a categorical "
                                       f"feature")
        self.fitted = False
        self.vocab_size = 1

    # ---- fitting ---------------------------------------------------------------------------------
    def fit(self, tables, quantile_sample: int = 200_000) -> FeatureMap:
        """Vocabularies and statistics from the training rows.

        ``tables``: a list of :class:`Table` chunks, or a zero-argument callable returning an iterator of
        chunks (a streaming reader; it is called twice when a feature is bucketized by quantiles, once for
        the quantiles and once for the counts). Memory is bounded by the number of distinct values.
        """
        chunks = (lambda: iter(tables)) if not callable(tables) else tables
        self._fit_quantile_boundaries(chunks, quantile_sample)
        counters = {f.name: _Counter() for f in self.features if self._needs_vocab(f)}
        n_rows = self._fit_values(chunks, counters)
        self._fit_crosses(chunks, counters)
        self._assign_offsets()
        self.fitted = True
        self.num_train_rows = n_rows
        return self

    def _fit_quantile_boundaries(self, chunks, quantile_sample: int) -> None:
        """Bucket boundaries of the ``bucketize: quantile`` features from their first ``quantile_sample`` rows."""
        quantile = [f for f in self.features if f.bucketize == "quantile"]
        if not quantile:
            return
        samples = {f.name: [] for f in quantile}
        have = 0
        for t in chunks():
            take = min(len(t), quantile_sample - have)
            for f in quantile:
                samples[f.name].append(self._numeric(t, f)[:take])
            have += take
            if have >= quantile_sample:
                break
        for f in quantile:
            values = np.concatenate(samples[f.name])
            qs = np.quantile(values, np.linspace(0, 1, f.num_buckets + 1)[1:-1]) if len(values) else []
            f.stats["boundaries"] = [float(q) for q in np.unique(qs)]

    def _fit_values(self, chunks, counters: dict) -> int:
        """One pass over the rows: the statistics of dense features and the vocabularies of the others
        (crosses excepted); returns the number of rows."""
        sums = {f.name: [0.0, 0.0, 0, math.inf, -math.inf] for f in self.features if f.is_dense}
        n_rows = 0
        for t in chunks():
            n_rows += len(t)
            for f in self.features:
                if f.is_dense:
                    x = self._numeric(t, f)
                    s = sums[f.name]
                    s[0] += float(x.sum())
                    s[1] += float((x * x).sum())
                    s[2] += len(x)
                    if len(x):
                        s[3] = min(s[3], float(x.min()))
                        s[4] = max(s[4], float(x.max()))
                elif f.name in counters and not f.cross:
                    counters[f.name].add(self._raw_ids(t, f))
        if n_rows == 0:
            raise FeatureError("cannot fit the feature map: the training split has no rows")
        for f in self.features:
            if f.is_dense:
                s0, s1, count, lo, hi = sums[f.name]
                mean = s0 / count
                f.stats.update(mean=mean, std=math.sqrt(max(s1 / count - mean * mean, 0.0)), min=lo, max=hi)
            if f.name in counters and not f.cross:
                f.vocab = counters[f.name].vocab(f.min_count)
        return n_rows

    def _fit_crosses(self, chunks, counters: dict) -> None:
        """Vocabularies of the cross features: they count pairs of their parts' local ids, known only after
        :meth:`_fit_values`, so one more pass."""
        crosses = [f for f in self.features if f.cross and f.name in counters]
        if not crosses:
            return
        for t in chunks():
            for f in crosses:
                counters[f.name].add(self._raw_ids(t, f))
        for f in crosses:
            f.vocab = counters[f.name].vocab(f.min_count)

    def _needs_vocab(self, f: Feature) -> bool:
        if f.share_vocab is not None:
            return False
        if f.type == SEQUENCE:
            return f.hash_buckets == 0
        return f.is_categorical and f.hash_buckets == 0

    def _assign_offsets(self):
        off = 1  # row 0: padding
        for f in self.features:
            if f.is_dense or f.share_vocab is not None:
                continue
            f.size = 1 + (f.hash_buckets if f.hash_buckets else len(f.vocab))
            f.offset = off
            off += f.size
        for f in self.features:
            if f.share_vocab is not None:
                o = self.by_name[f.share_vocab]
                f.offset, f.size, f.vocab = o.offset, o.size, o.vocab
        self.vocab_size = off

    # ---- raw values -> local ids -----------------------------------------------------------------
    def _numeric(self, t: Table, f: Feature) -> np.ndarray:
        x = t.numeric(f.source, f.name).copy()
        x[np.isnan(x)] = f.fill_na
        if f.transform == "log":
            x = np.sign(x) * np.log1p(np.abs(x))
        return x

    def _raw_ids(self, t: Table, f: Feature) -> np.ndarray:
        """Values whose vocabulary is counted: categorical values, bucket numbers or cross keys."""
        if f.type == SEQUENCE:
            toks, _ = self._seq_tokens(t, f)
            return toks
        if f.type == NUMERIC:
            x = self._numeric(t, f)
            if f.bucketize == "criteo":
                return _criteo_bucket(x)
            b = f.stats["boundaries"] if f.bucketize == "quantile" else list(f.boundaries)
            return np.searchsorted(np.asarray(b, np.float64), x, side="right").astype(np.int64)
        if f.cross:
            key = np.zeros(len(t), np.int64)
            for name in f.cross:
                o = self.by_name[name]
                local = self._local_ids(t, o) if o.vocab is not None or o.hash_buckets else None
                if local is None:
                    raise FeatureError(f"cross feature '{f.name}': '{name}' must come before it in Data.features")
                key = key * np.int64(1 + (o.hash_buckets or len(o.vocab))) + local
            return key
        return _canon(t.column(f.source, f.name))

    def _local_ids(self, t: Table, f: Feature) -> np.ndarray:
        raw = self._raw_ids(t, f)
        if f.hash_buckets:
            return 1 + _hash_values(raw, f.hash_buckets)
        return _lookup(f.vocab, raw)

    def _seq_tokens(self, t: Table, f: Feature):
        """Flat tokens and per-row counts of a sequence column (strings with ``sep``, or int rows padded -1)."""
        col = t.column(f.source, f.name)
        if col.ndim == 2:  # ready-made rows, padded with -1 (ints) or "" (text)
            mask = col >= 0 if col.dtype.kind in "iu" else col != ""
            return col[mask], mask.sum(1)
        rows = [s.split(f.sep) if s else [] for s in col.astype(str)]
        rows = [[w for w in r if w != ""] for r in rows]
        counts = np.fromiter((len(r) for r in rows), np.int64, len(rows))
        flat = np.array([w for r in rows for w in r], dtype=str) if counts.sum() else np.zeros(0, str)
        return flat, counts

    def _seq_ids(self, t: Table, f: Feature) -> np.ndarray:
        """``[N, max_len]`` global ids, 0-padded, keeping the first (or last) ``max_len`` tokens."""
        toks, counts = self._seq_tokens(t, f)
        if f.share_vocab is not None:
            o = self.by_name[f.share_vocab]
            local = 1 + _hash_values(_canon(toks), o.hash_buckets) if o.hash_buckets else _lookup(o.vocab, _canon(toks))
        elif f.hash_buckets:
            local = 1 + _hash_values(_canon(toks), f.hash_buckets)
        else:
            local = _lookup(f.vocab, _canon(toks))
        out = np.zeros((len(counts), f.max_len), np.int64)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        pos = np.arange(len(toks)) - np.repeat(starts, counts)          # position within its row
        row = np.repeat(np.arange(len(counts)), counts)
        if f.keep == "last":
            pos = pos - np.repeat(np.maximum(counts - f.max_len, 0), counts)
        ok = (pos >= 0) & (pos < f.max_len)
        out[row[ok], pos[ok]] = local[ok] + f.offset
        return out

    # ---- encoding --------------------------------------------------------------------------------
    def selected(self, tower: str | None = None) -> list[Feature]:
        return [f for f in self.features if tower is None or f.tower == tower]

    def layout(self, tower: str | None = None) -> Layout:
        fs = self.selected(tower)
        sparse = [f for f in fs if f.is_categorical and f.embed]
        seqs = [f for f in fs if f.type == SEQUENCE]
        embed_vocab = max([f.offset + f.size for f in sparse + seqs], default=1)
        return Layout(vocab_size=self.vocab_size, embed_vocab_size=embed_vocab, num_sparse=len(sparse),
                      seq_lens=tuple(f.max_len for f in seqs), seq_pooling=tuple(f.pooling for f in seqs),
                      num_wide=sum(1 for f in fs if f.is_linear_only), num_dense=sum(1 for f in fs if f.is_dense),
                      field_names=tuple(f.name for f in sparse + seqs + [f for f in fs if f.is_dense]))

    def transform(self, t: Table, tower: str | None = None) -> dict[str, np.ndarray]:
        """``{"ids": int64 [N, n_id_cols], "values": float32 [N, n_dense]}`` (``values`` only when there are
        dense features) for the features of ``tower`` (all when None)."""
        if not self.fitted:
            raise RuntimeError("FeatureMap.transform before fit (or load)")
        fs = self.selected(tower)
        n = len(t)
        cols = []
        for f in [f for f in fs if f.is_categorical and f.embed]:
            cols.append((self._local_ids(t, f) + f.offset)[:, None])
        for f in [f for f in fs if f.type == SEQUENCE]:
            cols.append(self._seq_ids(t, f))
        for f in [f for f in fs if f.is_linear_only]:
            cols.append((self._local_ids(t, f) + f.offset)[:, None])
        out = {"ids": np.concatenate(cols, axis=1).astype(np.int64) if cols else np.zeros((n, 0), np.int64)}
        dense = []
        for f in [f for f in fs if f.is_dense]:
            x = self._numeric(t, f)
            if f.normalize == "standard":
                x = (x - f.stats["mean"]) / (f.stats["std"] or 1.0)
            elif f.normalize == "minmax":
                x = (x - f.stats["min"]) / ((f.stats["max"] - f.stats["min"]) or 1.0)
            dense.append(x.astype(np.float32)[:, None])
        if dense:
            out["values"] = np.concatenate(dense, axis=1)
        return out

    def local_ids(self, t: Table, name: str) -> np.ndarray:
        """Local ids (0 = OOV) of one categorical feature, e.g. the user field for GAUC."""
        return self._local_ids(t, self.by_name[name])

    # ---- persistence -----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        feats = []
        for f in self.features:
            d = f.spec()
            if f.vocab is not None and f.share_vocab is None:
                d["vocab_dtype"] = "int" if f.vocab.dtype.kind in "iu" else "str"
                d["vocab"] = f.vocab.tolist()
            d["stats"] = f.stats
            feats.append(d)
        return {"format_version": FORMAT_VERSION, "vocab_size": self.vocab_size, "features": feats,
                "num_train_rows": getattr(self, "num_train_rows", None)}

    def save(self, path: str):
        write_json_atomic(path, self.to_dict(), ensure_ascii=True)

    @classmethod
    def from_dict(cls, d: dict) -> FeatureMap:
        feats = []
        for i, spec in enumerate(d["features"]):
            spec = dict(spec)
            vocab, vdt, stats = spec.pop("vocab", None), spec.pop("vocab_dtype", None), spec.pop("stats", {})
            spec = {k: v for k, v in spec.items() if v is not None and k in _KEYS[spec["type"]]}
            f = parse_feature(spec, f"features[{i}]")
            if vocab is not None:
                f.vocab = np.asarray(vocab, dtype=np.int64 if vdt == "int" else str)
            f.stats = stats
            feats.append(f)
        fm = cls(feats)
        fm._assign_offsets()
        fm.fitted = True
        fm.num_train_rows = d.get("num_train_rows")
        if fm.vocab_size != d["vocab_size"]:
            raise FeatureError(f"feature map: rebuilt vocab_size {fm.vocab_size} != saved {d['vocab_size']}")
        return fm

    @classmethod
    def load(cls, path: str) -> FeatureMap:
        with open(path, encoding="utf-8") as fh:
            try:
                d = json.load(fh)
            except json.JSONDecodeError as e:
                raise FeatureError(f"{path}: not a valid feature map (JSON error: {e})") from None
        return cls.from_dict(d)

    def schema(self) -> list[dict]:
        """The (unfitted) schema, to compare a saved map with the config."""
        return [f.spec() for f in self.features]
