#!/usr/bin/env python
"""Draw the architecture diagram of the multimodal network a config builds (a PNG, for the docs).

    python tools/draw_architecture.py -c configs/multimodal/ernie_m_resnet101.yaml \
        --out docs/images/multimodal_network.png [--json]

Options: ``--help``. The code: ``paddle_models/commands/draw_architecture.py``; the same command runs as
``python -m paddle_models draw-architecture``.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddle_models.commands import run_command  # noqa: E402

if __name__ == "__main__":
    run_command("draw-architecture")
