#!/usr/bin/env python
"""Compare the module tree of the model a config builds with a printed Paddle module tree.

    python tools/compare_arch.py -c configs/multimodal/ernie_m_resnet101.yaml \
        --printed paddle_models/multimodal/fixtures/network_printed.txt [--json]
    python tools/compare_arch.py -c CONFIG --print        # dump the live tree

Options: ``--help``. The code: ``paddle_models/commands/compare_arch.py``; the same command runs as
``python -m paddle_models compare-arch``.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddle_models.commands import run_command  # noqa: E402

if __name__ == "__main__":
    run_command("compare-arch")
