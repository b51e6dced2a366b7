"""Compare the module tree of the model a config builds with a printed Paddle module tree.

    python tools/compare_arch.py -c configs/multimodal/ernie_m_resnet101.yaml \
        --printed paddle_models/multimodal/fixtures/network_printed.txt [--json]
    python tools/compare_arch.py -c CONFIG --print        # dump the live tree

Exits 0 only when every node matches (after the listed normalizations), 1 on any difference.
No weights are needed: the model is built with lazy (uninitialised) parameters.
"""
from ..cli import base_parser, emit_json, setup_logging


def parser(prog=None):
    p = base_parser(__doc__.splitlines()[0], prog=prog)
    p.add_argument("--printed", help="file with a printed module tree (print(model) output)")
    p.add_argument("--print", dest="dump", action="store_true", help="print the live module tree and exit")
    p.add_argument("--max-lines", type=int, default=200, help="differences shown (all are counted)")
    return p


def lazy_model(config_path, overrides):
    """The model of the config, its parameters uninitialised and no pretrained weights loaded."""
    import logging

    import paddle

    from ..config import load_config
    from ..registry import model_entry

    cfg = load_config(config_path, overrides)
    pretrained = cfg["Arch"].get("pretrained")
    if isinstance(pretrained, dict):  # the architecture only: load no weights
        for key in pretrained:
            if key != "strict":
                pretrained[key] = None
    logger = logging.getLogger("paddle_models")
    level = logger.level
    logger.setLevel(logging.ERROR)  # no "random weights" warning here; the caller's level comes back after
    try:
        with paddle.LazyGuard():  # shapes only: parameters are not initialised
            return model_entry(cfg["Arch"]["name"])["builder"](cfg)
    finally:
        logger.setLevel(level)


def main(argv=None, prog=None):
    p = parser(prog)
    args = p.parse_args(argv)
    setup_logging(quiet=True)
    from .. import archcompare

    model = lazy_model(args.config, args.override)
    if args.dump:
        print(model)
        if args.json:
            emit_json({"parameters": archcompare.count_parameters(model)})
        return 0
    if not args.printed:
        p.error("--printed FILE is required (or --print to dump the live tree)")
    with open(args.printed, encoding="utf-8") as f:
        printed = f.read()
    result = archcompare.compare_model(model, printed, args.printed)
    print(archcompare.format_report(result, args.max_lines))
    if args.json:
        emit_json({"differences": len(result["differences"]), "parameters": result["parameters"],
                   "normalized": result["normalized"],
                   "paths": [d[0] for d in result["differences"]]})
    return 1 if result["differences"] else 0
