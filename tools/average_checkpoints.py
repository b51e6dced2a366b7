#!/usr/bin/env python
"""Average the weights of several checkpoints into one (safetensors in and out).

    python tools/average_checkpoints.py --last 10 --run OUT [--out OUT/checkpoints/avg_last10] [--json]
    python tools/average_checkpoints.py --inputs CKPT_A CKPT_B --out AVG.safetensors

Options: ``--help``. The code: ``paddle_models/commands/average_checkpoints.py``; the same command runs as
``python -m paddle_models average-checkpoints``.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddle_models.commands import run_command  # noqa: E402

if __name__ == "__main__":
    run_command("average-checkpoints")
