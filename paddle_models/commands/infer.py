"""Predict with an exported model (Paddle Inference, or onnxruntime on its ONNX graph) on raw data.

    python tools/infer.py --model-dir OUT/export --input data/test.jsonl --out OUT/pred.csv [--json]
                          [--engine auto|paddle|onnxruntime] [--precision auto|fp32|bf16|int8]

An export with an int8 graph (tools/export.py --quantize int8) runs it on onnxruntime by default; any
other export runs on Paddle Inference in its own precision (fp32, or bf16 for an export made with
Global.precision: bf16); --engine / --precision choose otherwise.

Multimodal exports read a JSONL file of the user layout (id, text, image, label optional,
evidence_texts, evidence_images; image paths relative to the input file's folder) or an MR2
dataset_items_<split>.json, preprocessed by the training code with the export's settings and tokenizer.
Writes PRED as CSV (id, label, one probability column per class) and the same rows as JSON lines
(PRED with the extension .jsonl). Any export also takes a .npz of input arrays (named as in export.yaml)
and then writes the raw outputs to PRED as .npz. The work is done by ``paddle_models/inference.py``.
"""
import argparse
import os

from ..cli import EXIT_CODES, add_debug_flag, emit_json, print_summary, setup_logging
from ..inference import InferOptions, check_infer_options, run_inference


def parser(prog=None):
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0], epilog=EXIT_CODES)
    p.add_argument("--model-dir", required=True, help="export folder (tools/export.py --out)")
    p.add_argument("--input", required=True, help="JSONL / MR2 dataset_items JSON (multimodal) or .npz of arrays")
    p.add_argument("--out", required=True, help="predictions CSV (JSON lines beside it)")
    p.add_argument("--variant", default=InferOptions.variant, help="graph to run when the export has several")
    p.add_argument("--batch-size", type=int, default=InferOptions.batch_size)
    p.add_argument("--num-workers", type=int, default=InferOptions.num_workers, help="preprocessing worker processes")
    p.add_argument("--threads", type=int, default=InferOptions.threads, help="CPU threads (0: all cores)")
    _add_engine_flags(p)
    p.add_argument("--on-bad-image", choices=["error", "skip", "blank"], default=InferOptions.on_bad_image,
                   help="override the export's Data.on_bad_image for this input")
    p.add_argument("-o", "--override", action="append", default=[], metavar="Data.KEY=VALUE",
                   help="change a preprocessing setting for this input, e.g. -o Data.allow_empty_text=true "
                        "-o Data.max_captions=2 (text length and image size stay those of training)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print one JSON object with the results as the last line")
    add_debug_flag(p)
    return p


def _add_engine_flags(p):
    p.add_argument("--engine", choices=["auto", "paddle", "onnxruntime"], default=InferOptions.engine,
                   help="paddle: Paddle Inference on model.json; onnxruntime: the export's ONNX graph (tools/export.py "
                        "--onnx), often faster for small models on CPU. auto: onnxruntime for an export with an int8 "
                        "graph, else paddle. --onednn, --keep-buffers and --precision bf16 are Paddle Inference "
                        "settings")
    p.add_argument("--onednn", choices=["auto", "on", "off"],
                   default=os.environ.get("PADDLE_MODELS_ONEDNN", InferOptions.onednn),
                   help="oneDNN kernels: auto probes them in a subprocess first and falls back when they fail")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "int8"], default=InferOptions.precision,
                   help="bf16: oneDNN bfloat16 matmuls/convolutions on CPUs with native support; faster, not the "
                        "exported function exactly (logits within about 1e-2 relative). int8: the export's int8 graph "
                        "(tools/export.py --quantize int8) on onnxruntime. auto: int8 when the export has it, else "
                        "the export's own precision (Global.precision at export: bf16 or fp32)")
    p.add_argument("--keep-buffers", choices=["auto", "on", "off"], default=InferOptions.keep_buffers,
                   help="keep intermediate tensors allocated between batches instead of freeing each one after "
                        "its last use: faster for small models, costs their total size in memory; auto: on for "
                        "weights under 64 MiB")


def options_from(args) -> InferOptions:
    return InferOptions(model_dir=args.model_dir, input=args.input, out=args.out, variant=args.variant,
                        batch_size=args.batch_size, num_workers=args.num_workers, threads=args.threads,
                        engine=args.engine, onednn=args.onednn, precision=args.precision,
                        keep_buffers=args.keep_buffers, on_bad_image=args.on_bad_image, overrides=tuple(args.override),
                        progress=not args.no_progress)


def main(argv=None, prog=None):
    args = parser(prog).parse_args(argv)
    options = options_from(args)
    check_infer_options(options)
    setup_logging()
    result = run_inference(options)
    print_summary("infer", {k: v for k, v in result.items() if k not in ("data", "outputs")})
    if args.json:
        emit_json(result)
    return 0
