"""The weights parity check: PyTorch weights, converted or loaded directly, give the reference outputs.

    python tools/weights_parity.py [--size full|small] [--out output/weights_parity] [--torch-python PY]
                                   [--train-step] [--json]

Random weights of the real layouts (torchvision ResNet-101, ernie-m-base as Hugging Face saves it in
``model.safetensors`` and ``pytorch_model.bin``, a HF task model, the whole PyTorch twin) are written by
``benchmarks/torch_weights.py`` under ``--torch-python`` (default: ``$PADDLE_MODELS_TWIN_PYTHON``, else
``.venv-twin/bin/python``), converted with ``tools/convert_weights.py`` and loaded directly
(``Arch.pretrained.*``); the ResNet features and logits, the ERNIE-M sequence and pooled output (explicit
attention mask) and the whole network's logits (both fusions) must match torchvision's, transformers' and
the twin's within a relative error of 1e-4 (max |paddle - torch| / max |torch|). ``--train-step`` also trains
the faithful config one step on the MR2 sample with ``Arch.pretrained.resnet=<resnet.pth>`` and
``ernie=<the HF folder>`` and checks that no random-weights warning is logged. Each step runs in its own
process; the summary gives its wall time and peak RSS. Exit code 0 when everything matched, 1 otherwise, 2
without a PyTorch Python. The code: ``paddle_models/multimodal/torch_parity.py``.
"""
import argparse
import os
import sys

from ..cli import add_debug_flag, emit_json


def parser(prog=None):
    ap = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=["full", "small"], default="full",
                    help="full: ResNet-101 and ernie-m-base; small: the same code paths at narrow sizes")
    ap.add_argument("--out", default="output/weights_parity", help="folder for the files, logs and results")
    ap.add_argument("--torch-python", default=None, help="a Python with torch, torchvision and transformers")
    ap.add_argument("--train-step", action="store_true", help="also train the faithful config one step (full size)")
    ap.add_argument("--data", default=None, help="the MR2 Weibo sample for --train-step "
                                                 "(default: ../shared/data/mr2_sample/Weibo beside the checkout)")
    ap.add_argument("--stage", choices=["converted", "direct"], help=argparse.SUPPRESS)
    ap.add_argument("--json", action="store_true", help="print a JSON result as the last line")
    add_debug_flag(ap)
    return ap


def _run_stage(args) -> int:
    from ..multimodal import torch_parity

    ref = os.path.join(args.out, "torch")
    if args.stage == "converted":
        result = {"errors": torch_parity.compare_converted(ref, os.path.join(args.out, "paddle"), args.size)}
    else:
        result = torch_parity.compare_direct(ref, args.size)
    emit_json(result)
    return 0


def _print_summary(summary: dict) -> None:
    for name, stage in summary["stages"].items():
        print(f"{name:32s} {stage['seconds']:8.1f} s  peak RSS {stage['peak_rss_mib']:8.1f} MiB")
    for name, error in summary["errors"].items():
        print(f"{name:32s} rel err {error:.2e}  {'ok' if error < summary['tolerance'] else 'FAIL'}")
    for name, noise in summary["torch_fp32_noise"].items():
        print(f"torch fp32 vs fp64 {name:21s} rel err {noise:.2e}")
    for name, same in summary["same_encoders"].items():
        print(f"direct {name:25s} {'same encoder values' if same else 'DIFFERENT encoder values'}")
    if "train_step_random_weights_warning" in summary:
        logged = summary["train_step_random_weights_warning"]
        print(f"train step: random-weights warning {'LOGGED' if logged else 'absent'}")
    print("PASS" if summary["ok"] else "FAIL")


def main(argv=None, prog=None):
    args = parser(prog).parse_args(argv)
    if args.stage:
        return _run_stage(args)
    from ..multimodal import e2e, torch_parity

    python = args.torch_python or torch_parity.twin_python()
    if python is None:
        print("error: no Python with torch, torchvision and transformers: give --torch-python, set "
              f"{torch_parity.TWIN_PYTHON_ENV}, or build .venv-twin (make bench-twin)", file=sys.stderr)
        return 2
    data = (args.data or e2e.DEFAULT_DATA) if args.train_step else None
    summary = torch_parity.run_weights_parity(os.path.abspath(args.out), args.size, python, data)
    _print_summary(summary)
    if args.json:
        emit_json(summary)
    return 0 if summary["ok"] else 1
