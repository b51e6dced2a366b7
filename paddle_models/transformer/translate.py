"""Translating raw source lines with a trained Transformer: what ``tools/translate.py`` runs.

    lines = read_source_lines("FILE.en")
    cfg = checkpoint_config("configs/transformer/multi30k.yaml", ["Global.checkpoint=OUT/checkpoints/best"])
    result = translate_checkpoint(cfg, lines, beam=4)    # dygraph: greedy or beam search
    result = translate_export("OUT/export", lines, beam=4)  # Paddle Inference: the same searches on the export
    write_translations("FILE.de", result.lines)

One translation per input line; an empty (or blank) line gives an empty translation. Both paths prepare a
source alike (``serving.record_to_item``, the server's preprocessing): a source longer than the model's
``Arch.max_len - 1`` positions is cut to fit, and :class:`Translations` counts the lines cut (the tool logs
and reports them). ``beam`` 0 is the ``Decode.beam_size`` of the config (of the export's config.yaml for an
export folder). The searches are ``decoding.py``'s.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from .. import textfile
from ..fileio import write_text_atomic

log = logging.getLogger("paddle_models")
#: limits of ``serving.record_to_item`` for translation: any length of text, cut to the model's positions
TRANSLATE_LIMITS = {"max_text_chars": 0, "truncate": True}


@dataclass
class Translations:
    """One translation per input line, the number of lines cut to the model's positions and the beam used."""
    lines: list[str]
    truncated: int
    beam_size: int


def read_source_lines(path: str) -> list[str]:
    """The lines of the UTF-8 text file ``path`` (plain or gzipped; a byte-order mark and line ends dropped);
    bytes that are not UTF-8 are a ValueError naming the file and the line."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--input {path}: file not found")
    return textfile.read_lines(path)


def _batches_of_nonempty(lines: Sequence[str], batch_size: int) -> Iterator[list]:
    """Indices of the non-blank lines, ``batch_size`` at a time."""
    todo = [i for i, line in enumerate(lines) if line.strip()]
    for k in range(0, len(todo), batch_size):
        yield todo[k:k + batch_size]


def _source_items(prepare: Callable, lines: Sequence[str], idx: list) -> list[dict]:
    """``prepare``'s items (``{"id", "src_ids", "truncated"}``) of the lines ``idx``; a line it refuses is a
    ValueError naming the line."""
    items, errors = prepare([{"id": str(i), "src": lines[i]} for i in idx])
    bad = next((e for e in errors if e is not None), None)
    if bad is not None:
        raise ValueError(f"--input line {int(bad.record_id) + 1}: {str(bad).split(': ', 1)[1]}")
    return items


def _log_truncated(truncated: int, lines: Sequence[str], max_len: int) -> None:
    if truncated:
        log.warning("%d of %d input lines are longer than the model's %d source positions (Arch.max_len - 1): "
                    "cut to fit before translating", truncated, len(lines), max_len - 1)


def checkpoint_config(config_path: str, overrides: Sequence[str]):
    """The Transformer config of ``config_path`` with ``overrides``, refused unless it is a Transformer config
    naming its weights (``Global.checkpoint``)."""
    from ..config import load_config

    cfg = load_config(config_path, list(overrides))
    if cfg["_family"] != "transformer":
        raise ValueError(f"{config_path}: not a Transformer config (family {cfg['_family']})")
    if not cfg["Global"].get("checkpoint"):
        raise ValueError("set the weights with -o Global.checkpoint=PATH")
    return cfg


def _checkpoint_task_and_model(cfg):
    """The task (with the vocabulary beside the checkpoint, never a new one) and the model, weights loaded."""
    from ..engine.checkpoint import load_model_weights
    from ..registry import get_task

    task = get_task("transformer")(cfg)
    task.prepare(cfg["Global"]["output_dir"], is_main=False)
    model = task.build_model()
    load_model_weights(model, cfg["Global"]["checkpoint"])
    model.eval()
    return task, model


def translate_checkpoint(cfg, lines: Sequence[str], beam: int = 0, batch_size: int = 64) -> Translations:
    """Dygraph decoding with the task's settings (``Decode`` section; ``beam`` > 0 overrides its beam size)."""
    from . import serving
    from .data import pad_batch
    from .decoding import decode_batch, max_output_len, strip_special
    from .model import EOS_ID, PAD_ID

    task, model = _checkpoint_task_and_model(cfg)
    tokenizer, decode_cfg, max_len = task.tokenizer, cfg["Decode"], int(cfg["Arch"]["max_len"])
    beam_size = beam or int(decode_cfg["beam_size"])
    preprocess = {"max_len": max_len, "eos_id": EOS_ID}

    def prepare(records):
        return serving.records_to_items(records, tokenizer, preprocess, TRANSLATE_LIMITS)

    out, truncated = [""] * len(lines), 0
    for idx in _batches_of_nonempty(lines, batch_size):
        items = _source_items(prepare, lines, idx)
        truncated += sum(item["truncated"] for item in items)
        src = pad_batch([item["src_ids"] for item in items], PAD_ID)
        budget = max_output_len(model, src.shape[1], float(decode_cfg["max_len_a"]), int(decode_cfg["max_len_b"]))
        hyps = decode_batch(model, src, beam_size=beam_size, max_len=budget,
                            alpha=float(decode_cfg["length_penalty"]), use_cache=bool(decode_cfg["use_cache"]))
        for i, h in zip(idx, hyps, strict=True):
            out[i] = tokenizer.decode(strip_special(h))
    _log_truncated(truncated, lines, max_len)
    return Translations(out, truncated, beam_size)


def translate_export(model_dir: str, lines: Sequence[str], beam: int = 0, batch_size: int = 64,
                     threads: int = 0) -> Translations:
    """Greedy decoding or beam search (``beam`` > 1, else the export config's ``Decode.beam_size``) through the
    export's graphs (Paddle Inference, ``threads`` CPU threads per predictor), with the records and rows the
    server uses."""
    from ..engine.predictor import Predictor
    from ..inference import task_for_export

    task = task_for_export(model_dir)
    beam_size = beam or int(task.cfg["Decode"]["beam_size"])
    run = task.export_translator(lambda variant: Predictor(model_dir, variant=variant, threads=threads), beam_size)

    def prepare(records):
        return task.prepare_items(records, TRANSLATE_LIMITS)

    out, truncated = [""] * len(lines), 0
    for idx in _batches_of_nonempty(lines, batch_size):
        items = _source_items(prepare, lines, idx)
        truncated += sum(item["truncated"] for item in items)
        batch = task.collate_items(items)
        for row in task.prediction_rows(run(batch), batch):
            out[int(row["id"])] = row["translation"]
    _log_truncated(truncated, lines, int(task.cfg["Arch"]["max_len"]))
    return Translations(out, truncated, beam_size)


def write_translations(path: str, translations: Sequence[str]) -> None:
    """One translation a line into ``path`` (its folder created when missing)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_text_atomic(path, "".join(t + "\n" for t in translations))
