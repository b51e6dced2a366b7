#!/usr/bin/env python
"""Compare the module tree of the model a config builds with a printed Paddle module tree.

    python tools/compare_arch.py -c configs/multimodal/ernie_m_resnet101.yaml \
        --printed paddle_models/multimodal/fixtures/network_printed.txt [--json]
    python tools/compare_arch.py -c CONFIG --print        # dump the live tree

Exits 0 only when every node matches (after the listed normalizations), 1 on any difference.
No weights are needed: the model is built with lazy (uninitialised) parameters.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddle_models.cli import base_parser, emit_json, run_tool, setup_logging  # noqa: E402


def main():
    p = base_parser(__doc__.splitlines()[1])
    p.add_argument("--printed", help="file with a printed module tree (print(model) output)")
    p.add_argument("--print", dest="dump", action="store_true", help="print the live module tree and exit")
    p.add_argument("--max-lines", type=int, default=200, help="differences shown (all are counted)")
    args = p.parse_args()
    setup_logging(quiet=True)
    import logging

    import paddle

    from paddle_models import archcompare
    from paddle_models.config import load_config
    from paddle_models.registry import model_entry

    cfg = load_config(args.config, args.override)
    pretrained = cfg["Arch"].get("pretrained")
    if isinstance(pretrained, dict):  # the architecture only: load no weights
        for key in pretrained:
            if key != "strict":
                pretrained[key] = None
    logging.getLogger("paddle_models").setLevel(logging.ERROR)  # no "random weights" warning here
    with paddle.LazyGuard():  # shapes only: parameters are not initialised
        model = model_entry(cfg["Arch"]["name"])["builder"](cfg)
    if args.dump:
        print(model)
        if args.json:
            emit_json({"parameters": archcompare.count_parameters(model)})
        return 0
    if not args.printed:
        p.error("--printed FILE is required (or --print to dump the live tree)")
    with open(args.printed, "r", encoding="utf-8") as f:
        printed = f.read()
    result = archcompare.compare_model(model, printed, args.printed)
    print(archcompare.format_report(result, args.max_lines))
    if args.json:
        emit_json({"differences": len(result["differences"]), "parameters": result["parameters"],
                   "normalized": result["normalized"],
                   "paths": [d[0] for d in result["differences"]]})
    return 1 if result["differences"] else 0


if __name__ == "__main__":
    run_tool(main)
