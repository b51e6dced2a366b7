#!/usr/bin/env python
"""Train any registered model from a config.

    python tools/train.py -c configs/multimodal/jsonl_small.yaml -o Data.root=DIR -o Global.output_dir=OUT \
        [--resume] [--json]
    python -m paddle.distributed.launch --nproc_per_node 2 tools/train.py -c CONFIG   # data parallel

Options: ``--help``. The code: ``paddle_models/commands/train.py``; the same command runs as
``python -m paddle_models train``.
"""
import os
import signal
import sys

# SIGTERM waits until the command's handler is in place (paddle_models/engine/signals.py); blocked before any
# import, so the threads that imports start (numpy's, paddle's) never take it
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddle_models.commands import run_command  # noqa: E402

if __name__ == "__main__":
    run_command("train")
