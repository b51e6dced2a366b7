#!/usr/bin/env python
"""Train any registered model from a config.

    python tools/train.py -c configs/multimodal/jsonl_small.yaml -o Data.root=DIR -o Global.output_dir=OUT [--resume] [--json]
    python -m paddle.distributed.launch --nproc_per_node 2 tools/train.py -c CONFIG   # data parallel
"""
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))  # paddle would default to 1 thread
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddle_models.cli import base_parser, emit_json, print_summary, run_tool, setup_logging  # noqa: E402


def main():
    p = base_parser(__doc__.splitlines()[1])
    p.add_argument("--resume", action="store_true", help="continue from <output_dir>/checkpoints/last")
    args = p.parse_args()
    setup_logging()
    from paddle_models.config import load_config
    from paddle_models.engine.trainer import Trainer
    from paddle_models.registry import get_task

    overrides = list(args.override) + (["Global.resume=true"] if args.resume else [])
    cfg = load_config(args.config, overrides)
    task = get_task(cfg["_family"])(cfg)
    trainer = Trainer(cfg, task)
    result = trainer.fit()
    if trainer.is_main:
        print_summary("train", result)
        if args.json:
            emit_json(result)
    return 0


if __name__ == "__main__":
    run_tool(main)
