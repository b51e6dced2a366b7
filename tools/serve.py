#!/usr/bin/env python
"""Serve an export folder over HTTP (FastAPI + uvicorn) with dynamic batching.

    python tools/serve.py --model-dir OUT/export [--host 127.0.0.1] [--port 8000] [--max-batch 32]
                          [--max-wait-ms 5] [--token-file F] [--watch] [--processes N]

Options: ``--help``. The code: ``paddle_models/commands/serve.py``; the same command runs as
``python -m paddle_models serve``.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddle_models.commands import run_command  # noqa: E402

if __name__ == "__main__":
    run_command("serve")
