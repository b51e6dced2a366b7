#!/usr/bin/env python
"""Evaluate a checkpoint on a split.

    python tools/eval.py -c CONFIG -o Global.checkpoint=OUT/checkpoints/best --split test [--json]
"""
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddle_models.cli import base_parser, emit_json, print_summary, run_tool, setup_logging  # noqa: E402


def main():
    p = base_parser(__doc__.splitlines()[1])
    p.add_argument("--split", default=None, help="split to evaluate: train, val, test or a file stem "
                   "(default: the task's default, e.g. test when Data.test_path / Data.test_src is set, else val)")
    args = p.parse_args()
    setup_logging()
    from paddle_models.config import load_config
    from paddle_models.engine.trainer import Trainer
    from paddle_models.registry import get_task

    cfg = load_config(args.config, args.override)
    if not cfg["Global"].get("checkpoint"):
        raise ValueError("set the weights to evaluate with -o Global.checkpoint=PATH (a checkpoint folder, a .safetensors or a .pdparams)")
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


if __name__ == "__main__":
    run_tool(main)
