"""Readers of the multimodal family's three data layouts, chosen by ``Data.format``:

* ``jsonl`` (users' own data): ``<root>/<split>.jsonl``, one object per line with ``id`` (optional,
  default: the record's 0-based index), ``text``, ``image`` (a path under ``root``), ``label`` (a name
  from ``label_names`` or an index; optional outside train/val), optional ``evidence_texts`` (list of
  str) and ``evidence_images`` (list of paths under ``root``).
* ``mr2`` (the network's original data): ``<root>/dataset_items_<split>.json``, an object keyed
  ``"0"``, ``"1"``, ... of ``{caption, image_path, label, direct_path, inv_path}``. Evidence is read
  per item from ``<direct_path>/direct_annotation.json`` (page titles / captions and images found by
  text search, images by file name in that folder) and ``<inv_path>/inverse_annotation.json``
  (titles / captions of pages found by image search), as the baseline's loader does.
* ``mvsa`` (MVSA-Single as CLMLF ships it): ``<root>/{train,dev,test}.json`` (split ``val`` reads
  ``dev.json``), a list of ``{id, text, emotion_label}`` with 0 positive, 1 neutral, 2 negative.
  No images (text only) unless ``mvsa_image_dir`` names a folder of ``<id>.jpg``.

Each reader returns :class:`Record` objects. Bad input raises :class:`DataError` naming the file, the
record (line number or key) and the field. Paths from data files are resolved under the data root and
may not leave it.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..engine.request_json import text_problem
from ..paths import PathOutsideRoot, contained_path
from .images import DataError

DEFAULT_LABEL_NAMES = {
    "jsonl": ["negative", "neutral", "positive"],
    "mr2": ["non-rumor", "rumor", "unverified"],
    "mvsa": ["positive", "neutral", "negative"],
}
FORMATS = ("jsonl", "mr2", "mvsa")


@dataclass
class Record:
    id: str
    text: str
    label: int                           # -1: unlabelled
    where: str                           # "file: line 3" / 'file: item "17"' for messages
    image: str | None = None          # path relative to the root
    evidence_texts: list[str] = field(default_factory=list)
    evidence_images: list[str] = field(default_factory=list)
    direct_path: str | None = None    # MR2: folders relative to the root, read lazily
    inv_path: str | None = None


def safe_join(root: str, rel, where: str, fieldname: str) -> str:
    """``root/rel`` as an absolute path; one that leaves ``root`` is a DataError naming the record and field.

    ``paths.contained_path`` makes the check: ``..``, absolute paths outside the root and symbolic links
    inside the root that point outside it are all rejected. The returned path is the joined one (links
    inside the root that stay inside it are fine).
    """
    try:
        return contained_path(root, rel)
    except PathOutsideRoot as e:
        if "lone surrogate" in e.reason:
            raise DataError(f"{where}: {fieldname}: {e.reason}, got {rel!r}") from None
        if e.reason.startswith("not a path"):
            raise DataError(f"{where}: {fieldname}: expected a non-empty path string, got {rel!r}") from None
        if "NUL" in e.reason:
            raise DataError(f"{where}: {fieldname}: path {rel!r} contains a NUL byte") from None
        through = f" through a symbolic link (it resolves to {e.resolved})" if e.resolved else ""
        raise DataError(f"{where}: {fieldname}: path {rel!r} escapes the data root {e.root}{through}") from None


class _DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs):
    """``object_pairs_hook`` of the readers: a JSON object naming a key twice would silently keep the last."""
    out = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _load_json_file(path: str):
    try:
        with open(path, encoding="utf-8-sig") as f:  # a UTF-8 byte-order mark is accepted
            return json.load(f, object_pairs_hook=_no_duplicate_keys)
    except _DuplicateKey as e:
        raise DataError(f"{path}: the key {e.args[0]!r} appears twice in one JSON object (one of them would be "
                        f"lost)") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deeply to read") from None


def _resolve_label(value, label_names: Sequence[str], where: str, fieldname: str = "label") -> int:
    n = len(label_names)
    if isinstance(value, bool):
        raise DataError(f"{where}: {fieldname}: expected a label name or index, got {value!r}")
    if isinstance(value, int):
        if 0 <= value < n:
            return int(value)
        raise DataError(f"{where}: {fieldname}: index {value} is outside the label set 0..{n - 1} "
                        f"({', '.join(label_names)})")
    if isinstance(value, str):
        if value in label_names:
            return list(label_names).index(value)
        raise DataError(f"{where}: {fieldname}: {value!r} is not one of the label names "
                        f"({', '.join(label_names)})")
    raise DataError(f"{where}: {fieldname}: expected a label name or index, got {type(value).__name__} "
                    f"({value!r})")


def _check_text(value, where: str, fieldname: str, allow_empty: bool) -> str:
    if not isinstance(value, str):
        raise DataError(f"{where}: {fieldname}: expected a string, got {type(value).__name__} ({value!r})")
    _check_unicode(value, where, fieldname)
    if not value.strip() and not allow_empty:
        raise DataError(f"{where}: {fieldname}: empty text (set Data.allow_empty_text=true to keep "
                        f"such records)")
    return value


def _check_unicode(value: str, where: str, fieldname: str) -> None:
    """A JSON string may spell a lone surrogate (``"\\ud800"``), which no tokenizer or UTF-8 file takes."""
    problem = text_problem(value)
    if problem:
        raise DataError(f"{where}: {fieldname}: {problem}")


def _record_id(value, where: str, seen: dict, position, used_at: str) -> str:
    """A record's id as a string: a string or integer, not used before in the file (``seen`` maps id ->
    position, reported as "already used <used_at> <position>")."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataError(f"{where}: id: expected a string or integer, got {value!r}")
    rid = str(value)
    _check_unicode(rid, where, "id")
    if rid in seen:
        raise DataError(f"{where}: id: {rid!r} already used {used_at} {seen[rid]}")
    seen[rid] = position
    return rid


def _str_list(value, where: str, fieldname: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise DataError(f"{where}: {fieldname}: expected a list of strings, got {type(value).__name__}")
    for i, v in enumerate(value):
        if not isinstance(v, str):
            raise DataError(f"{where}: {fieldname}[{i}]: expected a string, got {type(v).__name__} ({v!r})")
        _check_unicode(v, where, f"{fieldname}[{i}]")
    return list(value)


def _check_labels_consistent(records: list[Record], present: list[bool], path: str,
                             require_label: bool) -> None:
    if not records:
        return
    if require_label:
        for r, p in zip(records, present, strict=True):
            if not p:
                raise DataError(f"{r.where}: label: missing (labels are required in this split)")
    elif any(present) and not all(present):
        r = records[present.index(False)]
        raise DataError(f"{r.where}: label: missing while other records of {path} have one "
                        f"(label every record or none)")


# ---------------------------------------------------------------------------- JSONL
def read_jsonl(path: str, root: str, label_names: Sequence[str], require_label: bool = False,
               need_image: bool = True, allow_empty_text: bool = False) -> list[Record]:
    """Records of a JSONL file (see the module doc). Image paths are checked against ``root``."""
    records: list[Record] = []
    present: list[bool] = []
    seen_ids: dict[str, int] = {}
    for lineno, line in enumerate(_utf8_lines(path), 1):
        if not line.strip():
            continue
        where = f"{path}: line {lineno}"
        obj = _json_object_line(line, where)
        rid = _record_id(obj.get("id", len(records)), where, seen_ids, lineno, "on line")
        record, has_label = _jsonl_record(obj, rid, f"{path}: line {lineno} (id {rid})", root, label_names,
                                          need_image, allow_empty_text)
        records.append(record)
        present.append(has_label)
    _check_labels_consistent(records, present, path, require_label)
    return records


def _utf8_lines(path: str) -> list[str]:
    """The lines of a UTF-8 text file (a byte-order mark is accepted)."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found")
    with open(path, encoding="utf-8-sig") as f:
        try:
            return f.readlines()
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def _json_object_line(line: str, where: str) -> dict:
    try:
        obj = json.loads(line.rstrip("\r\n"), object_pairs_hook=_no_duplicate_keys)
    except _DuplicateKey as e:
        raise DataError(f"{where}: the key {e.args[0]!r} appears twice in the record (one would be lost)") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: invalid JSON at column {e.colno}: {e.msg}") from None
    except RecursionError:
        raise DataError(f"{where}: JSON nested too deeply to read") from None
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _jsonl_record(obj: dict, rid: str, where: str, root: str, label_names: Sequence[str], need_image: bool,
                  allow_empty_text: bool):
    """(Record, whether it has a label) of one JSONL object; every path is checked to stay under ``root``."""
    if "text" not in obj:
        raise DataError(f"{where}: text: missing field")
    text = _check_text(obj["text"], where, "text", allow_empty_text)
    image = obj.get("image")
    if image is None:
        if need_image:
            raise DataError(f"{where}: image: missing field (a path under the data root; use "
                            f"Arch.modalities=[text] for text-only data)")
    else:
        safe_join(root, image, where, "image")
    ev_texts = [t for t in _str_list(obj.get("evidence_texts"), where, "evidence_texts") if t.strip()]
    ev_images = _str_list(obj.get("evidence_images"), where, "evidence_images")
    for i, p in enumerate(ev_images):
        safe_join(root, p, where, f"evidence_images[{i}]")
    label_value = obj.get("label")
    has_label = label_value is not None
    label = _resolve_label(label_value, label_names, where) if has_label else -1
    return Record(id=rid, text=text, label=label, where=where, image=image, evidence_texts=ev_texts,
                  evidence_images=ev_images), has_label


# ---------------------------------------------------------------------------- MR2
def read_mr2_items(path: str, root: str, label_names: Sequence[str], require_label: bool = False,
                   need_image: bool = True, allow_empty_text: bool = False) -> list[Record]:
    """Records of an MR2 ``dataset_items_<split>.json``; evidence is read later, per item."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found")
    data = _load_json_file(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object keyed by item id (\"0\", \"1\", ...), "
                        f"got {type(data).__name__}")
    records: list[Record] = []
    present: list[bool] = []
    for key, item in data.items():
        where = f'{path}: item "{key}"'
        _check_unicode(key, where, "id")
        if not isinstance(item, dict):
            raise DataError(f"{where}: expected an object, got {type(item).__name__}")
        if "caption" not in item:
            raise DataError(f"{where}: caption: missing field")
        text = _check_text(item["caption"], where, "caption", allow_empty_text)
        image = item.get("image_path")
        if image is None:
            if need_image:
                raise DataError(f"{where}: image_path: missing field")
        else:
            safe_join(root, image, where, "image_path")
        direct = item.get("direct_path")
        inv = item.get("inv_path")
        if direct is not None:
            safe_join(root, direct, where, "direct_path")
        if inv is not None:
            safe_join(root, inv, where, "inv_path")
        has_label = item.get("label") is not None
        label = _resolve_label(item["label"], label_names, where) if has_label else -1
        records.append(Record(id=str(key), text=text, label=label, where=where, image=image,
                              direct_path=direct, inv_path=inv))
        present.append(has_label)
    _check_labels_consistent(records, present, path, require_label)
    return records


def _mr2_clean(s: str) -> str:
    """The baseline's ``process_string``: HTML apostrophes to spaces, ``<b>`` tags removed."""
    return s.replace("&#39;", " ").replace("<b>", "").replace("</b>", "")


def _page_captions(page: dict, title_key: str, where: str) -> list[str]:
    out = []
    if title_key in page:
        if not isinstance(page[title_key], str):
            raise DataError(f"{where}: {title_key}: expected a string, got {type(page[title_key]).__name__}")
        out.append(_mr2_clean(page[title_key]))
    if "caption" in page:
        caps = page["caption"]
        values = caps.values() if isinstance(caps, dict) else caps if isinstance(caps, list) else None
        if values is None:
            raise DataError(f"{where}: caption: expected an object or list of strings")
        seen = []
        for v in values:
            if not isinstance(v, str):
                raise DataError(f"{where}: caption: expected strings, got {type(v).__name__}")
            if v in seen:
                continue
            seen.append(v)
            out.append(_mr2_clean(v))
    return out


INVERSE_CAPTION_KEYS = ("all_fully_matched_captions", "all_partially_matched_captions")
INVERSE_TITLE_ONLY_KEYS = ("partially_matched_no_text", "fully_matched_no_text")
DIRECT_KEYS = ("images_with_captions", "images_with_no_captions", "images_with_caption_matched_tags")


def _entries(ann: dict, key: str, where: str) -> list[dict]:
    lst = ann.get(key, [])
    if lst is None:
        return []
    if not isinstance(lst, list):
        raise DataError(f"{where}: {key}: expected a list, got {type(lst).__name__}")
    for i, e in enumerate(lst):
        if not isinstance(e, dict):
            raise DataError(f"{where}: {key}[{i}]: expected an object, got {type(e).__name__}")
    return lst


def mr2_inverse_captions(ann: dict, where: str) -> list[str]:
    """Texts of ``inverse_annotation.json`` in the baseline's order (without its leading '')."""
    caps: list[str] = []
    for key in INVERSE_CAPTION_KEYS:
        for i, page in enumerate(_entries(ann, key, where)):
            caps.extend(_page_captions(page, "title", f"{where}: {key}[{i}]"))
    for key in INVERSE_TITLE_ONLY_KEYS:
        for i, page in enumerate(_entries(ann, key, where)):
            if "title" in page:
                if not isinstance(page["title"], str):
                    raise DataError(f"{where}: {key}[{i}]: title: expected a string")
                caps.append(_mr2_clean(page["title"]))
    return caps


def mr2_direct_captions(ann: dict, where: str) -> list[str]:
    """Texts of ``direct_annotation.json`` (page titles and captions; without the leading '')."""
    caps: list[str] = []
    for key in DIRECT_KEYS:
        for i, page in enumerate(_entries(ann, key, where)):
            caps.extend(_page_captions(page, "page_title", f"{where}: {key}[{i}]"))
    return caps


def mr2_direct_images(ann: dict, where: str) -> list[str]:
    """File names of the text-search evidence images (looked up by name in the item's folder)."""
    names = []
    for key in DIRECT_KEYS:
        for i, page in enumerate(_entries(ann, key, where)):
            p = page.get("image_path")
            if p is None:
                continue
            if not isinstance(p, str) or not p.strip():
                raise DataError(f"{where}: {key}[{i}]: image_path: expected a non-empty string")
            names.append(p.replace("\\", "/").split("/")[-1])
    return names


# ---------------------------------------------------------------------------- MVSA
def read_mvsa(path: str, root: str, label_names: Sequence[str], require_label: bool = False,
              image_dir: str = "", allow_empty_text: bool = False,
              native_names: Sequence[str] = DEFAULT_LABEL_NAMES["mvsa"]) -> list[Record]:
    """Records of an MVSA split file (CLMLF's JSON list of ``{id, text, emotion_label}``)."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found")
    data = _load_json_file(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    remap = _native_remap(native_names, label_names, path)
    records: list[Record] = []
    present: list[bool] = []
    seen = {}
    for i, obj in enumerate(data):
        where = f"{path}: record {i}"
        if not isinstance(obj, dict):
            raise DataError(f"{where}: expected an object, got {type(obj).__name__}")
        if "id" not in obj:
            raise DataError(f"{where}: id: missing field")
        rid = _record_id(obj["id"], where, seen, i, "by record")
        where = f"{path}: record {i} (id {rid})"
        if "text" not in obj:
            raise DataError(f"{where}: text: missing field")
        text = _check_text(obj["text"], where, "text", allow_empty_text)
        value = obj.get("emotion_label")
        has_label = value is not None
        if has_label:
            if isinstance(value, bool) or not isinstance(value, int):
                raise DataError(f"{where}: emotion_label: expected an integer 0..{len(native_names) - 1}, "
                                f"got {value!r}")
            label = remap[_resolve_label(value, native_names, where, "emotion_label")]
        else:
            label = -1
        image = None
        if image_dir:
            image = os.path.join(image_dir, f"{rid}.jpg")
            safe_join(root, image, where, "image")
        records.append(Record(id=rid, text=text, label=label, where=where, image=image))
        present.append(has_label)
    _check_labels_consistent(records, present, path, require_label)
    return records


def _native_remap(native: Sequence[str], wanted: Sequence[str], path: str) -> list[int]:
    """Index map from a format's native label order to the configured ``label_names`` order."""
    if list(wanted) == list(native):
        return list(range(len(native)))
    if sorted(wanted) != sorted(native):
        raise DataError(f"{path}: Data.label_names {list(wanted)} must name the same classes as the "
                        f"format's labels {list(native)} (in any order)")
    return [list(wanted).index(n) for n in native]
