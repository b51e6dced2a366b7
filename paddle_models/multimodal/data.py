"""Readers, image pipeline, Dataset and collate function of the multimodal classifier.

Three layouts, chosen by ``Data.format``:

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

Items come out of :class:`MultimodalDataset` as Python structures with images already decoded and
transformed (in DataLoader workers); :class:`MultimodalCollate` tokenizes and pads them into the
numpy batch the network consumes::

    input_ids int64 [B, L]          attention_mask int64 [B, L]          (1 = real token)
    caption_ids int64 [B, Nc, L]    caption_mask int64 [B, Nc, L]        (all-zero rows = no caption)
    image float32 [B, 3, H, W]      evidence_images float32 [B, Ni, 3, H, W]
    evidence_mask float32 [B, Ni]   (1 = image present)
    label int64 [B]                 (-1 = unlabelled)
    id  numpy str [B]

Bad input raises :class:`DataError` naming the file, the record (line number or key) and the field.
Paths from data files are resolved under the data root and may not leave it.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

try:  # the Dataset base class; the readers also work without paddle
    from paddle.io import Dataset as _DatasetBase
except Exception:  # pragma: no cover - paddle is a dependency of the package
    _DatasetBase = object

logger = logging.getLogger("paddle_models.data")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DEFAULT_LABEL_NAMES = {
    "jsonl": ["negative", "neutral", "positive"],
    "mr2": ["non-rumor", "rumor", "unverified"],
    "mvsa": ["positive", "neutral", "negative"],
}
BAD_IMAGE_POLICIES = ("error", "skip", "blank")
FORMATS = ("jsonl", "mr2", "mvsa")


class DataError(ValueError):
    """Invalid data: the message names the file, the record and the field."""


# ============================================================================ image pipeline
def _pil():
    from PIL import Image
    return Image


def load_rgb(path: str):
    """Open an image as an RGB ``PIL.Image``.

    GIF (and other animations): the first frame. Transparent images (RGBA, LA, palette with a
    transparent colour) are composited on white. Greyscale, palette, CMYK, 16-bit and float images
    are converted to 8-bit RGB. Raises ``OSError`` / ``ValueError`` for unreadable files.
    """
    Image = _pil()
    with Image.open(path) as im:
        try:
            im.seek(0)
        except EOFError:  # pragma: no cover - single-frame formats
            pass
        im.load()
        mode = im.mode
        if mode == "P":
            im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
            mode = im.mode
        if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
            rgba = im.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert("RGB")
        if mode.startswith("I;16") or mode in ("I", "F"):
            arr = np.asarray(im, dtype=np.float64)
            if mode.startswith("I;16"):
                arr = arr / 257.0
            arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
            return Image.fromarray(arr, mode="L").convert("RGB")
        if mode != "RGB":
            return im.convert("RGB")
        return im.copy()


class ImageTransform:
    """Resize (shorter side, bilinear) -> CenterCrop -> ToTensor (/255, CHW) -> Normalize.

    The same operations and rounding as ``paddle.vision.transforms`` with the PIL backend
    (``Resize(256), CenterCrop(224), ToTensor(), Normalize(ImageNet)`` in the baseline).
    """

    def __init__(self, resize: int = 256, crop: int = 224, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD):
        resize, crop = int(resize), int(crop)
        if crop <= 0 or resize <= 0:
            raise ValueError(f"image sizes must be positive (resize={resize}, crop={crop})")
        if resize < crop:
            raise ValueError(f"image_resize={resize} is smaller than image_crop={crop}")
        if len(mean) != 3 or len(std) != 3 or any(float(s) <= 0 for s in std):
            raise ValueError(f"image mean/std must be 3 numbers with std > 0, got {mean} / {std}")
        self.resize = resize
        self.crop = crop
        self.mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)

    @property
    def shape(self) -> Tuple[int, int, int]:
        return (3, self.crop, self.crop)

    def resize_crop(self, img):
        """The PIL part: shorter side to ``resize`` (no-op when it already is), centre crop."""
        Image = _pil()
        w, h = img.size
        s = self.resize
        if not ((w <= h and w == s) or (h <= w and h == s)):
            if w < h:
                img = img.resize((s, int(s * h / w)), Image.BILINEAR)
            else:
                img = img.resize((int(s * w / h), s), Image.BILINEAR)
        w, h = img.size
        top = int(round((h - self.crop) / 2.0))
        left = int(round((w - self.crop) / 2.0))
        return img.crop((left, top, left + self.crop, top + self.crop))

    def __call__(self, img) -> np.ndarray:
        img = self.resize_crop(img)
        arr = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0
        return ((arr - self.mean) / self.std).astype(np.float32, copy=False)

    def blank(self) -> np.ndarray:
        return np.zeros(self.shape, dtype=np.float32)


# ============================================================================ records
@dataclass
class Record:
    id: str
    text: str
    label: int                           # -1: unlabelled
    where: str                           # "file: line 3" / 'file: item "17"' for messages
    image: Optional[str] = None          # path relative to the root
    evidence_texts: List[str] = field(default_factory=list)
    evidence_images: List[str] = field(default_factory=list)
    direct_path: Optional[str] = None    # MR2: folders relative to the root, read lazily
    inv_path: Optional[str] = None


def safe_join(root: str, rel, where: str, fieldname: str) -> str:
    """``root/rel`` as an absolute path; an absolute ``rel`` or one that leaves ``root`` is an error.

    The check is on the normalised path (``..`` and absolute paths are rejected); symbolic links
    placed inside the root by its owner are followed.
    """
    if not isinstance(rel, str) or not rel.strip():
        raise DataError(f"{where}: {fieldname}: expected a non-empty path string, got {rel!r}")
    if "\x00" in rel:
        raise DataError(f"{where}: {fieldname}: path {rel!r} contains a NUL byte")
    root_abs = os.path.abspath(root)
    if os.path.isabs(rel) or rel.startswith("~"):
        full = os.path.abspath(os.path.expanduser(rel))
    else:
        full = os.path.abspath(os.path.join(root_abs, rel))
    if os.path.commonpath([root_abs, full]) != root_abs:
        raise DataError(f"{where}: {fieldname}: path {rel!r} escapes the data root {root_abs}")
    return full


def _load_json_file(path: str):
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


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
    if not value.strip() and not allow_empty:
        raise DataError(f"{where}: {fieldname}: empty text (set Data.allow_empty_text=true to keep "
                        f"such records)")
    return value


def _record_id(value, where: str, seen: dict, position, used_at: str) -> str:
    """A record's id as a string: a string or integer, not used before in the file (``seen`` maps id ->
    position, reported as "already used <used_at> <position>")."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataError(f"{where}: id: expected a string or integer, got {value!r}")
    rid = str(value)
    if rid in seen:
        raise DataError(f"{where}: id: {rid!r} already used {used_at} {seen[rid]}")
    seen[rid] = position
    return rid


def _str_list(value, where: str, fieldname: str) -> List[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise DataError(f"{where}: {fieldname}: expected a list of strings, got {type(value).__name__}")
    for i, v in enumerate(value):
        if not isinstance(v, str):
            raise DataError(f"{where}: {fieldname}[{i}]: expected a string, got {type(v).__name__} ({v!r})")
    return list(value)


def _check_labels_consistent(records: List[Record], present: List[bool], path: str,
                             require_label: bool) -> None:
    if not records:
        return
    if require_label:
        for r, p in zip(records, present):
            if not p:
                raise DataError(f"{r.where}: label: missing (labels are required in this split)")
    elif any(present) and not all(present):
        r = records[present.index(False)]
        raise DataError(f"{r.where}: label: missing while other records of {path} have one "
                        f"(label every record or none)")


# ---------------------------------------------------------------------------- JSONL
def read_jsonl(path: str, root: str, label_names: Sequence[str], require_label: bool = False,
               need_image: bool = True, allow_empty_text: bool = False) -> List[Record]:
    """Records of a JSONL file (see the module doc). Image paths are checked against ``root``."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found")
    records: List[Record] = []
    present: List[bool] = []
    seen_ids: Dict[str, int] = {}
    with open(path, "r", encoding="utf-8") as f:
        try:
            lines = f.readlines()
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}: line {lineno}"
        try:
            obj = json.loads(line.rstrip("\r\n"))
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: invalid JSON at column {e.colno}: {e.msg}") from None
        if not isinstance(obj, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        rid = _record_id(obj.get("id", len(records)), where, seen_ids, lineno, "on line")
        where = f"{path}: line {lineno} (id {rid})"
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
        records.append(Record(id=rid, text=text, label=label, where=where, image=image,
                              evidence_texts=ev_texts, evidence_images=ev_images))
        present.append(has_label)
    _check_labels_consistent(records, present, path, require_label)
    return records


# ---------------------------------------------------------------------------- MR2
def read_mr2_items(path: str, root: str, label_names: Sequence[str], require_label: bool = False,
                   need_image: bool = True, allow_empty_text: bool = False) -> List[Record]:
    """Records of an MR2 ``dataset_items_<split>.json``; evidence is read later, per item."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found")
    data = _load_json_file(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object keyed by item id (\"0\", \"1\", ...), "
                        f"got {type(data).__name__}")
    records: List[Record] = []
    present: List[bool] = []
    for key, item in data.items():
        where = f'{path}: item "{key}"'
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


def _page_captions(page: dict, title_key: str, where: str) -> List[str]:
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


def _entries(ann: dict, key: str, where: str) -> List[dict]:
    lst = ann.get(key, [])
    if lst is None:
        return []
    if not isinstance(lst, list):
        raise DataError(f"{where}: {key}: expected a list, got {type(lst).__name__}")
    for i, e in enumerate(lst):
        if not isinstance(e, dict):
            raise DataError(f"{where}: {key}[{i}]: expected an object, got {type(e).__name__}")
    return lst


def mr2_inverse_captions(ann: dict, where: str) -> List[str]:
    """Texts of ``inverse_annotation.json`` in the baseline's order (without its leading '')."""
    caps: List[str] = []
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


def mr2_direct_captions(ann: dict, where: str) -> List[str]:
    """Texts of ``direct_annotation.json`` (page titles and captions; without the leading '')."""
    caps: List[str] = []
    for key in DIRECT_KEYS:
        for i, page in enumerate(_entries(ann, key, where)):
            caps.extend(_page_captions(page, "page_title", f"{where}: {key}[{i}]"))
    return caps


def mr2_direct_images(ann: dict, where: str) -> List[str]:
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
              native_names: Sequence[str] = DEFAULT_LABEL_NAMES["mvsa"]) -> List[Record]:
    """Records of an MVSA split file (CLMLF's JSON list of ``{id, text, emotion_label}``)."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found")
    data = _load_json_file(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    remap = _native_remap(native_names, label_names, path)
    records: List[Record] = []
    present: List[bool] = []
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


def _native_remap(native: Sequence[str], wanted: Sequence[str], path: str) -> List[int]:
    """Index map from a format's native label order to the configured ``label_names`` order."""
    if list(wanted) == list(native):
        return list(range(len(native)))
    if sorted(wanted) != sorted(native):
        raise DataError(f"{path}: Data.label_names {list(wanted)} must name the same classes as the "
                        f"format's labels {list(native)} (in any order)")
    return [list(wanted).index(n) for n in native]


# ============================================================================ shared counters
class _SharedCounts:
    """Per-item counters shared with forked DataLoader workers (``multiprocessing.Array``).

    Values are *set* per item (not incremented), so re-reading an item in a later epoch does not
    count twice. Pickling (spawned workers) falls back to a private copy.
    """

    def __init__(self, n_items: int, n_fields: int):
        self.n_fields = n_fields
        try:
            self._arr = multiprocessing.Array("i", max(1, n_items * n_fields), lock=False)
        except Exception:  # pragma: no cover - no shared memory available
            self._arr = np.zeros(max(1, n_items * n_fields), dtype=np.int32)

    def set(self, item: int, fieldno: int, value: int) -> None:
        self._arr[item * self.n_fields + fieldno] = int(value)

    def get(self, item: int, fieldno: int) -> int:
        return int(self._arr[item * self.n_fields + fieldno])

    def column(self, fieldno: int) -> np.ndarray:
        arr = np.frombuffer(self._arr, dtype=np.int32) if not isinstance(self._arr, np.ndarray) else self._arr
        return arr[fieldno::self.n_fields]

    def __getstate__(self):
        return {"n_fields": self.n_fields, "values": np.array(self._arr[:], dtype=np.int32)}

    def __setstate__(self, state):
        self.n_fields = state["n_fields"]
        self._arr = state["values"]


_BAD_IMAGES, _MISSING_ANN = 0, 1


# ============================================================================ Dataset
class MultimodalDataset(_DatasetBase):
    """Map-style dataset of posts with their evidence; images are decoded here (in workers).

    ``__getitem__`` returns ``{"id", "text", "captions", "image", "evidence_images", "label"}``:
    ``image`` a float32 ``[3, H, W]`` array (None when images are not used), ``evidence_images`` a
    float32 ``[n, 3, H, W]`` array (n may be 0), ``captions`` a list of str.

    ``max_captions`` / ``max_evidence_images``: keep the first N per item (0: none, -1: all).

    Bad images (missing or undecodable), by ``on_bad_image``:
    ``error`` raises naming the item, the field and the file; ``skip`` drops items whose post image
    file is missing (checked here, when images are used) and drops bad evidence images (a post image
    that exists but cannot be decoded is blanked, the item being already listed); ``blank`` replaces
    any bad image by zeros (an evidence image keeps its slot). :meth:`summary` gives the counts.
    """

    def __init__(self, records: List[Record], root: str, *, fmt: str, label_names: Sequence[str],
                 transform: ImageTransform, on_bad_image: str = "error", use_text: bool = True,
                 use_image: bool = True, max_captions: int = -1, max_evidence_images: int = -1,
                 mr2_baseline_captions: bool = True, source: str = ""):
        if on_bad_image not in BAD_IMAGE_POLICIES:
            raise ValueError(f"Data.on_bad_image must be one of {', '.join(BAD_IMAGE_POLICIES)}, "
                             f"got {on_bad_image!r}")
        if not use_text and not use_image:
            raise ValueError("at least one of use_text / use_image must be true")
        self.records = records
        self.root = os.path.abspath(root)
        self.fmt = fmt
        self.label_names = list(label_names)
        self.transform = transform
        self.on_bad_image = on_bad_image
        self.use_text = use_text
        self.use_image = use_image
        self.max_captions = int(max_captions)
        self.max_evidence_images = int(max_evidence_images)
        self.mr2_baseline_captions = mr2_baseline_captions
        self.source = source
        self.skipped_items: List[str] = []
        if use_image and on_bad_image == "skip":
            kept = []
            for r in records:
                if r.image is not None and not os.path.isfile(
                        safe_join(self.root, r.image, r.where, "image")):
                    self.skipped_items.append(r.id)
                    continue
                kept.append(r)
            if self.skipped_items:
                logger.warning("%s: skipped %d of %d items whose image file is missing (first: %s)",
                               source, len(self.skipped_items), len(records), self.skipped_items[0])
            self.records = records = kept
        self._counts = _SharedCounts(len(records), 2)

    def limit(self, n: int) -> "MultimodalDataset":
        """Keep only the first ``n`` items (``n`` <= 0: all)."""
        if n > 0 and len(self.records) > n:
            self.records = self.records[:n]
            self._counts = _SharedCounts(len(self.records), 2)
        return self

    # ---- sizes and summaries --------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.records)

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    @property
    def labels(self) -> np.ndarray:
        return np.array([r.label for r in self.records], dtype=np.int64)

    @property
    def ids(self) -> List[str]:
        return [r.id for r in self.records]

    def summary(self) -> dict:
        """Counts for the run summary: bad images met so far (all workers) and the policy applied."""
        bad = self._counts.column(_BAD_IMAGES)
        missing = self._counts.column(_MISSING_ANN)
        return {
            "source": self.source,
            "items": len(self.records),
            "on_bad_image": self.on_bad_image,
            "bad_images": int(bad.sum()) + len(self.skipped_items),
            "items_with_bad_images": int((bad > 0).sum()) + len(self.skipped_items),
            "skipped_items": len(self.skipped_items),
            "missing_annotation_files": int(missing.sum()),
        }

    def iter_texts(self, include_evidence: bool = True) -> Iterator[str]:
        """Post texts (and evidence texts) for tokenizer training; MR2 annotations are read here."""
        for idx, r in enumerate(self.records):
            yield r.text
            if include_evidence:
                for t in self._captions(idx, r, count=False):
                    if t.strip():
                        yield t

    # ---- evidence -------------------------------------------------------------------------------
    def _read_annotation(self, rel_dir: Optional[str], fname: str, r: Record,
                         fieldname: str) -> Optional[dict]:
        """An item's annotation JSON; None when the folder or file is absent (counted)."""
        if rel_dir is None:
            return None
        folder = safe_join(self.root, rel_dir, r.where, fieldname)
        path = os.path.join(folder, fname)
        if not os.path.isfile(path):
            return None
        try:
            ann = _load_json_file(path)
        except DataError as e:
            raise DataError(f"{r.where}: {fieldname}: {e}") from None
        if not isinstance(ann, dict):
            raise DataError(f"{r.where}: {fieldname}: {path}: expected a JSON object, "
                            f"got {type(ann).__name__}")
        return ann

    def _mr2_evidence(self, idx: int, r: Record, count: bool = True):
        inv = self._read_annotation(r.inv_path, "inverse_annotation.json", r, "inv_path")
        direct = self._read_annotation(r.direct_path, "direct_annotation.json", r, "direct_path")
        if count:
            missing = int(r.inv_path is not None and inv is None) + \
                int(r.direct_path is not None and direct is None)
            self._counts.set(idx, _MISSING_ANN, missing)
        captions: List[str] = []
        inv_where = f"{r.where}: {os.path.join(r.inv_path or '', 'inverse_annotation.json')}"
        dir_where = f"{r.where}: {os.path.join(r.direct_path or '', 'direct_annotation.json')}"
        if self.mr2_baseline_captions:
            # the baseline: [''] + inverse texts + [''] + direct texts, even when a file is absent
            captions.append("")
            if inv is not None:
                captions.extend(mr2_inverse_captions(inv, inv_where))
            captions.append("")
            if direct is not None:
                captions.extend(mr2_direct_captions(direct, dir_where))
        else:
            if inv is not None:
                captions.extend(c for c in mr2_inverse_captions(inv, inv_where) if c.strip())
            if direct is not None:
                captions.extend(c for c in mr2_direct_captions(direct, dir_where) if c.strip())
        images: List[str] = []
        if direct is not None:
            for name in mr2_direct_images(direct, dir_where):
                images.append(os.path.join(r.direct_path, name))
        return captions, images

    def _captions(self, idx: int, r: Record, count: bool = True) -> List[str]:
        if self.fmt == "mr2":
            caps, _ = self._mr2_evidence(idx, r, count=count)
        else:
            caps = list(r.evidence_texts)
        if self.max_captions >= 0:
            caps = caps[: self.max_captions]
        return caps

    # ---- images ---------------------------------------------------------------------------------
    def _load_image(self, r: Record, rel: str, fieldname: str) -> Optional[np.ndarray]:
        """Transformed image, or None when it is bad and the policy is not ``error``."""
        path = safe_join(self.root, rel, r.where, fieldname)
        if not os.path.isfile(path):
            problem = "file not found"
        else:
            try:
                return self.transform(load_rgb(path))
            except Exception as e:  # PIL raises OSError, ValueError, SyntaxError, DecompressionBomb...
                problem = f"cannot decode image ({type(e).__name__}: {e})"
        msg = f"{r.where}: {fieldname} {rel!r}: {problem} ({path})"
        if self.on_bad_image == "error":
            raise DataError(msg + "; set Data.on_bad_image=skip or blank to go on without it")
        logger.debug("%s; %s", msg, "skipped" if self.on_bad_image == "skip" else "blanked")
        return None

    def __getitem__(self, idx: int) -> dict:
        r = self.records[idx]
        captions: List[str] = []
        ev_rel: List[str] = []
        if self.fmt == "mr2":
            if (self.use_text and self.max_captions != 0) or \
                    (self.use_image and self.max_evidence_images != 0):
                captions, ev_rel = self._mr2_evidence(idx, r)
        else:
            captions = list(r.evidence_texts)
            ev_rel = list(r.evidence_images)
        if self.max_captions >= 0:
            captions = captions[: self.max_captions]
        if self.max_evidence_images >= 0:
            ev_rel = ev_rel[: self.max_evidence_images]
        if not self.use_text:
            captions = []
        image = None
        evidence = []
        bad = 0
        if self.use_image:
            if r.image is None:
                raise DataError(f"{r.where}: image: missing (this dataset has no images; use "
                                f"Arch.modalities=[text])")
            image = self._load_image(r, r.image, "image_path" if self.fmt == "mr2" else "image")
            if image is None:
                bad += 1
                image = self.transform.blank()
            for k, rel in enumerate(ev_rel):
                arr = self._load_image(r, rel, f"evidence_images[{k}]")
                if arr is None:
                    bad += 1
                    if self.on_bad_image == "blank":
                        evidence.append(self.transform.blank())
                    continue
                evidence.append(arr)
            self._counts.set(idx, _BAD_IMAGES, bad)
        c, s = self.transform.shape[0], self.transform.crop
        ev = np.stack(evidence).astype(np.float32, copy=False) if evidence else \
            np.zeros((0, c, s, s), dtype=np.float32)
        return {"id": r.id, "text": r.text if self.use_text else "", "captions": captions,
                "image": image, "evidence_images": ev, "label": int(r.label)}


# ============================================================================ collate
class MultimodalCollate:
    """Tokenize, pad and stack items into the network's batch (see the module doc).

    ``L = min(max_len, longest text in the batch)`` (or ``max_len`` with ``pad_to_max_len``),
    ``Nc = max(1, most captions)``, ``Ni = max(1, most evidence images)``. Texts longer than
    ``max_len`` tokens (``[CLS]`` and ``[SEP]`` included) are truncated. With ``use_text=False`` the
    post is ``[CLS] [SEP]`` and there are no captions; with ``use_image=False`` images are zeros.
    Token ids of each distinct text are cached (``cache_size`` entries).

    ``id`` is a numpy str array; ``paddle.io.DataLoader`` cannot carry numpy str arrays (its
    batch-to-tensor conversion fails on them, with or without workers), so a collate used directly as
    its ``collate_fn`` should be built with ``ids_as_list=True`` (a Python list of str passes through
    unchanged).
    """

    def __init__(self, tokenizer, max_len: int = 128, pad_to_max_len: bool = False,
                 image_size: int = 224, use_text: bool = True, use_image: bool = True,
                 cache_size: int = 200000, ids_as_list: bool = False):
        if max_len < 3:
            raise ValueError(f"Data.max_len={max_len}: must be at least 3 ([CLS] token [SEP])")
        self.tokenizer = tokenizer
        self.max_len = int(max_len)
        self.pad_to_max_len = bool(pad_to_max_len)
        self.image_size = int(image_size)
        self.use_text = use_text
        self.use_image = use_image
        self.pad_id = int(tokenizer.pad_token_id)
        self.cls_id = int(tokenizer.cls_token_id)
        self.sep_id = int(tokenizer.sep_token_id)
        self.cache_size = int(cache_size)
        self.ids_as_list = bool(ids_as_list)
        self._cache: "OrderedDict[str, List[int]]" = OrderedDict()
        self.truncated = 0  # texts cut to max_len (this process)

    def encode(self, text: str) -> List[int]:
        """``[CLS] ids [SEP]`` of one text, at most ``max_len`` ids (same as the tokenizer's
        ``__call__(text, max_length=max_len, truncation=True)``)."""
        ids = self._cache.get(text)
        if ids is None:
            body = self.tokenizer.convert_tokens_to_ids(self.tokenizer.tokenize(text)) if text else []
            if len(body) > self.max_len - 2:
                body = body[: self.max_len - 2]
                self.truncated += 1
            ids = [self.cls_id] + body + [self.sep_id]
            if self.cache_size > 0:
                self._cache[text] = ids
                if len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return ids

    def __call__(self, samples: List[dict]) -> Dict[str, np.ndarray]:
        b = len(samples)
        if b == 0:
            raise ValueError("collate: empty batch")
        if self.use_text:
            posts = [self.encode(s["text"]) for s in samples]
            caps = [[self.encode(c) for c in s["captions"]] for s in samples]
        else:
            posts = [[self.cls_id, self.sep_id] for _ in samples]
            caps = [[] for _ in samples]
        longest = max([len(p) for p in posts] + [len(c) for cs in caps for c in cs])
        L = self.max_len if self.pad_to_max_len else min(self.max_len, longest)
        nc = max(1, max(len(cs) for cs in caps))
        input_ids = np.full((b, L), self.pad_id, dtype=np.int64)
        attention = np.zeros((b, L), dtype=np.int64)
        caption_ids = np.full((b, nc, L), self.pad_id, dtype=np.int64)
        caption_mask = np.zeros((b, nc, L), dtype=np.int64)
        for i, p in enumerate(posts):
            input_ids[i, :len(p)] = p
            attention[i, :len(p)] = 1
            for j, c in enumerate(caps[i]):
                caption_ids[i, j, :len(c)] = c
                caption_mask[i, j, :len(c)] = 1

        s = self.image_size
        ni = max(1, max(int(x["evidence_images"].shape[0]) for x in samples)) if self.use_image else 1
        image = np.zeros((b, 3, s, s), dtype=np.float32)
        evidence = np.zeros((b, ni, 3, s, s), dtype=np.float32)
        evidence_mask = np.zeros((b, ni), dtype=np.float32)
        if self.use_image:
            for i, x in enumerate(samples):
                if x["image"] is not None:
                    if x["image"].shape != (3, s, s):
                        raise ValueError(f"collate: item {x['id']}: image shape {x['image'].shape} "
                                         f"differs from (3, {s}, {s})")
                    image[i] = x["image"]
                n = int(x["evidence_images"].shape[0])
                if n:
                    evidence[i, :n] = x["evidence_images"]
                    evidence_mask[i, :n] = 1.0
        return {
            "input_ids": input_ids,
            "attention_mask": attention,
            "caption_ids": caption_ids,
            "caption_mask": caption_mask,
            "image": image,
            "evidence_images": evidence,
            "evidence_mask": evidence_mask,
            "label": np.array([int(x["label"]) for x in samples], dtype=np.int64),
            "id": [str(x["id"]) for x in samples] if self.ids_as_list else
            np.array([str(x["id"]) for x in samples]),
        }


# ============================================================================ builders
def _get(cfg, key, default):
    if cfg is None:
        return default
    v = cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)
    return default if v is None else v


def split_file(fmt: str, root: str, split: str, files: Optional[dict] = None) -> str:
    """The file of ``split`` for a format (``Data.files`` may name it explicitly)."""
    if files and split in files and files[split]:
        return safe_join(root, files[split], "Data.files", split)
    if fmt == "jsonl":
        name = f"{split}.jsonl"
    elif fmt == "mr2":
        name = f"dataset_items_{split}.json"
    elif fmt == "mvsa":
        name = {"val": "dev.json"}.get(split, f"{split}.json")
    else:
        raise ValueError(f"Data.format: unknown format {fmt!r} ({' | '.join(FORMATS)})")
    return os.path.join(os.path.abspath(root), name)


def label_names_of(data_cfg) -> List[str]:
    fmt = _get(data_cfg, "format", "jsonl")
    names = _get(data_cfg, "label_names", None)
    if names is None:
        if fmt not in DEFAULT_LABEL_NAMES:
            raise ValueError(f"Data.format: unknown format {fmt!r} ({' | '.join(FORMATS)})")
        return list(DEFAULT_LABEL_NAMES[fmt])
    names = list(names)
    if len(names) < 2 or len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"Data.label_names must be at least two distinct non-empty names, got {names}")
    return names


def image_transform_of(data_cfg) -> ImageTransform:
    return ImageTransform(resize=int(_get(data_cfg, "image_resize", 256)),
                          crop=int(_get(data_cfg, "image_crop", 224)),
                          mean=_get(data_cfg, "image_mean", IMAGENET_MEAN),
                          std=_get(data_cfg, "image_std", IMAGENET_STD))


def build_dataset(data_cfg, split: str, use_text: bool = True, use_image: bool = True,
                  require_label: Optional[bool] = None) -> MultimodalDataset:
    """The dataset of ``split`` (``train`` / ``val`` / ``test`` / any file stem) from the ``Data``
    config section (keys: see ``/work/notes/multimodal_data_keys.yaml`` / ``defaults/multimodal.yaml``).

    ``require_label`` defaults to True for ``train``, ``val`` and ``dev``: a record without a label
    is then an error; elsewhere unlabelled records get label -1. ``Data.limit`` > 0 keeps the first
    N items.
    """
    fmt = _get(data_cfg, "format", "jsonl")
    if fmt not in FORMATS:
        raise ValueError(f"Data.format: unknown format {fmt!r} ({' | '.join(FORMATS)})")
    root = _get(data_cfg, "root", None)
    if not root:
        raise ValueError("Data.root: not set (the folder holding the data files)")
    if not os.path.isdir(root):
        raise FileNotFoundError(f"Data.root: folder {root!r} does not exist")
    if require_label is None:
        require_label = split in ("train", "val", "dev")
    names = label_names_of(data_cfg)
    allow_empty = bool(_get(data_cfg, "allow_empty_text", False))
    path = split_file(fmt, root, split, _get(data_cfg, "files", None))
    if fmt == "jsonl":
        records = read_jsonl(path, root, names, require_label, need_image=use_image,
                             allow_empty_text=allow_empty)
    elif fmt == "mr2":
        native = DEFAULT_LABEL_NAMES["mr2"]
        records = read_mr2_items(path, root, native, require_label, need_image=use_image,
                                 allow_empty_text=allow_empty)
        remap = _native_remap(native, names, path)
        for r in records:
            if r.label >= 0:
                r.label = remap[r.label]
    else:
        image_dir = _get(data_cfg, "mvsa_image_dir", "")
        if use_image and not image_dir:
            raise ValueError(f"{path}: MVSA here has no images: use Arch.modalities=[text], or set "
                             f"Data.mvsa_image_dir to a folder of <id>.jpg under Data.root")
        records = read_mvsa(path, root, names, require_label, image_dir=image_dir,
                            allow_empty_text=allow_empty)
    if not records:
        raise DataError(f"{path}: no records")
    ds = MultimodalDataset(
        records, root, fmt=fmt, label_names=names, transform=image_transform_of(data_cfg),
        on_bad_image=_get(data_cfg, "on_bad_image", "error"), use_text=use_text, use_image=use_image,
        max_captions=int(_get(data_cfg, "max_captions", -1)),
        max_evidence_images=int(_get(data_cfg, "max_evidence_images", -1)),
        mr2_baseline_captions=bool(_get(data_cfg, "mr2_baseline_captions", True)),
        source=path).limit(int(_get(data_cfg, "limit", 0)))
    if len(ds) == 0:
        raise DataError(f"{path}: all {len(records)} items were skipped (Data.on_bad_image=skip): none has "
                        f"its image file under {ds.root}")
    return ds


def build_collate(data_cfg, tokenizer, use_text: bool = True, use_image: bool = True,
                  ids_as_list: bool = False) -> MultimodalCollate:
    return MultimodalCollate(tokenizer, max_len=int(_get(data_cfg, "max_len", 128)),
                             pad_to_max_len=bool(_get(data_cfg, "pad_to_max_len", False)),
                             image_size=int(_get(data_cfg, "image_crop", 224)),
                             use_text=use_text, use_image=use_image, ids_as_list=ids_as_list)
