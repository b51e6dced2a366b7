#!/usr/bin/env python
"""Train the joint SentencePiece vocabulary of the Transformer (source and target text together).

    python tools/train_spm.py --inputs ../shared/data/multi30k/train.en.gz ../shared/data/multi30k/train.de.gz \
        --vocab-size 8000 --out output/spm/spm [--model-type unigram] [--json]

Options: ``--help``. The code: ``paddle_models/commands/train_spm.py``; the same command runs as
``python -m paddle_models train-spm``.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddle_models.commands import run_command  # noqa: E402

if __name__ == "__main__":
    run_command("train-spm")
