"""Train any registered model from a config.

    python tools/train.py -c configs/multimodal/jsonl_small.yaml -o Data.root=DIR -o Global.output_dir=OUT \
        [--resume] [--json]
    python -m paddle.distributed.launch --nproc_per_node 2 tools/train.py -c CONFIG   # data parallel
"""
from ..cli import base_parser, emit_json, print_summary, setup_logging


def parser(prog=None):
    p = base_parser(__doc__.splitlines()[0], prog=prog)
    p.add_argument("--resume", action="store_true", help="continue from <output_dir>/checkpoints/last")
    return p


def main(argv=None, prog=None):
    args = parser(prog).parse_args(argv)
    setup_logging()
    from ..config import load_config
    from ..engine.trainer import Trainer
    from ..registry import get_task

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
