#!/usr/bin/env python
"""Evaluate a checkpoint on a split.

    python tools/eval.py -c CONFIG -o Global.checkpoint=OUT/checkpoints/best --split test [--json]

Options: ``--help``. The code: ``paddle_models/commands/eval.py``; the same command runs as
``python -m paddle_models eval``.
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
    run_command("eval")
