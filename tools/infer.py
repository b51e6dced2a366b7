#!/usr/bin/env python
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
and then writes the raw outputs to PRED as .npz.
"""
import argparse
import json
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
os.environ.setdefault("GLOG_minloglevel", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddle_models.cli import add_debug_flag, emit_json, print_summary, run_tool, setup_logging  # noqa: E402
from paddle_models.safecsv import SafeCsvWriter  # noqa: E402


def paths_for(out: str):
    """(csv path, jsonl path): PRED itself and PRED with the extension .jsonl (or .csv when PRED is .jsonl)."""
    stem, ext = os.path.splitext(out)
    if ext.lower() == ".jsonl":
        return stem + ".csv", out
    return out, stem + ".jsonl"


def write_predictions(out: str, rows, label_names, true_labels=None):
    """CSV (id, label, one probability column per class; cells a spreadsheet would run as formulas get a
    leading ') and JSON lines (the task's rows, raw) of the predictions."""
    csv_path, jsonl_path = paths_for(out)
    os.makedirs(os.path.dirname(os.path.abspath(csv_path)), exist_ok=True)
    with open(csv_path + ".tmp", "w", newline="", encoding="utf-8") as f:
        w = SafeCsvWriter(f)
        w.writerow(["id", "label"] + [f"p_{n}" for n in label_names])
        for row in rows:
            w.writerow([row["id"], row["label"]] + [f"{row['probabilities'][n]:.6f}" for n in label_names])
    os.replace(csv_path + ".tmp", csv_path)
    with open(jsonl_path + ".tmp", "w", encoding="utf-8") as f:
        for k, row in enumerate(rows):
            if true_labels is not None and true_labels[k] >= 0:
                row = {**row, "true_label": int(true_labels[k])}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(jsonl_path + ".tmp", jsonl_path)
    return csv_path, jsonl_path


def check_outputs(out: str, input_file: str) -> None:
    """Refuse, before any work, an ``--out`` whose files cannot be written: PRED (or the file beside it) is
    an existing folder, or its parent is a file."""
    if input_file.lower().endswith(".npz"):
        targets = [out if out.endswith(".npz") else os.path.splitext(out)[0] + ".npz"]
    else:
        targets = list(paths_for(out))
    for t in targets:
        if os.path.isdir(t):
            raise ValueError(f"--out {out}: {t} is a folder; give a file path such as {os.path.join(t, 'pred.csv')}")
        parent = os.path.dirname(os.path.abspath(t))
        while parent and not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if parent and not os.path.isdir(parent):
            raise ValueError(f"--out {out}: {parent} is a file, not a folder")
        if not os.access(parent, os.W_OK):
            raise ValueError(f"--out {out}: cannot write into {parent} (permission denied)")


def data_overrides(items):
    """``-o Data.key=value`` -> {key: value} (values parsed as YAML, as the other tools do)."""
    from paddle_models.config import parse_override

    out = {}
    for text in items:
        keys, value = parse_override(text)
        if len(keys) != 2 or keys[0] != "Data":
            raise ValueError(f"-o {text}: tools/infer.py takes only Data.<key>=<value> (the preprocessing settings "
                             f"of export.yaml)")
        out[keys[1]] = value
    return out


def infer_raw(pred, args):
    import numpy as np

    from paddle_models.engine.loader import Loader
    from paddle_models.cli import task_for_export

    t0 = time.time()
    task = task_for_export(pred.model_dir, pred.meta)
    ds, collate = task.read_inputs(args.input, on_bad_image=args.on_bad_image,
                                   data_overrides=data_overrides(args.override))
    setup_s = time.time() - t0
    loader = Loader(ds, collate, args.batch_size, args.num_workers)
    rows, labels = [], []
    t_model = 0.0
    t_wait = time.time()
    t_pre = 0.0
    bar = None
    if not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=len(ds), desc="infer", unit="item", dynamic_ncols=True, leave=False)
    for batch in loader.batches(np.arange(len(ds))):
        t1 = time.time()
        t_pre += t1 - t_wait
        out = pred.run({k: batch[k] for k in pred.input_names})
        t_wait = time.time()
        t_model += t_wait - t1
        rows.extend(task.prediction_rows(out, batch))
        labels.append(batch["label"])
        if bar is not None:
            bar.update(len(batch["id"]))
    if bar is not None:
        bar.close()
    labels = np.concatenate(labels)
    names = list(rows[0]["probabilities"]) if rows else list(pred.meta.get("labels") or [])
    csv_path, jsonl_path = write_predictions(args.out, rows, names, labels)
    total = time.time() - t0
    n = len(rows)
    result = {"input": os.path.abspath(args.input), "items": n, "predictions_csv": os.path.abspath(csv_path),
              "predictions_jsonl": os.path.abspath(jsonl_path), "batch_size": args.batch_size,
              "seconds": round(total, 3), "setup_seconds": round(setup_s, 3),
              "preprocess_seconds": round(t_pre, 3), "model_seconds": round(t_model, 3),
              # throughput of the stream: reading + preprocessing + the model (setup excluded)
              "items_per_s": round(n / max(t_pre + t_model, 1e-9), 2),
              "model_items_per_s": round(n / max(t_model, 1e-9), 2)}
    known = labels >= 0
    if known.any():
        from paddle_models import metrics

        predicted = np.array([row["label"] for row in rows])
        rep = metrics.classification_report(labels[known], predicted[known], len(names), names)
        result.update({"labelled": int(known.sum()), "accuracy": rep["accuracy"], "macro_f1": rep["macro_f1"]})
    if hasattr(ds, "summary"):
        result["data"] = ds.summary()
    return result


def infer_arrays(pred, args):
    from paddle_models.engine.artifact import load_npz, save_npz

    arrays = load_npz(args.input)
    t0 = time.time()
    outs = pred.run(arrays)
    dt = time.time() - t0
    out = args.out if args.out.endswith(".npz") else os.path.splitext(args.out)[0] + ".npz"
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    save_npz(out, outs)
    n = int(next(iter(arrays.values())).shape[0]) if arrays else 0
    return {"input": os.path.abspath(args.input), "items": n, "outputs_npz": os.path.abspath(out),
            "outputs": {k: list(v.shape) for k, v in outs.items()}, "model_seconds": round(dt, 4),
            "model_items_per_s": round(n / max(dt, 1e-9), 2)}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--model-dir", required=True, help="export folder (tools/export.py --out)")
    p.add_argument("--input", required=True, help="JSONL / MR2 dataset_items JSON (multimodal) or .npz of arrays")
    p.add_argument("--out", required=True, help="predictions CSV (JSON lines beside it)")
    p.add_argument("--variant", default=None, help="graph to run when the export has several")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--num-workers", type=int, default=0, help="preprocessing worker processes")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: all cores)")
    p.add_argument("--engine", choices=["auto", "paddle", "onnxruntime"], default="auto",
                   help="paddle: Paddle Inference on model.json; onnxruntime: the export's ONNX graph (tools/export.py "
                        "--onnx), often faster for small models on CPU. auto: onnxruntime for an export with an int8 "
                        "graph, else paddle. --onednn, --keep-buffers and --precision bf16 are Paddle Inference "
                        "settings")
    p.add_argument("--onednn", choices=["auto", "on", "off"], default=os.environ.get("PADDLE_MODELS_ONEDNN", "auto"),
                   help="oneDNN kernels: auto probes them in a subprocess first and falls back when they fail")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "int8"], default="auto",
                   help="bf16: oneDNN bfloat16 matmuls/convolutions on CPUs with native support; faster, not the "
                        "exported function exactly (logits within about 1e-2 relative). int8: the export's int8 graph "
                        "(tools/export.py --quantize int8) on onnxruntime. auto: int8 when the export has it, else "
                        "the export's own precision (Global.precision at export: bf16 or fp32)")
    p.add_argument("--keep-buffers", choices=["auto", "on", "off"], default="auto",
                   help="keep intermediate tensors allocated between batches instead of freeing each one after "
                        "its last use: faster for small models, costs their total size in memory; auto: on for "
                        "weights under 64 MiB")
    p.add_argument("--on-bad-image", choices=["error", "skip", "blank"], default=None,
                   help="override the export's Data.on_bad_image for this input")
    p.add_argument("-o", "--override", action="append", default=[], metavar="Data.KEY=VALUE",
                   help="change a preprocessing setting for this input, e.g. -o Data.allow_empty_text=true "
                        "-o Data.max_captions=2 (text length and image size stay those of training)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print one JSON object with the results as the last line")
    add_debug_flag(p)
    args = p.parse_args()
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    check_outputs(args.out, args.input)
    setup_logging()
    from paddle_models.engine.predictor import open_predictor

    t = time.time()
    if args.engine == "onnxruntime" and args.precision == "bf16":
        raise ValueError(f"--precision {args.precision} is a Paddle Inference setting; onnxruntime runs the "
                         f"exported fp32 graph or its int8 graph")
    pred = open_predictor(args.model_dir, variant=args.variant, threads=args.threads, engine=args.engine,
                          precision=args.precision, onednn=args.onednn, keep_buffers=args.keep_buffers)
    load_s = time.time() - t
    if args.input.lower().endswith(".npz"):
        result = infer_arrays(pred, args)
    else:
        result = infer_raw(pred, args)
    result.update({"engine": pred.engine, "model_dir": pred.model_dir, "variant": pred.variant,
                   "threads": pred.threads, "onednn": pred.onednn, "precision": pred.precision,
                   "keep_buffers": pred.keep_buffers, "kept_bytes": pred.kept_bytes, "load_seconds": round(load_s, 3)})
    if pred.onednn_note:
        result["onednn_note"] = pred.onednn_note
    print_summary("infer", {k: v for k, v in result.items() if k not in ("data", "outputs")})
    if args.json:
        emit_json(result)
    return 0


if __name__ == "__main__":
    run_tool(main)
