"""Serving the Transformer from its export folder: ``{"id", "src": "..."}`` records -> greedy translations.

The export holds ``encoder`` and ``decoder_step`` graphs (see ``TransformerTask.export_variants``) and, for
Multi30k-style models, the SentencePiece model (``spm.model``); ``export.yaml``'s ``preprocess`` gives the
special ids, the positional table size and the decoding length rule. A batch is decoded greedily with the
key/value cache through the two graphs (:func:`~paddle_models.transformer.decoding.export_greedy`), the
same decoding ``tools/eval.py`` does with ``Decode.beam_size: 1``; ``tools/translate.py --beam K`` runs beam
search through them (:func:`~paddle_models.transformer.decoding.export_beam_search`).
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
    """One record -> ``{"id", "src_ids", "truncated"}`` (source token ids followed by EOS; whether the source
    was cut to the model's ``max_len - 1`` source positions), or a RecordError. The one preprocessing of a
    source for the server and both paths of ``tools/translate.py``."""
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
    truncated = len(ids) > room
    if truncated:
        if limits.get("truncate", True) is False:
            raise RecordError(index, rid, "src", f"{len(ids)} tokens, longer than the model's {room} source "
                                                 f"positions and truncation is off")
        ids = ids[:room]
    return {"id": rid, "src_ids": np.asarray(list(ids) + [int(preprocess["eos_id"])], dtype=np.int64),
            "truncated": truncated}


def records_to_items(records: list, tokenizer, preprocess: dict,
                     limits: dict) -> tuple[list, list[RecordError | None]]:
    return prepare_each(records, lambda i, rec: record_to_item(i, rec, tokenizer, preprocess, limits))


def collate_items(items: list, preprocess: dict) -> dict[str, np.ndarray]:
    return {"src_ids": pad_batch([it["src_ids"] for it in items], int(preprocess["pad_id"])),
            "id": np.array([it["id"] for it in items])}


def decoding_runner(make_predictor, preprocess: dict, beam_size: int = 1, length_penalty: float = 0.6):
    """batch -> ``{"tokens": [B, T]}``: greedy decoding (``beam_size`` 1) or beam search through the exported
    encoder and decoder step, ``max_len_a * (padded source length) + max_len_b`` tokens at most, as the
    config's Decode section, within the positional table."""
    from .decoding import export_beam_search

    encoder, step = make_predictor("encoder"), make_predictor("decoder_step")
    step_names = list(step.input_names)
    length_rule = preprocess["decode"]
    shape = (int(preprocess["num_layers"]), int(preprocess["num_heads"]), int(preprocess["head_dim"]))
    specials = {"bos_id": int(preprocess["bos_id"]), "eos_id": int(preprocess["eos_id"]),
                "pad_id": int(preprocess["pad_id"])}

    def encode(src_ids):
        return encoder.run_list({"src_ids": src_ids})

    def decode_step(*inputs):
        return step.run_list(dict(zip(step_names, inputs, strict=True)))

    def run(batch):
        src = batch["src_ids"]
        budget = int(float(length_rule["max_len_a"]) * src.shape[1] + int(length_rule["max_len_b"]))
        max_len = max(1, min(budget, int(preprocess["max_len"]) - 1))
        if beam_size > 1:
            tokens = export_beam_search(encode, decode_step, src, beam_size, max_len, *shape, alpha=length_penalty,
                                        **specials)
        else:
            tokens = export_greedy(encode, decode_step, src, max_len, *shape, **specials)
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
