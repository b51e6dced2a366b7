"""Evaluate a checkpoint on a split.

    python tools/eval.py -c CONFIG -o Global.checkpoint=OUT/checkpoints/best --split test [--json]
"""
from ..cli import base_parser, emit_json, print_summary, setup_logging


def parser(prog=None):
    p = base_parser(__doc__.splitlines()[0], prog=prog)
    p.add_argument("--split", default=None, help="split to evaluate: train, val, test or a file stem "
                   "(default: the task's default, e.g. test when Data.test_path / Data.test_src is set, else val)")
    return p


def main(argv=None, prog=None):
    args = parser(prog).parse_args(argv)
    setup_logging()
    from ..config import load_config
    from ..engine.trainer import Trainer
    from ..registry import get_task

    cfg = load_config(args.config, args.override)
    if not cfg["Global"].get("checkpoint"):
        raise ValueError("set the weights to evaluate with -o Global.checkpoint=PATH (a checkpoint folder, a "
                         ".safetensors or a .pdparams)")
    task = get_task(cfg["_family"])(cfg)
    trainer = Trainer(cfg, task)
    split = args.split or task.default_eval_split()
    result = trainer.evaluate(split)
    result["checkpoint"] = cfg["Global"]["checkpoint"]
    if trainer.is_main:
        print_summary(f"eval {split}", result)
        if args.json:
            emit_json(result)
    return 0
