"""Convert PyTorch weights (torchvision ResNet, Hugging Face ERNIE-M, the PyTorch twin) to Paddle-named safetensors.

    python tools/convert_weights.py --resnet resnet101-63fe2227.pth --out weights/resnet101.safetensors
    python tools/convert_weights.py --ernie ernie-m-base_pytorch/ --out weights/ernie_m_base.safetensors
    python tools/convert_weights.py --twin twin.pth --out weights/network.safetensors

``--resnet``: a torchvision ResNet state dict; the result loads strictly into ``paddle.vision.models.resnet101()``
(or the ResNet of its depth). ``--ernie``: a Hugging Face ERNIE-M folder (``config.json`` + ``model.safetensors``
or ``pytorch_model.bin``), a task model's folder (``ErnieMForSequenceClassification`` ...: the head is dropped)
or a HF-named weights file; the result loads strictly into PaddleNLP's ``ErnieMModel``. ``--twin``: a
whole-network checkpoint of ``benchmarks/torch_twin.py``; the result is a ``NetWork`` state dict. PyTorch
files are read without torch and without running code from them. Every source key is mapped, dropped with its
reason (printed), or an error. Use the result with ``-o Arch.pretrained.resnet=OUT`` (``ernie=``,
``checkpoint=``); those keys also take the PyTorch files directly.
"""
import argparse
import time

from ..cli import add_debug_flag, emit_json


def parser(prog=None):
    ap = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = ap.add_mutually_exclusive_group(required=True)
    source.add_argument("--resnet", metavar="FILE", help="a torchvision ResNet state dict (.pth, .safetensors)")
    source.add_argument("--ernie", metavar="PATH", help="a Hugging Face ERNIE-M folder or a HF-named weights file")
    source.add_argument("--twin", metavar="FILE", help="a whole-network checkpoint of benchmarks/torch_twin.py")
    ap.add_argument("--out", required=True, help="the Paddle-named .safetensors file to write")
    ap.add_argument("--json", action="store_true", help="print a JSON result as the last line")
    add_debug_flag(ap)
    return ap


def _arch_ernie(path: str) -> dict | None:
    """The ``Arch.ernie`` values a Hugging Face folder's config.json implies (None for a plain file)."""
    import json
    import os

    from ..multimodal.convert import HF_ERNIE_DEFAULTS, is_hf_folder

    if not os.path.isdir(path) or not is_hf_folder(path):
        return None
    with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    return {k: config.get(k, v) for k, v in HF_ERNIE_DEFAULTS.items() if k != "layer_norm_eps"}


def main(argv=None, prog=None):
    args = parser(prog).parse_args(argv)
    from ..multimodal.convert import convert_source, write_safetensors

    kind = next(k for k in ("resnet", "ernie", "twin") if getattr(args, k))
    source = getattr(args, kind)
    t0 = time.time()
    conversion = convert_source(kind, source)
    write_safetensors(conversion.state, args.out)
    seconds = round(time.time() - t0, 3)
    print(conversion.summary())
    key = {"resnet": "resnet", "ernie": "ernie", "twin": "checkpoint"}[kind]
    print(f"wrote {args.out} ({len(conversion.state)} arrays, {seconds} s); use it with "
          f"-o Arch.pretrained.{key}={args.out}")
    arch = _arch_ernie(source) if kind == "ernie" else None
    if arch:
        print("Arch.ernie for these weights: " + ", ".join(f"{k}={v}" for k, v in arch.items()))
    if args.json:
        emit_json({"kind": kind, "source": source, "out": args.out, "mapped": len(conversion.state),
                   "dropped": [{"key": k, "reason": r} for k, r in conversion.dropped], "arch_ernie": arch,
                   "seconds": seconds})
    return 0
