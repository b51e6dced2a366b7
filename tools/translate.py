#!/usr/bin/env python
"""Translate raw source lines with a trained Transformer (a checkpoint or an export folder).

    python tools/translate.py -c configs/transformer/multi30k.yaml -o Global.checkpoint=OUT/checkpoints/best \
        --input FILE.en [--out FILE.de] [--beam 4] [--json]
    python tools/translate.py --model-dir OUT/export --input FILE.en [--out FILE.de] [--beam 4] [--json]

Options: ``--help``. The code: ``paddle_models/commands/translate.py``; the same command runs as
``python -m paddle_models translate``.
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
    run_command("translate")
