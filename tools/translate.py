#!/usr/bin/env python
"""Translate raw source lines with a trained Transformer: a checkpoint (dygraph, greedy or beam search) or an
export folder (Paddle Inference, greedy through the exported encoder and decoder step).

    python tools/translate.py -c configs/transformer/multi30k.yaml -o Global.checkpoint=OUT/checkpoints/best \
        --input FILE.en [--out FILE.de] [--beam 4] [--json]
    python tools/translate.py --model-dir OUT/export --input FILE.en [--out FILE.de] [--json]

One translation per input line (empty lines stay empty), written to ``--out`` or printed.
"""
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
os.environ.setdefault("GLOG_minloglevel", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddle_models.cli import base_parser, emit_json, run_tool, setup_logging  # noqa: E402


def read_lines(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--input {path}: file not found")
    with open(path, encoding="utf-8-sig") as f:
        return [line.rstrip("\n").rstrip("\r") for line in f]


def translate_checkpoint(cfg, lines, beam, batch_size):
    """Dygraph decoding with the task's settings (``Decode`` section; ``beam`` overrides its beam size)."""
    import numpy as np

    from paddle_models.engine.checkpoint import load_model_weights
    from paddle_models.registry import get_task
    from paddle_models.transformer.data import pad_batch
    from paddle_models.transformer.decoding import decode_batch, max_output_len, strip_special
    from paddle_models.transformer.model import EOS_ID, PAD_ID

    task = get_task("transformer")(cfg)
    task.prepare(cfg["Global"]["output_dir"], is_main=False)  # the vocabulary beside the checkpoint, never a new one
    model = task.build_model()
    load_model_weights(model, cfg["Global"]["checkpoint"])
    model.eval()
    tok, dec = task.tokenizer, cfg["Decode"]
    room = int(cfg["Arch"]["max_len"]) - 1
    out = [""] * len(lines)
    todo = [i for i, line in enumerate(lines) if line.strip()]
    for k in range(0, len(todo), batch_size):
        idx = todo[k:k + batch_size]
        src = pad_batch([np.asarray(tok.encode(lines[i])[:room] + [EOS_ID], "int64") for i in idx], PAD_ID)
        max_len = max_output_len(model, src.shape[1], float(dec["max_len_a"]), int(dec["max_len_b"]))
        hyps = decode_batch(model, src, beam_size=beam or int(dec["beam_size"]), max_len=max_len,
                            alpha=float(dec["length_penalty"]), use_cache=bool(dec["use_cache"]))
        for i, h in zip(idx, hyps):
            out[i] = tok.decode(strip_special(h))
    return out


def translate_export(model_dir, lines, batch_size, threads):
    """Greedy decoding through the export's graphs, as tools/serve.py does."""
    from paddle_models.cli import task_for_export
    from paddle_models.engine.predictor import Predictor

    task = task_for_export(model_dir)
    run = task.serving_runner(lambda variant: Predictor(model_dir, variant=variant, threads=threads))
    out = [""] * len(lines)
    todo = [i for i, line in enumerate(lines) if line.strip()]
    for k in range(0, len(todo), batch_size):
        idx = todo[k:k + batch_size]
        items, errors = task.prepare_items([{"id": str(i), "src": lines[i]} for i in idx])
        bad = [e for e in errors if e is not None]
        if bad:
            raise ValueError(f"--input line {int(bad[0].record_id) + 1}: {bad[0]}")
        batch = task.collate_items(items)
        for row in task.prediction_rows(run(batch), batch):
            out[int(row["id"])] = row["translation"]
    return out


def main():
    p = base_parser(__doc__.splitlines()[0], config_required=False)
    p.add_argument("--model-dir", default=None, help="an export folder (instead of -c CONFIG with a checkpoint)")
    p.add_argument("--input", required=True, help="source text, one sentence a line")
    p.add_argument("--out", default=None, help="write the translations here (default: print them)")
    p.add_argument("--beam", type=int, default=0, help="beam size (checkpoint only; 0: Decode.beam_size)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=0, help="CPU threads of the export's predictors (0: all cores)")
    args = p.parse_args()
    setup_logging(quiet=True)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if bool(args.model_dir) == bool(args.config):
        raise ValueError("give either --model-dir EXPORT or -c CONFIG -o Global.checkpoint=CKPT")
    if args.out and os.path.isdir(args.out):
        raise ValueError(f"--out {args.out}: is a folder; give a file path")
    lines = read_lines(args.input)
    t0 = time.time()
    if args.model_dir:
        out = translate_export(args.model_dir, lines, args.batch_size, args.threads)
    else:
        from paddle_models.config import load_config

        cfg = load_config(args.config, args.override)
        if cfg["_family"] != "transformer":
            raise ValueError(f"{args.config}: not a Transformer config (family {cfg['_family']})")
        if not cfg["Global"].get("checkpoint"):
            raise ValueError("set the weights with -o Global.checkpoint=PATH")
        out = translate_checkpoint(cfg, lines, args.beam, args.batch_size)
    seconds = time.time() - t0
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out + ".tmp", "w", encoding="utf-8") as f:
            f.write("".join(t + "\n" for t in out))
        os.replace(args.out + ".tmp", args.out)
    else:
        for t in out:
            print(t)
    if args.json:
        emit_json({"input": os.path.abspath(args.input), "lines": len(lines), "out": os.path.abspath(args.out)
                   if args.out else None, "seconds": round(seconds, 3)})
    return 0


if __name__ == "__main__":
    run_tool(main)
