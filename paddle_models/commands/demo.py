"""The demo (`make demo`): generate the synthetic multimodal dataset, train the small network,
evaluate it on the test split and print a summary table.

    python tools/demo.py [--ablations] [--train 2400 --val 600 --test 600] [--json]
"""
import argparse

from ..cli import add_debug_flag, emit_json, setup_logging


def parser(prog=None):
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    p.add_argument("--out", default="output/demo", help="folder for data, runs and reports")
    p.add_argument("--train", type=int, default=2400)
    p.add_argument("--val", type=int, default=600)
    p.add_argument("--test", type=int, default=600)
    p.add_argument("--epochs", type=int, default=None, help="override the config's epochs")
    p.add_argument("--ablations", action="store_true", help="also train text-only and image-only models")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("-o", "--override", action="append", default=[], help="extra config overrides")
    p.add_argument("--json", action="store_true")
    add_debug_flag(p)
    return p


def main(argv=None, prog=None):
    args = parser(prog).parse_args(argv)
    setup_logging()
    from ..demo import format_table, run_demo

    result = run_demo(args.out, args.train, args.val, args.test, args.epochs, args.ablations, args.override,
                      progress=not args.no_progress)
    print("\n" + format_table(result))
    run = result["runs"]["text+image"]
    print(f"\nbest checkpoint: {run['best_checkpoint']}\ncurves: {run['curves_png']}")
    for k, v in run["test_artifacts"].items():
        print(f"{k}: {v}")
    print(f"total: {result['seconds']} s")
    if args.json:
        emit_json(result)
    return 0
