"""The faithful network end to end on the MR2 sample: tokenizer, train, eval, export, infer, serve.

    python tools/faithful_e2e.py [--data ../shared/data/mr2_sample/Weibo] [--out output/faithful_e2e] [--json]

Uses ``configs/multimodal/ernie_m_resnet101.yaml`` (ERNIE-M base + ResNet-101, 345.6M parameters, the
baseline's recipe: AdamW 1e-6, warmup + linear decay, batch 4, 2 epochs) on the one MR2 Weibo item that has
its image and evidence here (``Data.on_bad_image=skip`` drops the 713 items whose images are absent;
their captions still train the SentencePiece tokenizer). Each stage runs the real tool in a child process;
the summary gives each stage's wall time and peak RSS (from ``wait4``). The serve stage runs when
``tools/serve.py`` exists: it posts the item (images as base64) and checks the row equals infer's.
Pretrained weights are used when ``-o Arch.pretrained.ernie=...`` / ``resnet=...`` are given; otherwise the
network is randomly initialised (said loudly by the tools). The stages: ``paddle_models/multimodal/e2e.py``.
Exit codes: 0 when every stage passed, 1 when one failed (its log's tail on stderr), 2 without the sample.
"""
import argparse
import json
import os
import sys


def parser(prog=None):
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="the MR2 Weibo sample (default: ../shared/data/mr2_sample/Weibo "
                                                "beside the checkout)")
    p.add_argument("--out", default="output/faithful_e2e")
    p.add_argument("--steps", type=int, default=2, help="training steps (one per epoch: one item, batch 4)")
    p.add_argument("--vocab-size", type=int, default=3000)
    p.add_argument("-o", "--override", action="append", default=[], help="extra config overrides")
    p.add_argument("--json", action="store_true")
    return p


def main(argv=None, prog=None):
    args = parser(prog).parse_args(argv)
    from ..multimodal.e2e import DEFAULT_DATA, ITEMS_FILE, StageError, run_faithful_e2e

    args.data = args.data or DEFAULT_DATA
    items = os.path.join(args.data, ITEMS_FILE)
    if not os.path.isfile(items):
        print(f"error: {items}: MR2 sample not found (../shared/data/mr2_sample/Weibo)", file=sys.stderr)
        return 2
    try:
        summary = run_faithful_e2e(args.data, args.out, args.steps, args.vocab_size, args.override)
    except StageError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    print(json.dumps({k: v for k, v in summary.items() if k != "infer_rows"}, indent=1) if not args.json else "")
    if args.json:
        print(json.dumps(summary))
    return 0
