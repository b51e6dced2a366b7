"""The multimodal Dataset (items with decoded, transformed images; run in DataLoader workers) and the
builders that make datasets and collate functions from a ``Data`` config section."""
from __future__ import annotations

import copy
import functools
import logging
import multiprocessing
import os
from collections.abc import Iterator, Sequence

import numpy as np

try:  # the Dataset base class; the readers also work without paddle
    from paddle.io import Dataset as _DatasetBase
except Exception:  # pragma: no cover - paddle is a dependency of the package
    _DatasetBase = object

from .collate import MultimodalCollate
from .images import BAD_IMAGE_POLICIES, DataError, ImageTransform, check_image, load_rgb
from .readers import (
    DEFAULT_LABEL_NAMES,
    FORMATS,
    Record,
    _load_json_file,
    _native_remap,
    mr2_direct_captions,
    mr2_direct_images,
    mr2_inverse_captions,
    read_jsonl,
    read_mr2_items,
    read_mvsa,
    safe_join,
)

logger = logging.getLogger("paddle_models.data")


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
    is missing or does not decode (checked here, when images are used: every post image is decoded
    once, a decompression bomb refused from its header) and drops bad evidence images; ``blank``
    replaces any bad image by zeros (an evidence image keeps its slot). :meth:`summary` gives the counts.
    """

    def __init__(self, records: list[Record], root: str, *, fmt: str, label_names: Sequence[str],
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
        self.skipped_items: list[str] = []
        if use_image and on_bad_image == "skip":
            self.records = records = self._drop_bad_post_images(records)
        self._counts = _SharedCounts(len(records), 2)

    def _drop_bad_post_images(self, records: list[Record]) -> list[Record]:
        """``records`` without the items whose post image is missing or does not decode (too many pixels,
        truncated, not an image); the dropped ids go to ``skipped_items``. A warning names the first; when
        fewer than half the items are left, a second warning says so."""
        from concurrent.futures import ThreadPoolExecutor

        def problem(r: Record) -> str | None:
            if r.image is None:
                return None
            path = safe_join(self.root, r.image, r.where, "image")
            if not os.path.isfile(path):
                return "file not found"
            try:
                check_image(path)
            except Exception as e:  # PIL raises OSError, ValueError, SyntaxError...
                return f"cannot decode image ({type(e).__name__}: {e})"
            return None

        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            problems = list(pool.map(problem, records))
        kept = [r for r, p in zip(records, problems, strict=True) if p is None]
        bad = [(r, p) for r, p in zip(records, problems, strict=True) if p is not None]
        self.skipped_items = [r.id for r, _ in bad]
        if bad:
            r, p = bad[0]
            logger.warning("%s: skipped %d of %d items whose post image is missing or cannot be decoded "
                           "(Data.on_bad_image=skip; first: %s: %s: %s)", self.source, len(bad), len(records),
                           r.where, r.image, p)
        if records and len(kept) < len(records) / 2:
            logger.warning("%s: only %d of %d items are left after skipping bad post images "
                           "(Data.on_bad_image=skip): check Data.root and the image paths", self.source,
                           len(kept), len(records))
        return kept

    def limit(self, n: int) -> MultimodalDataset:
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
    def ids(self) -> list[str]:
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
    def _read_annotation(self, rel_dir: str | None, fname: str, r: Record,
                         fieldname: str) -> dict | None:
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
        captions: list[str] = []
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
        images: list[str] = []
        if direct is not None:
            for name in mr2_direct_images(direct, dir_where):
                images.append(os.path.join(r.direct_path, name))
        return captions, images

    def _captions(self, idx: int, r: Record, count: bool = True) -> list[str]:
        if self.fmt == "mr2":
            caps, _ = self._mr2_evidence(idx, r, count=count)
        else:
            caps = list(r.evidence_texts)
        if self.max_captions >= 0:
            caps = caps[: self.max_captions]
        return caps

    # ---- images ---------------------------------------------------------------------------------
    def _load_image(self, r: Record, rel: str, fieldname: str) -> np.ndarray | None:
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
        captions: list[str] = []
        ev_rel: list[str] = []
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


def _given(data_cfg, key: str):
    """``data_cfg[key]`` (a dict or an object with attributes), None when absent."""
    if data_cfg is None:
        return None
    return data_cfg.get(key) if hasattr(data_cfg, "get") else getattr(data_cfg, key, None)


@functools.lru_cache(maxsize=1)
def _data_schema() -> dict:
    from ..config import family_defaults

    return family_defaults("multimodal")["Data"]


def data_value(data_cfg, key: str):
    """``Data.<key>`` of ``data_cfg``: a validated config's section (every key present), an export's
    ``preprocess.data`` or a partial dict; a key absent or null there takes its default from the schema,
    ``paddle_models/defaults/multimodal.yaml`` (the one place a ``Data`` default is written)."""
    value = _given(data_cfg, key)
    return copy.deepcopy(_data_schema()[key]) if value is None else value


def split_file(fmt: str, root: str, split: str, files: dict | None = None) -> str:
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


def label_names_of(data_cfg) -> list[str]:
    """``Data.label_names``; when a partial dict leaves it out, the format's own class names
    (``readers.DEFAULT_LABEL_NAMES``: MR2 ``non-rumor, rumor, unverified``...)."""
    fmt = data_value(data_cfg, "format")
    names = _given(data_cfg, "label_names")
    if names is None:
        if fmt not in DEFAULT_LABEL_NAMES:
            raise ValueError(f"Data.format: unknown format {fmt!r} ({' | '.join(FORMATS)})")
        return list(DEFAULT_LABEL_NAMES[fmt])
    names = list(names)
    if len(names) < 2 or len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"Data.label_names must be at least two distinct non-empty names, got {names}")
    return names


def image_transform_of(data_cfg) -> ImageTransform:
    return ImageTransform(resize=int(data_value(data_cfg, "image_resize")),
                          crop=int(data_value(data_cfg, "image_crop")),
                          mean=data_value(data_cfg, "image_mean"),
                          std=data_value(data_cfg, "image_std"))


def build_dataset(data_cfg, split: str, use_text: bool = True, use_image: bool = True,
                  require_label: bool | None = None) -> MultimodalDataset:
    """The dataset of ``split`` (``train`` / ``val`` / ``test`` / any file stem) from the ``Data``
    config section (keys: see ``paddle_models/defaults/multimodal.yaml``; a partial dict takes the
    defaults written there, see :func:`data_value`; ``Data.root`` is required).

    ``require_label`` defaults to True for ``train``, ``val`` and ``dev``: a record without a label
    is then an error; elsewhere unlabelled records get label -1. ``Data.limit`` > 0 keeps the first
    N items.
    """
    fmt, root = _data_source(data_cfg)
    if require_label is None:
        require_label = split in ("train", "val", "dev")
    names = label_names_of(data_cfg)
    path = split_file(fmt, root, split, data_value(data_cfg, "files"))
    records = _read_records(data_cfg, fmt, path, root, names, require_label, use_image)
    if not records:
        raise DataError(f"{path}: no records")
    ds = MultimodalDataset(
        records, root, fmt=fmt, label_names=names, transform=image_transform_of(data_cfg),
        on_bad_image=data_value(data_cfg, "on_bad_image"), use_text=use_text, use_image=use_image,
        max_captions=int(data_value(data_cfg, "max_captions")),
        max_evidence_images=int(data_value(data_cfg, "max_evidence_images")),
        mr2_baseline_captions=bool(data_value(data_cfg, "mr2_baseline_captions")),
        source=path).limit(int(data_value(data_cfg, "limit")))
    if len(ds) == 0:
        raise DataError(f"{path}: all {len(records)} items were skipped (Data.on_bad_image=skip): none has "
                        f"a readable post image under {ds.root}")
    return ds


def _data_source(data_cfg):
    """(``Data.format``, ``Data.root``), checked: a known format and an existing folder."""
    fmt = data_value(data_cfg, "format")
    if fmt not in FORMATS:
        raise ValueError(f"Data.format: unknown format {fmt!r} ({' | '.join(FORMATS)})")
    root = _given(data_cfg, "root")
    if not root:
        raise ValueError("Data.root: not set (the folder holding the data files)")
    if not os.path.isdir(root):
        raise FileNotFoundError(f"Data.root: folder {root!r} does not exist")
    return fmt, root


def _read_records(data_cfg, fmt: str, path: str, root: str, names: list[str], require_label: bool,
                  use_image: bool) -> list[Record]:
    """The records of ``path`` by the reader of ``fmt``, labels as indices into ``names``."""
    allow_empty = bool(data_value(data_cfg, "allow_empty_text"))
    if fmt == "jsonl":
        return read_jsonl(path, root, names, require_label, need_image=use_image, allow_empty_text=allow_empty)
    if fmt == "mr2":
        native = DEFAULT_LABEL_NAMES["mr2"]
        records = read_mr2_items(path, root, native, require_label, need_image=use_image,
                                 allow_empty_text=allow_empty)
        remap = _native_remap(native, names, path)
        for r in records:
            if r.label >= 0:
                r.label = remap[r.label]
        return records
    image_dir = data_value(data_cfg, "mvsa_image_dir")
    if use_image and not image_dir:
        raise ValueError(f"{path}: MVSA here has no images: use Arch.modalities=[text], or set "
                         f"Data.mvsa_image_dir to a folder of <id>.jpg under Data.root")
    return read_mvsa(path, root, names, require_label, image_dir=image_dir, allow_empty_text=allow_empty)


def build_collate(data_cfg, tokenizer, use_text: bool = True, use_image: bool = True,
                  ids_as_list: bool = False, min_captions: int = 0, min_evidence_images: int = 0) -> MultimodalCollate:
    return MultimodalCollate(tokenizer, max_len=int(data_value(data_cfg, "max_len")),
                             pad_to_max_len=bool(data_value(data_cfg, "pad_to_max_len")),
                             image_size=int(data_value(data_cfg, "image_crop")),
                             use_text=use_text, use_image=use_image, ids_as_list=ids_as_list,
                             min_captions=min_captions, min_evidence_images=min_evidence_images)
