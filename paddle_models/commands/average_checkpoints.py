"""Average the weights of several checkpoints into one (safetensors in and out).

    python tools/average_checkpoints.py --last 10 --run OUT [--out OUT/checkpoints/avg_last10] [--json]
    python tools/average_checkpoints.py --inputs OUT/checkpoints/step_2400 OUT/checkpoints/step_2600 \\
        --out AVG.safetensors

``--last N --run OUT`` takes the newest N ``OUT/checkpoints/step_<step>`` folders (kept by training with
``Global.keep_last_checkpoints`` >= N). ``--out`` ending in ``.safetensors`` writes one weights file, else a
checkpoint folder; either evaluates with ``tools/eval.py -o Global.checkpoint=OUT_PATH``.
"""
import argparse
import os

from ..cli import add_debug_flag, emit_json, print_summary, setup_logging


def parser(prog=None):
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--inputs", nargs="+", help="checkpoint folders or .safetensors weights files")
    p.add_argument("--last", type=int, help="average the newest N step checkpoints of --run")
    p.add_argument("--run", help="a training run's output folder (with --last)")
    p.add_argument("--out", help="a .safetensors file or a checkpoint folder (default with --run: "
                   "RUN/checkpoints/avg_last<N>)")
    p.add_argument("--json", action="store_true", help="print one JSON object with the results as the last line")
    add_debug_flag(p)
    return p


def main(argv=None, prog=None):
    p = parser(prog)
    args = p.parse_args(argv)
    if bool(args.inputs) == (args.last is not None):
        p.error("give either --inputs PATH ... or --last N --run OUT")
    if args.last is not None and not args.run:
        p.error("--last N needs --run OUT (the training run's output folder)")
    setup_logging()
    from ..engine.checkpoint_average import average_checkpoints, last_step_checkpoints

    inputs = args.inputs or last_step_checkpoints(args.run, args.last)
    out = args.out or (os.path.join(args.run, "checkpoints", f"avg_last{args.last}") if args.run else None)
    if not out:
        p.error("--out is required with --inputs")
    result = average_checkpoints(inputs, out)
    print_summary("average checkpoints", result)
    if args.json:
        emit_json(result)
    return 0
