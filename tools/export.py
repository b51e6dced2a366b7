#!/usr/bin/env python
"""Export a checkpoint to a static graph (Paddle Inference, optionally ONNX) with parity checks.

    python tools/export.py -c configs/multimodal/jsonl_small.yaml -o Global.checkpoint=OUT/checkpoints/best --out OUT/export [--onnx] [--json]

Writes model.json + model.pdiparams (one pair per export variant), export.yaml (inputs, outputs, labels,
preprocessing), config.yaml and the tokenizer; fails when the exported graph and the dygraph model differ
by more than 1e-5 relative (ONNX: 1e-4) on the example batch.
"""
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
os.environ.setdefault("GLOG_minloglevel", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddle_models.cli import base_parser, emit_json, print_summary, run_tool, setup_logging  # noqa: E402


def main():
    p = base_parser(__doc__.splitlines()[1])
    p.add_argument("--out", required=True, help="export folder (replaced when it holds an earlier export)")
    p.add_argument("--onnx", action="store_true", help="also write <variant>.onnx (paddle2onnx) and check it "
                                                       "with onnxruntime")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for the parity runs (0: all cores)")
    p.add_argument("--no-onednn-check", action="store_true",
                   help="skip the oneDNN parity probe (a subprocess; a few seconds)")
    args = p.parse_args()
    setup_logging()
    from paddle_models.config import load_config
    from paddle_models.engine.export import ExportError, export_model
    from paddle_models.runtime import setup_runtime

    cfg = load_config(args.config, args.override)
    if not cfg["Global"].get("checkpoint"):
        raise ValueError("set the weights to export with -o Global.checkpoint=PATH (a .safetensors, a .pdparams or a checkpoint "
                         "folder such as <output_dir>/checkpoints/best)")
    setup_runtime(cfg)
    try:
        result = export_model(cfg, args.out, onnx=args.onnx, threads=args.threads,
                              check_onednn=not args.no_onednn_check)
    except ExportError as e:
        raise ValueError(f"export failed: {e}") from None
    def fmt(k, v):
        return f"{v:.3g}" if isinstance(v, float) and (k.endswith("err") or k.endswith("tolerance")) else v

    flat = {k: fmt(k, v) for k, v in result.items() if k not in ("variants", "labels")}
    for name, v in result["variants"].items():
        for k, val in v.items():
            if k.endswith("err") or k == "onednn":
                flat[f"{name}.{k}"] = fmt(k, val)
    print_summary("export", flat)
    if args.json:
        emit_json(result)
    return 0


if __name__ == "__main__":
    run_tool(main)
