"""Translate raw source lines with a trained Transformer: a checkpoint (dygraph) or an export folder (Paddle
Inference through the exported encoder and decoder step), greedy or beam search on either.

    python tools/translate.py -c configs/transformer/multi30k.yaml -o Global.checkpoint=OUT/checkpoints/best \
        --input FILE.en [--out FILE.de] [--beam 4] [--json]
    python tools/translate.py --model-dir OUT/export --input FILE.en [--out FILE.de] [--beam 4] [--json]

One translation per input line (empty lines stay empty), written to ``--out`` or printed. A line longer than
the model's source positions is cut to fit (on both paths alike); the count is logged and in the JSON
(``truncated``). The work is done by ``paddle_models/transformer/translate.py``.
"""
import os
import time

from ..cli import base_parser, emit_json, setup_logging


def parser(prog=None):
    p = base_parser(__doc__.splitlines()[0], config_required=False, prog=prog)
    p.add_argument("--model-dir", default=None, help="an export folder (instead of -c CONFIG with a checkpoint)")
    p.add_argument("--input", required=True, help="source text, one sentence a line")
    p.add_argument("--out", default=None, help="write the translations here (default: print them)")
    p.add_argument("--beam", type=int, default=0, help="beam size: 1 greedy, > 1 beam search (0: Decode.beam_size "
                                                       "of the config, or of the export's config.yaml)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=0, help="CPU threads of the export's predictors (0: all cores)")
    return p


def _check(args):
    if args.beam < 0:
        raise ValueError(f"--beam must be >= 0 (0: Decode.beam_size, 1: greedy, > 1: beam search), got {args.beam}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if bool(args.model_dir) == bool(args.config):
        raise ValueError("give either --model-dir EXPORT or -c CONFIG -o Global.checkpoint=CKPT")
    if args.out and os.path.isdir(args.out):
        raise ValueError(f"--out {args.out}: is a folder; give a file path")


def main(argv=None, prog=None):
    args = parser(prog).parse_args(argv)
    setup_logging(quiet=True)
    _check(args)
    from ..transformer import translate

    lines = translate.read_source_lines(args.input)
    t0 = time.time()
    if args.model_dir:
        result = translate.translate_export(args.model_dir, lines, args.beam, args.batch_size, args.threads)
    else:
        cfg = translate.checkpoint_config(args.config, args.override)
        result = translate.translate_checkpoint(cfg, lines, args.beam, args.batch_size)
    seconds = time.time() - t0
    if args.out:
        translate.write_translations(args.out, result.lines)
    else:
        for t in result.lines:
            print(t)
    if args.json:
        emit_json({"input": os.path.abspath(args.input), "lines": len(lines), "truncated": result.truncated,
                   "beam_size": result.beam_size, "out": os.path.abspath(args.out) if args.out else None,
                   "seconds": round(seconds, 3)})
    return 0
