"""Train a small SentencePiece tokenizer in ERNIE-M's format (sentencepiece.bpe.model + vocab.txt).

    python tools/train_tokenizer.py --input data/train.jsonl --out output/tokenizer --vocab-size 8000 --json

Inputs (one or more files, format detected from content): JSONL with a ``text`` field (and
``evidence_texts``), an MR2 ``dataset_items_*.json`` (captions), a JSON list of ``{"text": ...}``
(MVSA), or plain text with one text per line. Load the result with
``paddle_models.multimodal.tokenizer.load_tokenizer(DIR)``.
"""
import argparse
import os
import time

from ..cli import add_debug_flag, emit_json


def parser(prog=None):
    ap = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", nargs="+", required=True, help="text files (JSONL / JSON / plain lines)")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--vocab-size", type=int, default=8000, help="SentencePiece vocabulary target")
    ap.add_argument("--model-type", default="unigram", choices=["unigram", "bpe", "char", "word"])
    ap.add_argument("--character-coverage", type=float, default=0.9995)
    ap.add_argument("--lowercase", action="store_true", help="fold case inside the model")
    ap.add_argument("--field", default=None, help="JSON field holding the text (default text / caption)")
    ap.add_argument("--json", action="store_true", help="print a JSON result as the last line")
    add_debug_flag(ap)
    return ap


def main(argv=None, prog=None):
    ap = parser(prog)
    args = ap.parse_args(argv)
    from ..multimodal.tokenizer import read_texts, train_tokenizer

    t0 = time.time()
    for p in args.input:
        if not os.path.isfile(p):
            ap.error(f"--input {p}: no such file")
    texts = read_texts(args.input, field=args.field)
    info = train_tokenizer(texts, args.out, vocab_size=args.vocab_size, model_type=args.model_type,
                           character_coverage=args.character_coverage, lowercase=args.lowercase)
    info["out_dir"] = args.out
    info["seconds"] = round(time.time() - t0, 3)
    print(f"trained on {info['num_texts']} texts: vocab.txt has {info['vocab_size']} tokens "
          f"(SentencePiece {info['sp_vocab_size']}) in {args.out}")
    if args.json:
        emit_json(info)
    return 0
