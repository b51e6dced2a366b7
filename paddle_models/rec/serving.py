"""The recommender family's export metadata and request records.

* :func:`export_metadata`: the fitted feature map copied into the export folder (``feature_map.json``) and
  named under ``preprocess``, so a server encodes raw values exactly as training did.
* :func:`records_to_items`: request records with the raw values of the training files (one key per
  source column: numbers for numeric features, strings or integers for categorical ones, a list or a
  ``sep``-separated string for sequences; ``null`` is a missing value) -> per-record
  ``{"ids", ["values"], "id"}`` rows, each bad record with its own
  :class:`~paddle_models.engine.task.RecordError` (a value of the wrong type, a number that is not finite, an
  integer outside the int64 range).

  A record is encoded as if it were alone in the request: its values never change another record's ids. A
  value is looked up as what it is: an integer among integer training values (or as its decimal text among
  text ones), a string among text training values (or, when it is an integer literal such as ``"17"``,
  among integer ones). A string that is no integer, for a feature whose training values are integers, is
  out of vocabulary (local id 0), as is any value not seen in training.
* :func:`ctr_rows`: click probabilities -> rows ``id, label, label_name, probabilities``.

DSSM exports its two towers for retrieval; it takes no request records here
(:class:`~paddle_models.engine.task.ServingNotSupported`).
"""
from __future__ import annotations

import os

import numpy as np

from ..engine.artifact import export_path
from ..engine.task import RecordError, ServingNotSupported
from .data import FEATURE_MAP_FILE
from .features import CATEGORICAL, NUMERIC, SEQUENCE, FeatureError, FeatureMap, Table

CTR_LABELS = ["no_click", "click"]


def export_metadata(data, kind: str, checkpoint: str | None, out_dir: str) -> dict:
    """``labels`` and ``preprocess`` for export.yaml; writes the fitted feature map into ``out_dir``."""
    data.prepare(out_dir, checkpoint=checkpoint)
    meta = {"preprocess": {"family": "rec", "kind": kind, "feature_map": FEATURE_MAP_FILE}}
    if kind == "ctr":
        meta["labels"] = list(CTR_LABELS)
        meta["preprocess"]["output"] = "prob"  # the click probability
    return meta


def load_feature_map(model_dir: str, meta: dict) -> FeatureMap:
    pre = meta.get("preprocess") or {}
    name = pre.get("feature_map")
    if pre.get("family") != "rec" or not name:
        raise ServingNotSupported(f"{model_dir}: export.yaml names no feature map (exported before request serving "
                                  f"was supported: export the model again)")
    path = export_path(model_dir, "preprocess.feature_map", name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: feature map listed in export.yaml is missing")
    return FeatureMap.load(path)


def _columns(fmap: FeatureMap) -> dict[str, str]:
    """Source column -> kind of value it holds (``numeric``, ``categorical`` or ``sequence``)."""
    cols: dict[str, str] = {}
    for f in fmap.selected():
        if f.cross or not f.source:
            continue
        cols.setdefault(f.source, NUMERIC if f.type == NUMERIC else (SEQUENCE if f.type == SEQUENCE else CATEGORICAL))
    return cols


INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_number(value):
    """None when ``value`` is a finite number (or a numeric string, or blank: missing), else what is wrong."""
    if isinstance(value, str):
        try:
            value = float(value) if value.strip() else 0.0
        except ValueError:
            return f"{value[:40]!r} is not a number"
    elif not isinstance(value, (int, float)):
        return f"expected a number, got {type(value).__name__}"
    try:
        return None if np.isfinite(float(value)) else "not a finite number"
    except OverflowError:  # an integer beyond the float range
        return "not a finite number"


def _check_value(kind: str, value):
    """None when ``value`` fits a column of ``kind``, else what is wrong."""
    if value is None:
        return None
    if isinstance(value, bool):
        return f"expected a {'number' if kind == NUMERIC else 'string or integer'}, got a boolean"
    if kind == NUMERIC:
        return _check_number(value)
    if kind == SEQUENCE:
        if isinstance(value, str):
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) or _is_int(v) for v in value):
            return "expected a list of strings or integers (or one separated string)"
        big = [v for v in value if _is_int(v) and not INT64_MIN <= v <= INT64_MAX]
        return f"integer {str(big[0])[:40]} is outside the int64 range" if big else None
    if isinstance(value, str):
        return None
    if _is_int(value):
        return None if INT64_MIN <= value <= INT64_MAX else f"integer {str(value)[:40]} is outside the int64 range"
    return f"expected a string or integer, got {type(value).__name__}"


def _column_array(kind: str, values: list, sep: str) -> np.ndarray:
    if kind == NUMERIC:
        return np.array([np.nan if v is None or (isinstance(v, str) and not v.strip()) else float(v)
                         for v in values], np.float64)
    if kind == SEQUENCE:
        rows = [v if isinstance(v, list) else ([w for w in v.split(sep) if w] if v else []) for v in values]
        if all(isinstance(w, int) for r in rows for w in r):
            width = max(1, max(len(r) for r in rows))
            out = np.full((len(rows), width), -1, np.int64)
            for i, r in enumerate(rows):
                out[i, :len(r)] = r
            return out
        return np.array([sep.join(str(w) for w in r) for r in rows])
    if all(isinstance(v, int) for v in values):
        return np.array(values, np.int64)
    return np.array(["" if v is None else str(v) for v in values])


def _encode(fmap: FeatureMap, cols: dict[str, str], records: list) -> dict[str, np.ndarray]:
    sep = {f.source: f.sep for f in fmap.selected() if f.type == SEQUENCE}
    table = Table({c: _column_array(k, [r.get(c) for r in records], sep.get(c, " ")) for c, k in cols.items()},
                  None, "<request>")
    return fmap.transform(table)


def _value_kind(kind: str, value, sep: str) -> str:
    """How :func:`_column_array` holds ``value``: ``i`` (integers) or ``s`` (text); numbers are ``n``."""
    if kind == NUMERIC:
        return "n"
    if kind == SEQUENCE:
        tokens = value if isinstance(value, list) else ([w for w in value.split(sep) if w] if value else [])
        return "i" if all(_is_int(w) for w in tokens) else "s"
    return "i" if _is_int(value) else "s"


def _alike_groups(fmap: FeatureMap, cols: dict[str, str], records: list, good: list[int]) -> list[list[int]]:
    """The good records grouped by how each column holds their values: a group's column arrays hold each
    record's values exactly as that record's own arrays would (an integer column stays integers), so encoding
    a group gives every record the ids it gets alone."""
    sep = {f.source: f.sep for f in fmap.selected() if f.type == SEQUENCE}
    groups: dict[tuple, list[int]] = {}
    for i in good:
        key = tuple(_value_kind(kind, records[i][c], sep.get(c, " ")) for c, kind in cols.items())
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def _record_error(cols: dict[str, str], index: int, rec) -> RecordError | None:
    """The first problem of request record ``index`` (not an object, a bad id, a missing or bad field), or None."""
    if not isinstance(rec, dict):
        return RecordError(index, None, "record", f"expected a JSON object, got {type(rec).__name__}")
    rid = rec.get("id", index)
    if isinstance(rid, bool) or not isinstance(rid, (str, int)):
        return RecordError(index, None, "id", f"expected a string or integer, got {type(rid).__name__}")
    for c, kind in cols.items():
        if c not in rec:
            return RecordError(index, rid, c, f"missing field (the model reads columns {', '.join(cols)})")
        why = _check_value(kind, rec[c])
        if why:
            return RecordError(index, rid, c, why)
    return None


def _encode_group(fmap: FeatureMap, cols: dict[str, str], records: list, group: list[int], rows: dict,
                  errors: list) -> None:
    """Encoded rows of the records ``group`` into ``rows``; when the group fails, each record alone (its own
    error into ``errors``)."""
    try:
        arrays = _encode(fmap, cols, [records[i] for i in group])
        rows.update({i: {k: v[j] for k, v in arrays.items()} for j, i in enumerate(group)})
        return
    except (FeatureError, ValueError):
        pass
    for i in group:
        try:
            one = _encode(fmap, cols, [records[i]])
            rows[i] = {k: v[0] for k, v in one.items()}
        except (FeatureError, ValueError) as e:
            errors[i] = RecordError(i, records[i].get("id", i), "record", str(e).replace("<request>: ", ""))


def records_to_items(records: list, fmap: FeatureMap) -> tuple[list, list[RecordError | None]]:
    """(``{"ids": [n_ids], "values": [n_dense], "id": str}`` per good record or None, per-record errors)."""
    cols = _columns(fmap)
    errors: list[RecordError | None] = [_record_error(cols, i, rec) for i, rec in enumerate(records)]
    good = [i for i, e in enumerate(errors) if e is None]
    rows: dict[int, dict] = {}
    for group in _alike_groups(fmap, cols, records, good):
        _encode_group(fmap, cols, records, group, rows, errors)
    items: list = [None] * len(records)
    for i, row in rows.items():
        items[i] = {**row, "id": str(records[i].get("id", i))}
    return items, errors


def collate(items: list) -> dict[str, np.ndarray]:
    out = {k: np.stack([it[k] for it in items]) for k in items[0] if k != "id"}
    out["id"] = np.array([it["id"] for it in items])
    return out


def ctr_rows(outputs: dict[str, np.ndarray], batch) -> list[dict]:
    """One row per item: id, label (1 when the click probability is >= 0.5), label_name, probabilities."""
    p = np.asarray(next(iter(outputs.values())), np.float64).reshape(-1)
    ids = batch.get("id") if isinstance(batch, dict) else None
    rows = []
    for k, v in enumerate(p):
        y = int(v >= 0.5)
        rows.append({"id": str(ids[k]) if ids is not None else str(k), "label": y, "label_name": CTR_LABELS[y],
                     "probabilities": {CTR_LABELS[0]: round(1.0 - float(v), 6), CTR_LABELS[1]: round(float(v), 6)}})
    return rows
