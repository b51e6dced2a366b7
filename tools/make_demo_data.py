#!/usr/bin/env python
"""Write the synthetic demo dataset (JSONL layout, small PNG images, evidence).

    python tools/make_demo_data.py --out output/demo_data --json

Options: ``--help``. The code: ``paddle_models/commands/make_demo_data.py``; the same command runs as
``python -m paddle_models make-demo-data``.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddle_models.commands import run_command  # noqa: E402

if __name__ == "__main__":
    run_command("make-demo-data")
