#!/usr/bin/env python
"""Train a small SentencePiece tokenizer in ERNIE-M's format (sentencepiece.bpe.model + vocab.txt).

    python tools/train_tokenizer.py --input data/train.jsonl --out output/tokenizer --vocab-size 8000 --json

Options: ``--help``. The code: ``paddle_models/commands/train_tokenizer.py``; the same command runs as
``python -m paddle_models train-tokenizer``.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddle_models.commands import run_command  # noqa: E402

if __name__ == "__main__":
    run_command("train-tokenizer")
