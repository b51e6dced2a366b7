"""Write the synthetic demo dataset (JSONL layout, small PNG images, evidence) whose label needs
both the text and the image (see paddle_models/multimodal/demo_data.py).

    python tools/make_demo_data.py --out output/demo_data --json
"""
import argparse
import time

from ..cli import add_debug_flag, emit_json


def parser(prog=None):
    from ..multimodal.demo_data import RULES

    ap = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder (Data.root of the demo config)")
    ap.add_argument("--train", type=int, default=3000, help="training items")
    ap.add_argument("--val", type=int, default=600, help="validation items")
    ap.add_argument("--test", type=int, default=600, help="test items")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--image-size", type=int, default=64, help="square PNG side in pixels")
    ap.add_argument("--rule", default="sum", choices=RULES,
                    help="sum: label = mood of text + image (additive); mod: (text + image) mod 3")
    ap.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    add_debug_flag(ap)
    return ap


def main(argv=None, prog=None):
    args = parser(prog).parse_args(argv)
    from ..multimodal.demo_data import make_demo_data

    t0 = time.time()
    summary = make_demo_data(args.out, args.train, args.val, args.test, args.seed, args.image_size, args.rule)
    summary["seconds"] = round(time.time() - t0, 3)
    for split, s in summary["splits"].items():
        print(f"{split}: {s['items']} items, {s['images']} images, labels {s['labels']}")
    print(f"wrote {summary['out_dir']} in {summary['seconds']} s")
    if args.json:
        emit_json(summary)
    return 0
