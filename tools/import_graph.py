#!/usr/bin/env python
"""Print the import graph of paddle_models (module -> modules it imports, one line each) and check it.

    python tools/import_graph.py [--check] [--json]

Options: ``--help``. The code: ``paddle_models/commands/import_graph.py``; the same command runs as
``python -m paddle_models import-graph``.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddle_models.commands import run_command  # noqa: E402

if __name__ == "__main__":
    run_command("import-graph")
