"""Translating raw source lines with a trained Transformer: what ``tools/translate.py`` runs.

    lines = read_source_lines("FILE.en")
    cfg = checkpoint_config("configs/transformer/multi30k.yaml", ["Global.checkpoint=OUT/checkpoints/best"])
    translations = translate_checkpoint(cfg, lines, beam=4)    # dygraph: greedy or beam search
    translations = translate_export("OUT/export", lines)       # Paddle Inference: greedy through the export
    write_translations("FILE.de", translations)

One translation per input line; an empty (or blank) line gives an empty translation. The search itself is
``decoding.py``'s; this module batches the lines, encodes and decodes them with the task's tokenizer.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

from ..fileio import write_text_atomic


def read_source_lines(path: str) -> list:
    """The lines of the UTF-8 text file ``path`` (a byte-order mark and line ends dropped)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--input {path}: file not found")
    with open(path, encoding="utf-8-sig") as f:
        return [line.rstrip("\n").rstrip("\r") for line in f]


def _batches_of_nonempty(lines: Sequence[str], batch_size: int) -> Iterator[list]:
    """Indices of the non-blank lines, ``batch_size`` at a time."""
    todo = [i for i, line in enumerate(lines) if line.strip()]
    for k in range(0, len(todo), batch_size):
        yield todo[k:k + batch_size]


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


def translate_checkpoint(cfg, lines: Sequence[str], beam: int = 0, batch_size: int = 64) -> list:
    """Dygraph decoding with the task's settings (``Decode`` section; ``beam`` > 0 overrides its beam size)."""
    import numpy as np

    from .data import pad_batch
    from .decoding import decode_batch, max_output_len, strip_special
    from .model import EOS_ID, PAD_ID

    task, model = _checkpoint_task_and_model(cfg)
    tokenizer, decode_cfg = task.tokenizer, cfg["Decode"]
    room = int(cfg["Arch"]["max_len"]) - 1
    out = [""] * len(lines)
    for idx in _batches_of_nonempty(lines, batch_size):
        src = pad_batch([np.asarray(tokenizer.encode(lines[i])[:room] + [EOS_ID], "int64") for i in idx], PAD_ID)
        max_len = max_output_len(model, src.shape[1], float(decode_cfg["max_len_a"]), int(decode_cfg["max_len_b"]))
        hyps = decode_batch(model, src, beam_size=beam or int(decode_cfg["beam_size"]), max_len=max_len,
                            alpha=float(decode_cfg["length_penalty"]), use_cache=bool(decode_cfg["use_cache"]))
        for i, h in zip(idx, hyps, strict=True):
            out[i] = tokenizer.decode(strip_special(h))
    return out


def translate_export(model_dir: str, lines: Sequence[str], batch_size: int = 64, threads: int = 0) -> list:
    """Greedy decoding through the export's graphs (Paddle Inference, ``threads`` CPU threads per predictor),
    with the records and rows the server uses."""
    from ..engine.predictor import Predictor
    from ..inference import task_for_export

    task = task_for_export(model_dir)
    run = task.serving_runner(lambda variant: Predictor(model_dir, variant=variant, threads=threads))
    out = [""] * len(lines)
    for idx in _batches_of_nonempty(lines, batch_size):
        items, errors = task.prepare_items([{"id": str(i), "src": lines[i]} for i in idx])
        bad = [e for e in errors if e is not None]
        if bad:
            raise ValueError(f"--input line {int(bad[0].record_id) + 1}: {bad[0]}")
        batch = task.collate_items(items)
        for row in task.prediction_rows(run(batch), batch):
            out[int(row["id"])] = row["translation"]
    return out


def write_translations(path: str, translations: Sequence[str]) -> None:
    """One translation a line into ``path`` (its folder created when missing)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_text_atomic(path, "".join(t + "\n" for t in translations))
