#!/usr/bin/env python
"""Export a checkpoint to a static graph (Paddle Inference, optionally ONNX) with parity checks.

    python tools/export.py -c configs/multimodal/jsonl_small.yaml -o Global.checkpoint=OUT/checkpoints/best \
        --out OUT/export [--onnx] [--quantize int8] [--json]

Options: ``--help``. The code: ``paddle_models/commands/export.py``; the same command runs as
``python -m paddle_models export``.
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
    run_command("export")
