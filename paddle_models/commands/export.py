"""Export a checkpoint to a static graph (Paddle Inference, optionally ONNX) with parity checks.

    python tools/export.py -c configs/multimodal/jsonl_small.yaml -o Global.checkpoint=OUT/checkpoints/best \
        --out OUT/export [--onnx] [--json]

Writes model.json + model.pdiparams (one pair per export variant), export.yaml (inputs, outputs, labels,
preprocessing), config.yaml and the tokenizer; fails when the exported graph and the dygraph model differ
by more than 1e-5 relative (ONNX: 1e-4) on the example batch.

--quantize int8 also writes model.int8.onnx (onnxruntime post-training quantization calibrated on
--calibration-items training items) beside the fp32 files, and fails unless it gives the fp32 graph's class
on at least --min-agreement of the held-out (validation) items; export.yaml's `quantization` records the
method, the calibration and the agreement. tools/infer.py and tools/serve.py then run it by default.
"""
from ..cli import base_parser, emit_json, print_summary, setup_logging


def parser(prog=None):
    p = base_parser(__doc__.splitlines()[0], prog=prog)
    p.add_argument("--out", required=True, help="export folder (replaced when it holds an earlier export)")
    p.add_argument("--onnx", action="store_true", help="also write <variant>.onnx (paddle2onnx) and check it "
                                                       "with onnxruntime")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for the parity runs (0: all cores)")
    p.add_argument("--no-onednn-check", action="store_true",
                   help="skip the oneDNN parity probe (a subprocess; a few seconds)")
    _add_quantize_flags(p)
    return p


def _add_quantize_flags(p):
    p.add_argument("--quantize", choices=["int8"], default=None,
                   help="also write an int8 graph (implies --onnx); see paddle_models/engine/quantize.py")
    p.add_argument("--quantize-method", choices=["onnx-static", "onnx-static-qdq", "onnx-dynamic"],
                   default="onnx-static",
                   help="onnx-static: per-channel int8 weights, activations calibrated on training items, "
                        "onnxruntime's integer operators; onnx-static-qdq: the same in QDQ format; onnx-dynamic: int8 "
                        "MatMul weights, activation ranges per call (convolutions stay fp32)")
    p.add_argument("--calibration-items", type=int, default=None,
                   help="training items to calibrate on (default: engine/quantize.py CALIBRATION_ITEMS, 64)")
    p.add_argument("--agreement-items", type=int, default=None,
                   help="held-out (validation split) items the int8 graph is checked on, at most (default: "
                        "engine/quantize.py AGREEMENT_ITEMS, 1000)")
    p.add_argument("--min-agreement", type=float, default=0.99,
                   help="fail unless int8 and fp32 give the same class on at least this share of held-out items")


def _quantize_settings(args):
    """The ``quantize`` argument of ``export_model`` (None without ``--quantize``), the flags checked."""
    for flag, value in (("--calibration-items", args.calibration_items), ("--agreement-items", args.agreement_items)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    if not 0.0 <= args.min_agreement <= 1.0:
        raise ValueError(f"--min-agreement must be in [0, 1], got {args.min_agreement}")
    if not args.quantize:
        return None
    settings = {"method": args.quantize_method, "min_agreement": args.min_agreement}
    for key in ("calibration_items", "agreement_items"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    return settings


def _format(key, value):
    return f"{value:.3g}" if isinstance(value, float) and (key.endswith("err") or key.endswith("tolerance")) else value


def summary_rows(result: dict) -> dict:
    """The readable table of an export's result: its scalars, the int8 agreement in one line, each variant's
    parity errors and oneDNN state."""
    flat = {k: _format(k, v) for k, v in result.items() if k not in ("variants", "labels", "quantization")}
    q = result.get("quantization")
    if q:
        a = q["agreement"]
        flat["int8"] = (f"{q['file']} ({q['method']}, {q['calibration']['items']} calibration items): same class "
                        f"as fp32 on {a['same_class_rate']:.2%} of {a['items']} {a['split']} items (threshold "
                        f"{a['threshold']:.0%}), max |prob diff| {a['max_prob_diff']:.3g}")
    for name, variant in result["variants"].items():
        for k, val in variant.items():
            if k.endswith("err") or k == "onednn":
                flat[f"{name}.{k}"] = _format(k, val)
    return flat


def main(argv=None, prog=None):
    args = parser(prog).parse_args(argv)
    quantize = _quantize_settings(args)
    setup_logging()
    from ..config import load_config
    from ..engine.export import ExportError, export_model
    from ..runtime import setup_runtime

    cfg = load_config(args.config, args.override)
    if not cfg["Global"].get("checkpoint"):
        raise ValueError("set the weights to export with -o Global.checkpoint=PATH (a .safetensors, a .pdparams or a "
                         "checkpoint folder such as <output_dir>/checkpoints/best)")
    setup_runtime(cfg)
    try:
        result = export_model(cfg, args.out, onnx=args.onnx, threads=args.threads,
                              check_onednn=not args.no_onednn_check, quantize=quantize)
    except ExportError as e:
        raise ValueError(f"export failed: {e}") from None
    print_summary("export", summary_rows(result))
    if args.json:
        emit_json(result)
    return 0
