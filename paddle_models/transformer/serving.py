"""Serving the Transformer from its export folder: ``{"id", "src": "..."}`` records -> greedy translations.

The export holds ``encoder`` and ``decoder_step`` graphs (see ``TransformerTask.export_variants``) and, for
Multi30k-style models, the SentencePiece model (``spm.model``); ``export.yaml``'s ``preprocess`` gives the
special ids, the positional table size and the decoding length rule. A batch is decoded greedily with the
key/value cache through the two graphs (:func:`~paddle_models.transformer.decoding.export_greedy`), the
same decoding ``tools/eval.py`` does with ``Decode.beam_size: 1``.
"""
from __future__ import annotations

import numpy as np

from ..engine.artifact import export_path
from ..engine.task import RecordError, prepare_each, record_id
from .data import SpmTokenizer, ToyTokenizer, pad_batch
from .decoding import export_greedy, strip_special

RECORD_FIELDS = ("id", "src")


def export_tokenizer(model_dir: str, preprocess: dict):
    if preprocess.get("tokenizer"):
        return SpmTokenizer(export_path(model_dir, "preprocess.tokenizer", preprocess["tokenizer"]))
    return ToyTokenizer(int(preprocess["vocab_size"]))


def record_to_item(index: int, rec, tokenizer, preprocess: dict, limits: dict) -> dict:
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
    room = int(preprocess["max_len"]) - 1  # positions for the source and its EOS
    if len(ids) > room:
        if limits.get("truncate", True) is False:
            raise RecordError(index, rid, "src", f"{len(ids)} tokens, longer than the model's {room} source "
                                                 f"positions and truncation is off")
        ids = ids[:room]
    return {"id": rid, "src_ids": np.asarray(list(ids) + [int(preprocess["eos_id"])], dtype=np.int64)}


def records_to_items(records: list, tokenizer, preprocess: dict,
                     limits: dict) -> tuple[list, list[RecordError | None]]:
    return prepare_each(records, lambda i, rec: record_to_item(i, rec, tokenizer, preprocess, limits))


def collate_items(items: list, preprocess: dict) -> dict[str, np.ndarray]:
    return {"src_ids": pad_batch([it["src_ids"] for it in items], int(preprocess["pad_id"])),
            "id": np.array([it["id"] for it in items])}


def greedy_runner(make_predictor, preprocess: dict):
    """batch -> ``{"tokens": [B, T]}``: greedy decoding through the exported encoder and decoder step."""
    encoder, step = make_predictor("encoder"), make_predictor("decoder_step")
    step_names = list(step.input_names)
    length_rule = preprocess["decode"]  # max_len_a * source length + max_len_b, as the config's Decode section

    def run(batch):
        src = batch["src_ids"]
        # the output budget of the eval decoding: a * (padded source length) + b, within the positional table
        budget = int(float(length_rule["max_len_a"]) * src.shape[1] + int(length_rule["max_len_b"]))
        max_len = max(1, min(budget, int(preprocess["max_len"]) - 1))
        tokens = export_greedy(lambda s: encoder.run_list({"src_ids": s}),
                               lambda *a: step.run_list(dict(zip(step_names, a, strict=True))), src, max_len,
                               int(preprocess["num_layers"]), int(preprocess["num_heads"]), int(preprocess["head_dim"]),
                               bos_id=int(preprocess["bos_id"]), eos_id=int(preprocess["eos_id"]),
                               pad_id=int(preprocess["pad_id"]))
        return {"tokens": tokens}

    return run


def translation_rows(outputs: dict[str, np.ndarray], batch: dict[str, np.ndarray], tokenizer,
                     preprocess: dict) -> list[dict]:
    rows = []
    for rid, row in zip(batch["id"], outputs["tokens"], strict=True):
        ids = strip_special(row, eos_id=int(preprocess["eos_id"]), pad_id=int(preprocess["pad_id"]),
                            bos_id=int(preprocess["bos_id"]))
        rows.append({"id": str(rid), "translation": tokenizer.decode(ids)})
    return rows
