#!/usr/bin/env python
"""Export a checkpoint to a static graph (Paddle Inference, optionally ONNX) with parity checks.

    python tools/export.py -c configs/multimodal/jsonl_small.yaml -o Global.checkpoint=OUT/checkpoints/best --out OUT/export [--onnx] [--json]

Writes model.json + model.pdiparams (one pair per export variant), export.yaml (inputs, outputs, labels,
preprocessing), config.yaml and the tokenizer; fails when the exported graph and the dygraph model differ
by more than 1e-5 relative (ONNX: 1e-4) on the example batch.

--quantize int8 also writes model.int8.onnx (onnxruntime post-training quantization calibrated on
--calibration-items training items) beside the fp32 files, and fails unless it gives the fp32 graph's class
on at least --min-agreement of the held-out (validation) items; export.yaml's `quantization` records the
method, the calibration and the agreement. tools/infer.py and tools/serve.py then run it by default.
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
    p.add_argument("--quantize", choices=["int8"], default=None,
                   help="also write an int8 graph (implies --onnx); see paddle_models/engine/quantize.py")
    p.add_argument("--quantize-method", choices=["onnx-static", "onnx-static-qdq", "onnx-dynamic"],
                   default="onnx-static",
                   help="onnx-static: per-channel int8 weights, activations calibrated on training items, onnxruntime's "
                        "integer operators; onnx-static-qdq: the same in QDQ format; onnx-dynamic: int8 MatMul "
                        "weights, activation ranges per call (convolutions stay fp32)")
    p.add_argument("--calibration-items", type=int, default=64, help="training items to calibrate on")
    p.add_argument("--agreement-items", type=int, default=1000,
                   help="held-out (validation split) items the int8 graph is checked on, at most")
    p.add_argument("--min-agreement", type=float, default=0.99,
                   help="fail unless int8 and fp32 give the same class on at least this share of held-out items")
    args = p.parse_args()
    if args.calibration_items < 1 or args.agreement_items < 1:
        raise ValueError("--calibration-items and --agreement-items must be >= 1")
    if not 0.0 <= args.min_agreement <= 1.0:
        raise ValueError(f"--min-agreement must be in [0, 1], got {args.min_agreement}")
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
        quantize = None
        if args.quantize:
            quantize = {"method": args.quantize_method, "calibration_items": args.calibration_items,
                        "agreement_items": args.agreement_items, "min_agreement": args.min_agreement}
        result = export_model(cfg, args.out, onnx=args.onnx, threads=args.threads,
                              check_onednn=not args.no_onednn_check, quantize=quantize)
    except ExportError as e:
        raise ValueError(f"export failed: {e}") from None
    def fmt(k, v):
        return f"{v:.3g}" if isinstance(v, float) and (k.endswith("err") or k.endswith("tolerance")) else v

    flat = {k: fmt(k, v) for k, v in result.items() if k not in ("variants", "labels", "quantization")}
    q = result.get("quantization")
    if q:
        a = q["agreement"]
        flat["int8"] = (f"{q['file']} ({q['method']}, {q['calibration']['items']} calibration items): same class "
                        f"as fp32 on {a['same_class_rate']:.2%} of {a['items']} {a['split']} items (threshold "
                        f"{a['threshold']:.0%}), max |prob diff| {a['max_prob_diff']:.3g}")
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
