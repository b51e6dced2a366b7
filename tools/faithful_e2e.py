#!/usr/bin/env python
"""The faithful network end to end on the MR2 sample: tokenizer, train, eval, export, infer, serve.

    python tools/faithful_e2e.py [--data ../shared/data/mr2_sample/Weibo] [--out output/faithful_e2e] [--json]

Options: ``--help``. The code: ``paddle_models/commands/faithful_e2e.py``; the same command runs as
``python -m paddle_models faithful-e2e``.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddle_models.commands import run_command  # noqa: E402

if __name__ == "__main__":
    run_command("faithful-e2e")
