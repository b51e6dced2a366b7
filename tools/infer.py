#!/usr/bin/env python
"""Predict with an exported model (Paddle Inference, or onnxruntime on its ONNX graph) on raw data.

    python tools/infer.py --model-dir OUT/export --input data/test.jsonl --out OUT/pred.csv [--json]
                          [--engine auto|paddle|onnxruntime] [--precision auto|fp32|bf16|int8]

Options: ``--help``. The code: ``paddle_models/commands/infer.py``; the same command runs as
``python -m paddle_models infer``.
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
    run_command("infer")
