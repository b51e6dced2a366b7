#!/usr/bin/env python
"""Convert PyTorch weights (torchvision ResNet, Hugging Face ERNIE-M, the PyTorch twin) to Paddle-named safetensors.

    python tools/convert_weights.py --resnet resnet101-63fe2227.pth --out weights/resnet101.safetensors
    python tools/convert_weights.py --ernie ernie-m-base_pytorch/ --out weights/ernie_m_base.safetensors
    python tools/convert_weights.py --twin twin.pth --out weights/network.safetensors

Options: ``--help``. The code: ``paddle_models/commands/convert_weights.py`` (the conversion:
``paddle_models/multimodal/convert.py``); the same command runs as ``python -m paddle_models convert-weights``.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddle_models.commands import run_command  # noqa: E402

if __name__ == "__main__":
    run_command("convert-weights")
