#!/usr/bin/env python
"""The faithful network end to end on the MR2 sample: tokenizer, train, eval, export, infer, serve.

    python tools/faithful_e2e.py [--data ../shared/data/mr2_sample/Weibo] [--out output/faithful_e2e] [--json]

Uses ``configs/multimodal/ernie_m_resnet101.yaml`` (ERNIE-M base + ResNet-101, 345.6M parameters, the
baseline's recipe: AdamW 1e-6, warmup + linear decay, batch 4, 2 epochs) on the one MR2 Weibo item that has
its image and evidence here (``Data.on_bad_image=skip`` drops the 713 items whose images are absent;
their captions still train the SentencePiece tokenizer). Each stage runs the real tool in a child process;
the summary gives each stage's wall time and peak RSS (from ``wait4``). The serve stage runs when
``tools/serve.py`` exists: it posts the item (images as base64) and checks the row equals infer's.
Pretrained weights are used when ``-o Arch.pretrained.ernie=...`` / ``resnet=...`` are given; otherwise the
network is randomly initialised (said loudly by the tools).
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "multimodal", "ernie_m_resnet101.yaml")
PY = sys.executable


class StageError(RuntimeError):
    pass


def run_stage(name: str, cmd, log_dir: str, env=None) -> dict:
    """Run ``cmd``; return its wall time, peak RSS (MiB) and last JSON line; raise StageError on failure."""
    log = os.path.join(log_dir, f"{name}.log")
    t0 = time.time()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.time() - t0
    if proc.returncode != 0:
        with open(log) as fh:
            tail = fh.read()[-2000:]
        raise StageError(f"stage {name} failed (exit {proc.returncode}); log {log}:\n{tail}")
    result = None
    with open(log) as fh:
        for line in reversed(fh.read().strip().splitlines()):
            if line.startswith("{"):
                try:
                    result = json.loads(line)
                    break
                except ValueError:
                    continue
    return {"seconds": round(seconds, 1), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "log": log,
            "result": result}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.path.join(os.path.dirname(ROOT), "shared", "data", "mr2_sample", "Weibo"))
    p.add_argument("--out", default="output/faithful_e2e")
    p.add_argument("--steps", type=int, default=2, help="training steps (one per epoch: one item, batch 4)")
    p.add_argument("--vocab-size", type=int, default=3000)
    p.add_argument("-o", "--override", action="append", default=[], help="extra config overrides")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    items = os.path.join(args.data, "dataset_items_val.json")
    if not os.path.isfile(items):
        print(f"error: {items}: MR2 sample not found (../shared/data/mr2_sample/Weibo)", file=sys.stderr)
        return 2
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    run, export = os.path.join(out, "run"), os.path.join(out, "export")
    data_over = [f"Data.root={args.data}", "Data.on_bad_image=skip", "Data.allow_empty_text=true",
                 "Data.files={train: dataset_items_val.json, val: dataset_items_val.json, "
                 "test: dataset_items_val.json}", f"Data.tokenizer={os.path.join(out, 'tokenizer')}"]
    common = ["-c", CONFIG] + [x for o in data_over + list(args.override) for x in ("-o", o)]
    best = os.path.join(run, "checkpoints", "best")
    stages = [
        ("tokenizer", [PY, "tools/train_tokenizer.py", "--input", items, "--out", os.path.join(out, "tokenizer"),
                       "--vocab-size", str(args.vocab_size), "--json"]),
        ("train", [PY, "tools/train.py", *common, "-o", f"Global.output_dir={run}", "-o", f"Global.epochs={args.steps}",
                   "-o", f"Global.max_steps={args.steps}", "-o", "Global.progress=false", "--json"]),
        ("eval", [PY, "tools/eval.py", *common, "-o", f"Global.output_dir={run}", "-o", f"Global.checkpoint={best}",
                  "-o", "Global.progress=false", "--split", "val", "--json"]),
        ("export", [PY, "tools/export.py", *common, "-o", f"Global.checkpoint={best}", "--out", export, "--json"]),
        ("infer", [PY, "tools/infer.py", "--model-dir", export, "--input", items, "--on-bad-image", "skip",
                   "-o", "Data.allow_empty_text=true", "--out", os.path.join(out, "predictions.csv"),
                   "--no-progress", "--json"]),
    ]
    summary = {"config": CONFIG, "data": args.data, "out": out, "stages": {}}
    t0 = time.time()
    for name, cmd in stages:
        print(f"== {name}", flush=True)
        summary["stages"][name] = run_stage(name, cmd, out)
        st = summary["stages"][name]
        print(f"   {st['seconds']} s, peak RSS {st['peak_rss_mib']} MiB", flush=True)
    ev = summary["stages"]["eval"]["result"] or {}
    ex = summary["stages"]["export"]["result"] or {}
    summary["parity_max_rel_err"] = ex.get("parity_max_rel_err")
    summary["eval_samples"] = ev.get("samples")
    with open(os.path.join(out, "predictions.jsonl"), encoding="utf-8") as fh:
        summary["infer_rows"] = [json.loads(line) for line in fh if line.strip()]
    if os.path.isfile(os.path.join(ROOT, "tools", "serve.py")):
        summary["stages"]["serve"] = serve_stage(export, args.data, items, summary["infer_rows"], out)
    summary["seconds"] = round(time.time() - t0, 1)
    print(json.dumps({k: v for k, v in summary.items() if k != "infer_rows"}, indent=1) if not args.json else "")
    if args.json:
        print(json.dumps(summary))
    return 0


def serve_stage(export: str, data_root: str, items: str, infer_rows, out: str) -> dict:
    """Start tools/serve.py on the export, post the item with its images as base64, compare with infer."""
    import base64
    import socket
    import urllib.request

    from paddle_models.multimodal.dataset import build_dataset

    t0 = time.time()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(os.path.join(out, "serve.log"), "w")
    proc = subprocess.Popen([PY, "tools/serve.py", "--model-dir", export, "--port", str(port)], stdout=log,
                            stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(1200):
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            raise StageError("the server did not become ready")
        ready_s = time.time() - t0
        data = {"format": "mr2", "root": data_root, "files": {"val": os.path.basename(items)},
                "on_bad_image": "skip", "allow_empty_text": True}
        ds = build_dataset(data, "val", True, True)  # images on: the items without their image are skipped
        records = []
        for k, r in enumerate(ds.records):
            # the evidence texts and image files exactly as the training dataset lists them for this item
            captions, ev_rel = ds._mr2_evidence(k, r, count=False)
            enc = lambda rel: base64.b64encode(open(os.path.join(data_root, rel), "rb").read()).decode()  # noqa: E731
            records.append({"id": r.id, "text": r.text, "image_b64": enc(r.image), "evidence_texts": captions,
                            "evidence_images_b64": [enc(e) for e in ev_rel]})
        body = json.dumps({"records": records}).encode()
        t1 = time.time()
        req = urllib.request.Request(url + "/v1/predict", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=600) as r:
            rows = json.loads(r.read())["predictions"]
        request_s = time.time() - t1
        same = [{k: row[k] for k in ("id", "label", "label_name")} for row in rows] == \
               [{k: row[k] for k in ("id", "label", "label_name")} for row in infer_rows]
        max_diff = max(abs(a["probabilities"][n] - b["probabilities"][n]) for a, b in zip(rows, infer_rows)
                       for n in a["probabilities"])
        if not same or max_diff > 1e-5:
            raise StageError(f"server rows differ from infer's: {rows} vs {infer_rows}")
        return {"seconds": round(time.time() - t0, 1), "ready_seconds": round(ready_s, 1),
                "request_seconds": round(request_s, 2), "rows_equal_infer": True, "max_prob_diff": max_diff}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


if __name__ == "__main__":
    sys.exit(main())
