"""Serving the Transformer from its export folder: ``{"id", "src": "..."}`` records -> greedy translations.

The export holds ``encoder`` and ``decoder_step`` graphs (see ``TransformerTask.export_variants``) and, for
Multi30k-style models, the SentencePiece model (``spm.model``); ``export.yaml``'s ``preprocess`` gives the
special ids, the positional table size and the decoding length rule. A batch is decoded greedily with the
key/value cache through the two graphs (:func:`~paddle_models.transformer.decoding.export_greedy`), the
same decoding ``tools/eval.py`` does with ``Decode.beam_size: 1``.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..engine.task import RecordError, prepare_each, record_id
from .data import SpmTokenizer, ToyTokenizer, pad_batch
from .decoding import export_greedy, strip_special

RECORD_FIELDS = ("id", "src")


def export_tokenizer(model_dir: str, pre: dict):
    if pre.get("tokenizer"):
        return SpmTokenizer(os.path.join(model_dir, pre["tokenizer"]))
    return ToyTokenizer(int(pre["vocab_size"]))


def record_to_item(index: int, rec, tokenizer, pre: dict, limits: dict) -> dict:
    """One record -> ``{"id", "src_ids"}`` (source token ids followed by EOS), or a RecordError."""
    rid = record_id(index, rec, RECORD_FIELDS)
    src = rec.get("src")
    if not isinstance(src, str):
        raise RecordError(index, rid, "src", "missing field" if src is None else
                          f"expected a string, got {type(src).__name__}")
    if not src.strip():
        raise RecordError(index, rid, "src", "empty text")
    max_chars = int(limits.get("max_text_chars") or 0)
    if max_chars and len(src) > max_chars:
        raise RecordError(index, rid, "src", f"{len(src)} characters, over the limit of {max_chars}")
    try:
        ids = tokenizer.encode(src)
    except ValueError as e:  # the toy tokenizer reads integers
        raise RecordError(index, rid, "src", f"not tokens of this model ({e})") from None
    room = int(pre["max_len"]) - 1  # positions for the source and its EOS
    if len(ids) > room:
        if limits.get("truncate", True) is False:
            raise RecordError(index, rid, "src", f"{len(ids)} tokens, longer than the model's {room} source "
                                                 f"positions and truncation is off")
        ids = ids[:room]
    return {"id": rid, "src_ids": np.asarray(list(ids) + [int(pre["eos_id"])], dtype=np.int64)}


def records_to_items(records: list, tokenizer, pre: dict, limits: dict) -> Tuple[list, List[Optional[RecordError]]]:
    return prepare_each(records, lambda i, rec: record_to_item(i, rec, tokenizer, pre, limits))


def collate_items(items: list, pre: dict) -> Dict[str, np.ndarray]:
    return {"src_ids": pad_batch([it["src_ids"] for it in items], int(pre["pad_id"])),
            "id": np.array([it["id"] for it in items])}


def greedy_runner(make_predictor, pre: dict):
    """batch -> ``{"tokens": [B, T]}``: greedy decoding through the exported encoder and decoder step."""
    encoder, step = make_predictor("encoder"), make_predictor("decoder_step")
    step_names = list(step.input_names)
    dec = pre.get("decode") or {}

    def run(batch):
        src = batch["src_ids"]
        # the output budget of the eval decoding: a * (padded source length) + b, within the positional table
        max_len = max(1, min(int(float(dec.get("max_len_a", 1.0)) * src.shape[1] + int(dec.get("max_len_b", 10))),
                             int(pre["max_len"]) - 1))
        tokens = export_greedy(lambda s: encoder.run_list({"src_ids": s}),
                               lambda *a: step.run_list(dict(zip(step_names, a))), src, max_len,
                               int(pre["num_layers"]), int(pre["num_heads"]), int(pre["head_dim"]),
                               bos_id=int(pre["bos_id"]), eos_id=int(pre["eos_id"]), pad_id=int(pre["pad_id"]))
        return {"tokens": tokens}

    return run


def translation_rows(outputs: Dict[str, np.ndarray], batch: Dict[str, np.ndarray], tokenizer, pre: dict) -> List[dict]:
    rows = []
    for rid, row in zip(batch["id"], outputs["tokens"]):
        ids = strip_special(row, eos_id=int(pre["eos_id"]), pad_id=int(pre["pad_id"]), bos_id=int(pre["bos_id"]))
        rows.append({"id": str(rid), "translation": tokenizer.decode(ids)})
    return rows
