"""The faithful network end to end on the MR2 sample: tokenizer, train, eval, export, infer, serve.

    summary = run_faithful_e2e(data_root, out_dir, steps=2, vocab_size=3000, overrides=[])

Uses ``configs/multimodal/ernie_m_resnet101.yaml`` (ERNIE-M base + ResNet-101, the baseline's recipe) on
the MR2 items of ``dataset_items_val.json`` that have their image (``Data.on_bad_image=skip``; the other
items' captions still train the SentencePiece tokenizer). Each stage runs the real tool of the checkout's
``tools/`` folder in a child process, from the checkout's root; the summary gives each stage's wall time,
peak RSS (from ``wait4``) and last JSON line. The serve stage runs when ``tools/serve.py`` exists: it
posts the items (images as base64) and checks the rows equal infer's.
"""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "multimodal", "ernie_m_resnet101.yaml")
DEFAULT_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data", "mr2_sample", "Weibo")
ITEMS_FILE = "dataset_items_val.json"
PY = sys.executable


class StageError(RuntimeError):
    """A stage's tool failed, or its result is not what the next stage needs."""


def last_json_line(text: str):
    """The last line of ``text`` that parses as a JSON object (a tool's ``--json`` result), or None."""
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def run_stage(name: str, cmd, log_dir: str, env=None) -> dict:
    """Run ``cmd``; return its wall time, peak RSS (MiB) and last JSON line; raise StageError on failure."""
    log = os.path.join(log_dir, f"{name}.log")
    t0 = time.time()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.time() - t0
    with open(log) as fh:
        text = fh.read()
    if proc.returncode != 0:
        raise StageError(f"stage {name} failed (exit {proc.returncode}); log {log}:\n{text[-2000:]}")
    return {"seconds": round(seconds, 1), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "log": log,
            "result": last_json_line(text)}


def faithful_stages(data_root: str, out: str, steps: int, vocab_size: int, overrides) -> list:
    """[(name, command)] of the stages in order: tokenizer, train, eval, export, infer."""
    items = os.path.join(data_root, ITEMS_FILE)
    run, export = os.path.join(out, "run"), os.path.join(out, "export")
    best = os.path.join(run, "checkpoints", "best")
    data_over = [f"Data.root={data_root}", "Data.on_bad_image=skip", "Data.allow_empty_text=true",
                 f"Data.files={{train: {ITEMS_FILE}, val: {ITEMS_FILE}, test: {ITEMS_FILE}}}",
                 f"Data.tokenizer={os.path.join(out, 'tokenizer')}"]
    common = ["-c", CONFIG] + [x for o in data_over + list(overrides) for x in ("-o", o)]
    return [
        ("tokenizer", [PY, "tools/train_tokenizer.py", "--input", items, "--out", os.path.join(out, "tokenizer"),
                       "--vocab-size", str(vocab_size), "--json"]),
        ("train", [PY, "tools/train.py", *common, "-o", f"Global.output_dir={run}", "-o", f"Global.epochs={steps}",
                   "-o", f"Global.max_steps={steps}", "-o", "Global.progress=false", "--json"]),
        ("eval", [PY, "tools/eval.py", *common, "-o", f"Global.output_dir={run}", "-o", f"Global.checkpoint={best}",
                  "-o", "Global.progress=false", "--split", "val", "--json"]),
        ("export", [PY, "tools/export.py", *common, "-o", f"Global.checkpoint={best}", "--out", export, "--json"]),
        ("infer", [PY, "tools/infer.py", "--model-dir", export, "--input", items, "--on-bad-image", "skip",
                   "-o", "Data.allow_empty_text=true", "--out", os.path.join(out, "predictions.csv"),
                   "--no-progress", "--json"]),
    ]


def run_faithful_e2e(data_root: str, out: str, steps: int = 2, vocab_size: int = 3000, overrides=()) -> dict:
    """Every stage in order (each one's time and peak RSS printed as it ends), then the serve stage when
    ``tools/serve.py`` exists; the summary (config, stages, parity error, eval samples, infer's rows)."""
    out = os.path.abspath(out)
    os.makedirs(out, exist_ok=True)
    summary = {"config": CONFIG, "data": data_root, "out": out, "stages": {}}
    t0 = time.time()
    for name, cmd in faithful_stages(data_root, out, steps, vocab_size, overrides):
        print(f"== {name}", flush=True)
        stage = summary["stages"][name] = run_stage(name, cmd, out)
        print(f"   {stage['seconds']} s, peak RSS {stage['peak_rss_mib']} MiB", flush=True)
    summary["parity_max_rel_err"] = (summary["stages"]["export"]["result"] or {}).get("parity_max_rel_err")
    summary["eval_samples"] = (summary["stages"]["eval"]["result"] or {}).get("samples")
    with open(os.path.join(out, "predictions.jsonl"), encoding="utf-8") as fh:
        summary["infer_rows"] = [json.loads(line) for line in fh if line.strip()]
    if os.path.isfile(os.path.join(ROOT, "tools", "serve.py")):
        summary["stages"]["serve"] = serve_stage(os.path.join(out, "export"), data_root,
                                                 os.path.join(data_root, ITEMS_FILE), summary["infer_rows"], out)
    summary["seconds"] = round(time.time() - t0, 1)
    return summary


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str) -> None:
    """Poll ``url``/readyz until it answers 200 (10 minutes at most)."""
    import urllib.request

    for _ in range(1200):
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise StageError("the server did not become ready")


def request_records(data_root: str, items: str) -> list:
    """The items of ``items`` that have their image, as request records: the text, the image and the evidence
    texts and images (base64) exactly as the training dataset lists them for each item."""
    from .dataset import build_dataset

    data = {"format": "mr2", "root": data_root, "files": {"val": os.path.basename(items)},
            "on_bad_image": "skip", "allow_empty_text": True}
    dataset = build_dataset(data, "val", True, True)  # images on: the items without their image are skipped

    def encoded(rel):
        with open(os.path.join(data_root, rel), "rb") as fh:
            return base64.b64encode(fh.read()).decode()

    records = []
    for k, item in enumerate(dataset.records):
        captions, evidence_files = dataset._mr2_evidence(k, item, count=False)
        records.append({"id": item.id, "text": item.text, "image_b64": encoded(item.image), "evidence_texts": captions,
                        "evidence_images_b64": [encoded(e) for e in evidence_files]})
    return records


def _post_predict(url: str, records: list) -> list:
    import urllib.request

    body = json.dumps({"records": records}).encode()
    req = urllib.request.Request(url + "/v1/predict", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())["predictions"]


def _compare_rows(rows: list, infer_rows: list) -> float:
    """The largest probability difference of the server's rows from infer's; StageError when their ids or
    labels differ, or a probability by more than 1e-5."""
    keys = ("id", "label", "label_name")
    same = [{k: row[k] for k in keys} for row in rows] == [{k: row[k] for k in keys} for row in infer_rows]
    max_diff = max(abs(a["probabilities"][n] - b["probabilities"][n])
                   for a, b in zip(rows, infer_rows, strict=False) for n in a["probabilities"])
    if not same or max_diff > 1e-5:
        raise StageError(f"server rows differ from infer's: {rows} vs {infer_rows}")
    return max_diff


def serve_stage(export: str, data_root: str, items: str, infer_rows, out: str) -> dict:
    """Start tools/serve.py on the export, post the items with their images as base64, compare with infer."""
    t0 = time.time()
    port = _free_port()
    with open(os.path.join(out, "serve.log"), "w") as log:
        proc = subprocess.Popen([PY, "tools/serve.py", "--model-dir", export, "--port", str(port)], stdout=log,
                                stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_ready(url)
            ready_s = time.time() - t0
            records = request_records(data_root, items)
            t1 = time.time()
            rows = _post_predict(url, records)
            request_s = time.time() - t1
            max_diff = _compare_rows(rows, infer_rows)
            return {"seconds": round(time.time() - t0, 1), "ready_seconds": round(ready_s, 1),
                    "request_seconds": round(request_s, 2), "rows_equal_infer": True, "max_prob_diff": max_diff}
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
