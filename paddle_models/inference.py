"""Inference on raw input with an export folder: what ``tools/infer.py`` runs.

    options = InferOptions(model_dir="OUT/export", input="data/test.jsonl", out="OUT/pred.csv")
    check_infer_options(options)          # before any work: bad flags, an --out that cannot be written
    result = run_inference(options)       # predictions written, result facts (counts, timings, metrics)

A raw file (a JSONL of the multimodal layout, an MR2 ``dataset_items_<split>.json``, ...) is read by the
family's serving task (:func:`task_for_export`) with the export's preprocessing settings, run through the
predictor in batches and written as the predictions CSV + JSON lines (:mod:`paddle_models.predictions`).
A ``.npz`` of input arrays (named as in export.yaml) runs as it is and its raw outputs go to a ``.npz``.
"""
from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

from .predictions import csv_and_jsonl_paths, write_prediction_rows


@dataclass
class InferOptions:
    """What to run and how (``tools/infer.py``'s flags; see its ``--help`` for each)."""
    model_dir: str                   # export folder
    input: str                       # raw file, or .npz of input arrays
    out: str                         # predictions CSV (JSON lines beside it), or .npz for array input
    variant: str | None = None        # graph to run when the export has several
    batch_size: int = 8
    num_workers: int = 0             # preprocessing worker processes
    threads: int = 0                 # CPU threads (0: all cores)
    engine: str = "auto"             # auto | paddle | onnxruntime
    onednn: str = "auto"             # auto | on | off
    precision: str = "auto"          # auto | fp32 | bf16 | int8
    keep_buffers: str = "auto"       # auto | on | off
    on_bad_image: str | None = None  # overrides the export's Data.on_bad_image
    overrides: Sequence[str] = ()    # "Data.key=value" texts: preprocessing settings for this input
    progress: bool = True            # a progress bar over the items


def task_for_export(model_dir: str, meta: dict | None = None):
    """The family's task serving the export folder ``model_dir`` (``Task.for_export`` with the folder's
    export.yaml and config.yaml): its ``read_inputs``, ``prepare_items`` and ``prediction_rows``."""
    from .config import load_config
    from .engine.artifact import CONFIG_FILE, export_path, read_export_meta
    from .registry import get_task

    meta = meta if meta is not None else read_export_meta(model_dir)
    family = meta.get("family")
    if not family:
        raise ValueError(f"{model_dir}: export.yaml names no family")
    cfg = load_config(export_path(model_dir, "config", meta.get("config") or CONFIG_FILE), saved=True)
    return get_task(family).for_export(model_dir, meta, cfg)


def is_array_input(input_file: str) -> bool:
    return input_file.lower().endswith(".npz")


def npz_output_path(out: str) -> str:
    """Where the outputs of an array input go: ``out`` when it is a .npz, else ``out`` with that extension."""
    return out if out.endswith(".npz") else os.path.splitext(out)[0] + ".npz"


def check_outputs(out: str, input_file: str) -> None:
    """Refuse, before any work, an ``--out`` whose files cannot be written: PRED (or the file beside it) is
    an existing folder, or its parent is a file."""
    targets = [npz_output_path(out)] if is_array_input(input_file) else list(csv_and_jsonl_paths(out))
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


def check_infer_options(options: InferOptions) -> None:
    """The errors :func:`run_inference` would meet late, raised before any work (named as the flags)."""
    if options.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {options.batch_size}")
    check_outputs(options.out, options.input)
    if options.engine == "onnxruntime" and options.precision == "bf16":
        raise ValueError(f"--precision {options.precision} is a Paddle Inference setting; onnxruntime runs the "
                         f"exported fp32 graph or its int8 graph")


def data_overrides(items: Sequence[str]) -> dict:
    """``-o Data.key=value`` -> {key: value} (values parsed as YAML, as the other tools do)."""
    from .config import parse_override

    out = {}
    for text in items:
        keys, value = parse_override(text)
        if len(keys) != 2 or keys[0] != "Data":
            raise ValueError(f"-o {text}: tools/infer.py takes only Data.<key>=<value> (the preprocessing settings "
                             f"of export.yaml)")
        out[keys[1]] = value
    return out


def run_inference(options: InferOptions) -> dict:
    """Open the export's predictor, run the input (raw file or arrays), write the outputs; the result facts
    (input, items, paths, timings, the predictor's engine and settings, metrics when the input is labelled)."""
    from .engine.predictor import open_predictor

    t0 = time.time()
    predictor = open_predictor(options.model_dir, variant=options.variant, threads=options.threads,
                               engine=options.engine, precision=options.precision, onednn=options.onednn,
                               keep_buffers=options.keep_buffers)
    load_s = time.time() - t0
    if is_array_input(options.input):
        result = infer_arrays(predictor, options.input, options.out)
    else:
        result = infer_raw(predictor, options)
    result.update({"engine": predictor.engine, "model_dir": predictor.model_dir, "variant": predictor.variant,
                   "threads": predictor.threads, "onednn": predictor.onednn, "precision": predictor.precision,
                   "keep_buffers": predictor.keep_buffers, "kept_bytes": predictor.kept_bytes,
                   "load_seconds": round(load_s, 3)})
    if predictor.onednn_note:
        result["onednn_note"] = predictor.onednn_note
    return result


@dataclass
class _StreamTimes:
    """Where the time of a prediction stream goes: reading + preprocessing (waiting on the loader) and the model."""
    preprocess: float = 0.0
    model: float = 0.0


def _predict_stream(predictor, task, dataset, collate, options: InferOptions, times: _StreamTimes):
    """Rows and true labels (-1: unknown) of every item of ``dataset``, batch by batch through ``predictor``."""
    import numpy as np

    from .engine.loader import Loader
    from .engine.signals import restore_handlers

    restore_handlers()  # the imports of loading (paddle, paddlenlp) may have replaced SIGTERM's handler
    loader = Loader(dataset, collate, options.batch_size, options.num_workers)
    rows, labels = [], []
    bar = None
    if options.progress:
        from tqdm import tqdm

        bar = tqdm(total=len(dataset), desc="infer", unit="item", dynamic_ncols=True, leave=False)
    t_wait = time.time()
    for batch in loader.batches(np.arange(len(dataset))):
        t1 = time.time()
        times.preprocess += t1 - t_wait
        out = predictor.run({k: batch[k] for k in predictor.input_names})
        t_wait = time.time()
        times.model += t_wait - t1
        rows.extend(task.prediction_rows(out, batch))
        labels.append(batch["label"])
        if bar is not None:
            bar.update(len(batch["id"]))
    if bar is not None:
        bar.close()
    return rows, np.concatenate(labels)


def _labelled_metrics(rows, labels, names) -> dict:
    """Accuracy and macro F1 over the items whose true label is known (none: {})."""
    import numpy as np

    known = labels >= 0
    if not known.any():
        return {}
    from . import metrics

    predicted = np.array([row["label"] for row in rows])
    report = metrics.classification_report(labels[known], predicted[known], len(names), names)
    return {"labelled": int(known.sum()), "accuracy": report["accuracy"], "macro_f1": report["macro_f1"]}


def infer_raw(predictor, options: InferOptions) -> dict:
    """A raw input file -> the predictions CSV + JSON lines; the result facts (counts, paths, timings)."""
    t0 = time.time()
    task = task_for_export(predictor.model_dir, predictor.meta)
    dataset, collate = task.read_inputs(options.input, on_bad_image=options.on_bad_image,
                                        data_overrides=data_overrides(options.overrides))
    setup_s = time.time() - t0
    times = _StreamTimes()
    rows, labels = _predict_stream(predictor, task, dataset, collate, options, times)
    names = list(rows[0]["probabilities"]) if rows else list(predictor.meta.get("labels") or [])
    csv_path, jsonl_path = write_prediction_rows(options.out, rows, names, labels)
    n = len(rows)
    result = {"input": os.path.abspath(options.input), "items": n, "predictions_csv": os.path.abspath(csv_path),
              "predictions_jsonl": os.path.abspath(jsonl_path), "batch_size": options.batch_size,
              "seconds": round(time.time() - t0, 3), "setup_seconds": round(setup_s, 3),
              "preprocess_seconds": round(times.preprocess, 3), "model_seconds": round(times.model, 3),
              # throughput of the stream: reading + preprocessing + the model (setup excluded)
              "items_per_s": round(n / max(times.preprocess + times.model, 1e-9), 2),
              "model_items_per_s": round(n / max(times.model, 1e-9), 2)}
    result.update(_labelled_metrics(rows, labels, names))
    if hasattr(dataset, "summary"):
        result["data"] = dataset.summary()
    return result


def infer_arrays(predictor, input_file: str, out: str) -> dict:
    """A .npz of input arrays -> the raw outputs as a .npz (:func:`npz_output_path` of ``out``); the facts."""
    from .engine.artifact import load_npz, save_npz
    from .engine.signals import restore_handlers

    restore_handlers()  # the imports of loading (paddle) may have replaced SIGTERM's handler
    arrays = load_npz(input_file)
    t0 = time.time()
    outs = predictor.run(arrays)
    dt = time.time() - t0
    path = npz_output_path(out)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_npz(path, outs)
    n = int(next(iter(arrays.values())).shape[0]) if arrays else 0
    return {"input": os.path.abspath(input_file), "items": n, "outputs_npz": os.path.abspath(path),
            "outputs": {k: list(v.shape) for k, v in outs.items()}, "model_seconds": round(dt, 4),
            "model_items_per_s": round(n / max(dt, 1e-9), 2)}
