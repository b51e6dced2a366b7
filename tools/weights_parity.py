#!/usr/bin/env python
"""The weights parity check: PyTorch weights, converted or loaded directly, give the reference outputs.

    python tools/weights_parity.py [--size full|small] [--out output/weights_parity] [--torch-python PY]
                                   [--train-step] [--json]

Options: ``--help``. The code: ``paddle_models/commands/weights_parity.py`` (the check:
``paddle_models/multimodal/torch_parity.py``); the same command runs as ``python -m paddle_models weights-parity``.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddle_models.commands import run_command  # noqa: E402

if __name__ == "__main__":
    run_command("weights-parity")
