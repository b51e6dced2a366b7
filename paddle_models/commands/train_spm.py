"""Train the joint SentencePiece vocabulary of the Transformer (source and target text together).

    python tools/train_spm.py --inputs ../shared/data/multi30k/train.en.gz ../shared/data/multi30k/train.de.gz \
        --vocab-size 8000 --out output/spm/spm [--model-type unigram] [--json]

Writes <out>.model and <out>.vocab with the ids the model expects (pad 0, unk 1, bos 2, eos 3). Point a
config at it with -o Data.spm_model=<out>.model (without it, training builds one into its output_dir).
"""
import argparse
import os
import time

from ..cli import add_debug_flag, emit_json


def parser(prog=None):
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    p.add_argument("--inputs", nargs="+", required=True, help="text files, plain or gzipped, one sentence a line")
    p.add_argument("--out", required=True, help="output prefix: writes <out>.model and <out>.vocab")
    p.add_argument("--vocab-size", type=int, default=8000)
    p.add_argument("--model-type", default="unigram", choices=["unigram", "bpe", "char", "word"])
    p.add_argument("--character-coverage", type=float, default=1.0)
    p.add_argument("--max-sentences", type=int, default=0, help="train on a random sample of this many lines (0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object with the results as the last line")
    add_debug_flag(p)
    return p


def main(argv=None, prog=None):
    args = parser(prog).parse_args(argv)
    from ..transformer.data import SpmTokenizer, read_lines, train_sentencepiece

    t0 = time.time()
    try:
        path = train_sentencepiece(args.inputs, args.out, args.vocab_size, args.model_type,
                                   args.character_coverage, args.max_sentences, args.seed)
    except RuntimeError as e:  # SentencePiece's own errors (vocabulary too large for the text...)
        raise ValueError(str(e)) from None
    tok = SpmTokenizer(path)
    sample = [s for s in read_lines(args.inputs[0])[:2000] if s.strip()]
    avg = sum(len(tok.encode(s)) for s in sample) / max(1, len(sample))
    result = {"model": os.path.abspath(path), "vocab": os.path.abspath(args.out + ".vocab"),
              "vocab_size": tok.vocab_size, "avg_pieces_per_sentence": round(avg, 2),
              "seconds": round(time.time() - t0, 2)}
    print(f"wrote {path} ({tok.vocab_size} pieces; {avg:.1f} pieces per sentence of {args.inputs[0]})")
    if args.json:
        emit_json(result)
    return 0
