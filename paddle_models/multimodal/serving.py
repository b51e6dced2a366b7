"""The multimodal family's export metadata and serving inputs.

* :func:`export_metadata`: the tokenizer (copied into the export folder), text limits and image
  preprocessing, written into ``export.yaml`` under ``preprocess.data`` with the training ``Data`` keys,
  so serving runs the training code with the training settings.
* :func:`read_input_file`: a raw input file (JSONL, MR2 ``dataset_items_<split>.json``, MVSA) -> (dataset,
  collate) built by the training code with the export's settings; image paths resolve under the input
  file's folder.
* :func:`records_to_items`: request records (the JSONL fields, images as base64 in ``image_b64`` and
  ``evidence_images_b64``, never server-side paths) -> dataset items, collated by the task's
  ``collate_items``; each bad record gets its own :class:`~paddle_models.engine.task.RecordError` and the
  others go on.
"""
from __future__ import annotations

import base64
import binascii
import io
import os

import numpy as np

from ..engine.artifact import EXPORT_META, export_path, to_builtin
from ..engine.task import RecordError, prepare_each, record_id
from .dataset import build_collate, build_dataset, data_value, image_transform_of
from .images import DataError, load_rgb
from .readers import _resolve_label
from .tokenizer import copy_tokenizer, load_tokenizer

TOKENIZER_DIR = "tokenizer"
# Data keys that describe where training data lives, not how a record becomes inputs
DATA_KEYS_NOT_EXPORTED = ("root", "train_split", "val_split", "test_split", "tokenizer", "tokenizer_vocab_size",
                          "limit", "files")
# settings the trained network depends on: an input may not change them
FIXED_AT_TRAINING = ("max_len", "image_crop", "image_resize", "image_mean", "image_std", "label_names")


class ExportMetadataError(ValueError):
    """What the export needs from the training run is missing (the tokenizer)."""


def export_metadata(cfg, label_names, tokenizer_dir: str | None, out_dir: str) -> dict:
    """``labels`` and ``preprocess`` for export.yaml; copies the tokenizer into ``out_dir/tokenizer``."""
    if tokenizer_dir is None:
        raise ExportMetadataError("no tokenizer for this model: set Data.tokenizer, or point Global.checkpoint "
                                  "into a training run's output folder (it keeps <run>/tokenizer)")
    copy_tokenizer(tokenizer_dir, os.path.join(out_dir, TOKENIZER_DIR))
    data = {k: v for k, v in dict(cfg["Data"]).items() if k not in DATA_KEYS_NOT_EXPORTED}
    image_transform_of(cfg["Data"])  # validates the image settings
    data["image_mean"] = [float(x) for x in data_value(cfg["Data"], "image_mean")]
    data["image_std"] = [float(x) for x in data_value(cfg["Data"], "image_std")]
    data["label_names"] = list(label_names)
    return {
        "labels": list(label_names),
        "preprocess": {
            "family": "multimodal",
            "tokenizer": TOKENIZER_DIR,
            "modalities": list(cfg["Arch"]["modalities"]),
            "output": "logits",  # softmax over the last axis gives the class probabilities
            "data": to_builtin(data),
        },
    }


def _preprocess(model_dir: str, meta: dict) -> dict:
    preprocess = meta.get("preprocess") or {}
    if preprocess.get("family") != "multimodal":
        raise ValueError(f"{model_dir}: not a multimodal export (no multimodal preprocessing in {EXPORT_META})")
    return preprocess


def export_tokenizer(model_dir: str, meta: dict):
    return load_tokenizer(export_path(model_dir, "preprocess.tokenizer", _preprocess(model_dir, meta)["tokenizer"]))


def data_settings(model_dir: str, meta: dict, overrides: dict | None = None) -> dict:
    """The export's ``Data`` settings with ``overrides`` applied (settings fixed by training refuse a change)."""
    data = dict(_preprocess(model_dir, meta)["data"])
    for k, v in (overrides or {}).items():
        if k not in data:
            raise ValueError(f"Data.{k}: not a preprocessing setting of this export (settings: {', '.join(data)})")
        if k in FIXED_AT_TRAINING and v != data[k]:
            raise ValueError(f"Data.{k}: fixed by the trained model ({data[k]!r}); it cannot change at inference")
        data[k] = v
    return data


def modalities(model_dir: str, meta: dict) -> tuple[bool, bool]:
    names = list(_preprocess(model_dir, meta).get("modalities") or ["text", "image"])
    return "text" in names, "image" in names


# ---- raw input files --------------------------------------------------------------------------------------
def detect_format(path: str) -> str:
    """``jsonl`` for ``*.jsonl``; for ``*.json``: an object keyed by item id is MR2's ``dataset_items``, a
    list is MVSA's layout."""
    low = path.lower()
    if low.endswith(".jsonl"):
        return "jsonl"
    if low.endswith(".json"):
        with open(path, encoding="utf-8") as f:
            head = f.read(4096).lstrip()
        if head.startswith("{"):
            return "mr2"
        if head.startswith("["):
            return "mvsa"
        raise ValueError(f"{path}: expected a JSON object (MR2 dataset_items) or a list (MVSA), starting with "
                         f"{head[:20]!r}")
    raise ValueError(f"{path}: unknown input layout (use a .jsonl file of the JSONL layout, an MR2 "
                     f"dataset_items_<split>.json, or a .npz of input arrays)")


def read_input_file(model_dir: str, meta: dict, input_file: str, tokenizer, on_bad_image: str | None = None,
                    data_overrides: dict | None = None):
    """(dataset, collate) for a raw input file, built by the training code with the export's ``Data``
    settings and tokenizer. ``data_overrides`` changes some settings for this input
    (``{"allow_empty_text": True}``)."""
    path = os.path.abspath(input_file)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{input_file}: input file not found")
    fmt = detect_format(path)
    base = os.path.basename(path)
    split = base[:-len(".jsonl")] if fmt == "jsonl" else os.path.splitext(base)[0]
    if fmt == "mr2" and split.startswith("dataset_items_"):
        split = split[len("dataset_items_"):]
    data = data_settings(model_dir, meta, data_overrides)
    data.update({"format": fmt, "root": os.path.dirname(path), "files": {split: base}, "limit": 0})
    if on_bad_image:
        data["on_bad_image"] = on_bad_image
    use_text, use_image = modalities(model_dir, meta)
    ds = build_dataset(data, split, use_text, use_image, require_label=False)
    return ds, build_collate(data, tokenizer, use_text, use_image)


# ---- request records --------------------------------------------------------------------------------------
RECORD_FIELDS = ("id", "text", "image_b64", "evidence_texts", "evidence_images_b64", "label")


def record_schema(use_image: bool) -> dict:
    """The JSON schema (OpenAPI 3.0) of one request record of an export with (``use_image``) or without the
    image modality: the fields :func:`record_to_item` reads."""
    strings = {"type": "array", "nullable": True, "items": {"type": "string"}}
    images = {"type": "array", "nullable": True, "items": {"type": "string", "format": "byte"}}
    required = ["text", "image_b64"] if use_image else ["text"]
    return {"type": "object", "additionalProperties": False, "required": required,
            "properties": {"id": {"anyOf": [{"type": "string"}, {"type": "integer"}]}, "text": {"type": "string"},
                           "image_b64": {"type": "string", "format": "byte"}, "evidence_texts": strings,
                           "evidence_images_b64": images,
                           "label": {"anyOf": [{"type": "string"}, {"type": "integer"}], "nullable": True}}}


def decode_image_b64(value, field: str, transform, max_bytes: int, max_pixels: int) -> np.ndarray:
    """A base64 image -> the transformed float32 ``[3, H, W]`` array; errors say why (not base64, too
    many bytes, too many pixels, not an image)."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a base64 string, got {type(value).__name__}")
    if len(value) > (max_bytes * 4) // 3 + 8:
        raise ValueError(f"image larger than {max_bytes} bytes")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not valid base64") from None
    if len(raw) > max_bytes:
        raise ValueError(f"image of {len(raw)} bytes is larger than the limit of {max_bytes}")
    from PIL import Image

    try:
        with Image.open(io.BytesIO(raw)) as probe:
            w, h = probe.size
    except Exception as e:
        raise ValueError(f"not a decodable image ({type(e).__name__})") from None
    if w * h > max_pixels:
        raise ValueError(f"image of {w}x{h} pixels is larger than the limit of {max_pixels} pixels")
    try:
        img = load_rgb(io.BytesIO(raw))
    except Exception as e:
        raise ValueError(f"not a decodable image ({type(e).__name__}: {str(e)[:100]})") from None
    return transform(img)


def record_to_item(index: int, rec, data: dict, label_names, transform, use_text: bool, use_image: bool,
                   limits: dict, tokenizer=None) -> dict:
    """One request record -> a dataset item (as :class:`MultimodalDataset` yields it), or RecordError."""
    rid = record_id(index, rec, RECORD_FIELDS)
    text, captions = _record_texts(index, rid, rec, data, limits, tokenizer)
    label = -1
    if rec.get("label") is not None:
        try:
            label = _resolve_label(rec["label"], label_names, f"record {index}")
        except DataError as e:
            raise RecordError(index, rid, "label", str(e).split("label: ", 1)[-1]) from None
    max_captions = int(data_value(data, "max_captions"))
    if max_captions >= 0:
        captions = captions[:max_captions]
    image, evidence = None, []
    if use_image:
        image, evidence = _record_images(index, rid, rec, data, transform, limits)
    # a text-only model ignores the images of a record
    c, s = transform.shape[0], transform.crop
    ev_arr = np.stack(evidence).astype(np.float32, copy=False) if evidence else np.zeros((0, c, s, s), np.float32)
    return {"id": rid, "text": text if use_text else "", "captions": captions if use_text else [],
            "image": image, "evidence_images": ev_arr, "label": label}


def _record_texts(index: int, rid, rec, data: dict, limits: dict, tokenizer):
    """(text, non-empty evidence texts) of a record, checked against ``Data.allow_empty_text`` and the
    server's limits (characters; tokens when truncation is off)."""
    text = rec.get("text")
    if not isinstance(text, str):
        raise RecordError(index, rid, "text", "missing field" if text is None else
                          f"expected a string, got {type(text).__name__}")
    if not text.strip() and not data_value(data, "allow_empty_text"):
        raise RecordError(index, rid, "text", "empty text")
    max_chars = int(limits.get("max_text_chars") or 0)
    if max_chars and len(text) > max_chars:
        raise RecordError(index, rid, "text", f"{len(text)} characters, over the limit of {max_chars}")
    captions = rec.get("evidence_texts") or []
    if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
        raise RecordError(index, rid, "evidence_texts", "expected a list of strings")
    captions = [c for c in captions if c.strip()]
    if max_chars and any(len(c) > max_chars for c in captions):
        raise RecordError(index, rid, "evidence_texts", f"a text over the limit of {max_chars} characters")
    if limits.get("truncate", True) is False and tokenizer is not None:
        max_len = int(data_value(data, "max_len"))
        for name, t in [("text", text)] + [(f"evidence_texts[{i}]", c) for i, c in enumerate(captions)]:
            if len(tokenizer.tokenize(t)) + 2 > max_len:  # [CLS] tokens [SEP], as the collate counts
                raise RecordError(index, rid, name, f"longer than max_len={max_len} tokens and truncation is off")
    return text, captions


def _record_images(index: int, rid, rec, data: dict, transform, limits: dict):
    """(post image, evidence images) of a record, decoded from base64 and transformed; at most
    ``Data.max_evidence_images`` evidence images."""
    max_bytes, max_pixels = int(limits["max_image_bytes"]), int(limits["max_image_pixels"])
    if rec.get("image_b64") is None:
        raise RecordError(index, rid, "image_b64", "missing field (the post's image, base64)")
    try:
        image = decode_image_b64(rec["image_b64"], "image_b64", transform, max_bytes, max_pixels)
    except ValueError as e:
        raise RecordError(index, rid, "image_b64", str(e)) from None
    encoded = rec.get("evidence_images_b64") or []
    if not isinstance(encoded, list):
        raise RecordError(index, rid, "evidence_images_b64", "expected a list of base64 strings")
    max_evidence = int(data_value(data, "max_evidence_images"))
    if max_evidence >= 0:
        encoded = encoded[:max_evidence]
    evidence = []
    for k, value in enumerate(encoded):
        try:
            evidence.append(decode_image_b64(value, f"evidence_images_b64[{k}]", transform, max_bytes, max_pixels))
        except ValueError as e:
            raise RecordError(index, rid, f"evidence_images_b64[{k}]", str(e)) from None
    return image, evidence


def records_to_items(records: list, data: dict, label_names, tokenizer, use_text: bool, use_image: bool,
                     limits: dict) -> tuple[list, list[RecordError | None]]:
    """(dataset item of each good record or None, per-record errors): validation and image decoding."""
    transform = image_transform_of(data)
    return prepare_each(records, lambda i, rec: record_to_item(i, rec, data, label_names, transform, use_text,
                                                               use_image, limits, tokenizer))
