#!/usr/bin/env python
"""Load test of tools/serve.py on loopback: requests/s and latency percentiles, overload and soak.

    python benchmarks/serve_load.py [--quick] [--mm-export DIR [--mm-int8-export DIR]] [--rec-export DIR] [--json]

Without export folders it builds them in a temporary folder (the multimodal demo preset trained a few
steps and its int8 export, a small DeepFM on synthetic rows). For each export (``demo_int8``: the int8 graph
served as tools/serve.py picks it, on onnxruntime; ``demo_onnx``, opt-in: the same folder's fp32 ONNX
graph), with dynamic batching (``--max-batch 32``) and without (``--max-batch 1``): one record per request
at concurrency 1, 8, 32, 128 (closed loop, bounded by
``--requests`` per level). Then, on the batching multimodal server: an overload phase (open loop at about
4x the measured capacity for ``--overload-s`` seconds, every request with a 60 s client timeout) and a soak
of ``--soak`` requests at concurrency 32 with the server's RSS sampled before and after. Checks: every
request answered exactly once with its own id, no 5xx other than 503/504, ``/readyz`` 200 after the
overload. Prints the CPU model (lscpu) with the table. Servers bind to 127.0.0.1 only.
"""
import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
ENV = {**os.environ, "GLOG_minloglevel": "2", "PYTHONPATH": ROOT}  # taken before paddle_models tunes the CPU

from paddle_models.runtime import cpu_name  # noqa: E402


# ---- exports ----------------------------------------------------------------------------------------------
def build_mm_export(root: str, int8: bool = True) -> tuple:
    """(fp32 export, int8 export or None) of the demo preset trained a few steps. The int8 export (onnx-static,
    calibrated on the training split) is served to measure int8; its agreement gate is recorded, not enforced
    (``min_agreement`` 0): a model trained 4 steps has many items near its decision boundary."""
    from paddle_models.config import load_config
    from paddle_models.engine.export import export_model
    from paddle_models.engine.trainer import Trainer
    from paddle_models.multimodal.demo_data import make_demo_data
    from paddle_models.registry import get_task

    cfg_path = os.path.join(ROOT, "configs", "multimodal", "jsonl_small.yaml")
    make_demo_data(os.path.join(root, "data"), 96, 24, 64, seed=7)
    over = [f"Data.root={root}/data", f"Global.output_dir={root}/run", "Global.max_steps=4", "Global.progress=false",
            "Global.batch_size=16", "Global.eval_batch_size=32"]
    cfg = load_config(cfg_path, over)
    res = Trainer(cfg, get_task("multimodal")(cfg)).fit()
    cfg = load_config(cfg_path, over + [f"Global.checkpoint={res['best_checkpoint']}"])
    export_model(cfg, os.path.join(root, "export"), onnx=False, threads=1, check_onednn=False)
    q = None
    if int8:
        q = os.path.join(root, "export_int8")
        export_model(cfg, q, threads=1, check_onednn=False,
                     quantize={"calibration_items": 64, "agreement_items": 1000, "min_agreement": 0.0})
    return os.path.join(root, "export"), q


def build_rec_export(root: str) -> str:
    import paddle

    from paddle_models.config import load_config
    from paddle_models.engine.export import export_model
    from paddle_models.registry import get_task, model_entry

    data = {k: dict(v) if isinstance(v, dict) else v for k, v in model_entry("deepfm")["small_config"].items()}
    data.setdefault("Arch", {})["name"] = "deepfm"
    data.setdefault("Global", {})["output_dir"] = os.path.join(root, "rec_run")
    cfg = load_config(data=data)
    task = get_task("rec")(cfg)
    paddle.seed(1)
    model = task.build_model()
    model.eval()
    export_model(cfg, os.path.join(root, "rec_export"), task=task, model=model, onnx=False, threads=1,
                 check_onednn=False)
    return os.path.join(root, "rec_export")


def mm_records(export_dir: str) -> list:
    import base64

    meta_root = None
    with open(os.path.join(export_dir, "config.yaml")) as f:
        import yaml

        meta_root = yaml.safe_load(f)["Data"]["root"]
    path = os.path.join(meta_root, "test.jsonl")
    out = []
    for line in open(path):
        r = json.loads(line)
        enc = lambda p: base64.b64encode(open(os.path.join(meta_root, p), "rb").read()).decode()  # noqa: E731
        out.append({"text": r["text"], "evidence_texts": r.get("evidence_texts", []), "image_b64": enc(r["image"]),
                    "evidence_images_b64": [enc(p) for p in r.get("evidence_images", [])]})
    return out


def rec_records(export_dir: str) -> list:
    from paddle_models.config import load_config
    from paddle_models.rec.synthetic import synthetic_ctr_table

    cfg = load_config(os.path.join(export_dir, "config.yaml"))
    t = synthetic_ctr_table(cfg["Data"]["synthetic"])
    out = []
    for i in range(min(256, len(t))):
        r = {}
        for c, col in t.columns.items():
            v = col[i]
            r[c] = [int(x) for x in v if x >= 0] if col.ndim == 2 else v.item()
        out.append(r)
    return out


# ---- a server ---------------------------------------------------------------------------------------------
class Server:
    def __init__(self, model_dir: str, *args):
        cmd = [sys.executable, os.path.join(ROOT, "tools", "serve.py"), "--model-dir", model_dir, "--host",
               "127.0.0.1", "--port", "0", *map(str, args)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV)
        deadline = time.time() + 180
        self.url = None
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if line.startswith("serving on "):
                self.url = line.split()[-1]
                break
        if not self.url:
            self.proc.kill()
            raise RuntimeError(f"server did not start: {' '.join(cmd)}")

    def rss_mb(self) -> float:
        """Resident memory of the server and its child processes, MiB."""
        pids = [self.proc.pid]
        try:
            out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
            pids += [int(x) for x in out.split()]
        except OSError:
            pass
        total = 0
        for pid in pids:
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1])
            except OSError:
                pass
        return total / 1024

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return -9


# ---- load -------------------------------------------------------------------------------------------------
class Tally:
    def __init__(self):
        self.lat, self.status, self.ids_sent, self.ids_back, self.errors = [], {}, [], [], []

    def add(self, status, dt, sent, got):
        self.status[status] = self.status.get(status, 0) + 1
        if status == 200:
            self.lat.append(dt)
        self.ids_sent.append(sent)
        if got is not None:
            self.ids_back.append(got)

    def summary(self, seconds: float) -> dict:
        lat = np.array(self.lat) * 1000 if self.lat else np.zeros(1)
        ok = self.status.get(200, 0)
        return {"requests": len(self.ids_sent), "ok": ok, "rps": round(ok / max(seconds, 1e-9), 1),
                "p50_ms": round(float(np.percentile(lat, 50)), 1), "p95_ms": round(float(np.percentile(lat, 95)), 1),
                "p99_ms": round(float(np.percentile(lat, 99)), 1),
                "status": {str(k): v for k, v in sorted(self.status.items(), key=lambda kv: str(kv[0]))}}

    def check(self) -> list:
        """Problems: a 5xx other than 503/504, a transport error, an id answered twice or with another's id."""
        bad = [f"{v} x status {k}" for k, v in self.status.items() if k not in (200, 503, 504)]
        if len(set(self.ids_back)) != len(self.ids_back):
            bad.append("an id answered twice")
        if not set(self.ids_back) <= set(self.ids_sent):
            bad.append("an answer carried an id never sent")
        return bad + self.errors[:3]


class RawPool:
    """A small HTTP/1.1 keep-alive client over asyncio streams: each request is one write of a prebuilt
    message, the answer is read by its Content-Length. Much cheaper per request than a general client, so
    the 2 cores measure the server rather than the client. At most ``max_conns`` connections."""

    def __init__(self, url: str, max_conns: int):
        host_port = url.split("//", 1)[1].rstrip("/")
        self.host, port = host_port.rsplit(":", 1)
        self.port = int(port)
        self.idle: list = []
        self.sem = asyncio.Semaphore(max_conns)

    async def _roundtrip(self, conn, body: bytes):
        reader, writer = conn
        writer.write(b"POST /v1/predict HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % (self.host.encode(), len(body)) + body)
        await writer.drain()
        status = int((await reader.readline()).split()[1])
        length, keep = 0, True
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                keep = False
        data = await reader.readexactly(length) if length else b""
        return status, data, keep

    async def post(self, body: bytes, timeout: float):
        async with self.sem:
            conn = self.idle.pop() if self.idle else await asyncio.open_connection(self.host, self.port)
            try:
                status, data, keep = await asyncio.wait_for(self._roundtrip(conn, body), timeout)
            except BaseException:
                conn[1].close()
                raise
            if keep:
                self.idle.append(conn)
            else:
                conn[1].close()
            return status, data

    def close(self):
        for _, w in self.idle:
            w.close()
        self.idle = []


def request_body(rec_json_tail: str, rid: str) -> bytes:
    """``{"records": [{"id": rid, ...rec}]}`` from the record's JSON without its opening brace."""
    return ('{"records": [{"id": ' + json.dumps(rid) + (", " + rec_json_tail if rec_json_tail != "}" else "}")
            + "]}").encode()


def json_tails(records: list) -> list:
    return [json.dumps(r)[1:] for r in records]


async def one(pool, tail, rid, tally, timeout=10.0):
    t = time.perf_counter()
    try:
        status, data = await pool.post(request_body(tail, rid), timeout)
    except Exception as e:  # transport error or client timeout: counted as a status of its own
        tally.add(type(e).__name__, time.perf_counter() - t, rid, None)
        tally.errors.append(f"{rid}: {type(e).__name__}")
        return
    dt = time.perf_counter() - t
    got = None
    if status == 200:
        rows = json.loads(data)["predictions"]
        got = rows[0]["id"] if len(rows) == 1 else None
        if got != rid:
            tally.errors.append(f"{rid}: answered with {got!r}")
    tally.add(status, dt, rid, got)


async def closed_loop(url, records, concurrency, n, tag, max_s):
    """``concurrency`` clients each sending one request after the other, ``n`` requests in all (or max_s)."""
    tally = Tally()
    counter = iter(range(n))
    tails = json_tails(records)
    pool = RawPool(url, concurrency)
    t0 = time.perf_counter()

    async def worker():
        for i in counter:
            if time.perf_counter() - t0 > max_s:
                return
            await one(pool, tails[i % len(tails)], f"{tag}-{i}", tally)

    await asyncio.gather(*[worker() for _ in range(concurrency)])
    secs = time.perf_counter() - t0
    pool.close()
    return tally, secs


async def open_loop(url, records, rate, seconds, tag):
    """Requests started at ``rate`` per second for ``seconds`` whatever the answers (at most 512 connections;
    a request waiting for a connection counts in its latency)."""
    tally = Tally()
    tails = json_tails(records)
    pool = RawPool(url, 512)
    tasks, t0, i = [], time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        due = int((time.perf_counter() - t0) * rate)
        while i < due:
            tasks.append(asyncio.create_task(one(pool, tails[i % len(tails)], f"{tag}-{i}", tally, timeout=60.0)))
            i += 1
        await asyncio.sleep(0.005)
    await asyncio.gather(*tasks)
    secs = time.perf_counter() - t0
    pool.close()
    return tally, secs


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short run: fewer requests, 5 s overload, 1,000-request soak")
    p.add_argument("--mm-export", default=None)
    p.add_argument("--mm-int8-export", default=None,
                   help="an int8 export of the same model (tools/export.py --quantize int8) for the demo_int8 rows "
                        "(built with the demo export when --mm-export is not given)")
    p.add_argument("--rec-export", default=None)
    p.add_argument("--requests", type=int, default=None, help="requests per concurrency level (default 600; quick 150)")
    p.add_argument("--overload-s", type=float, default=None, help="overload phase length (default 30; quick 5)")
    p.add_argument("--soak", type=int, default=None, help="soak requests (default 20000; quick 1000)")
    p.add_argument("--levels", default="1,8,32,128")
    p.add_argument("--max-s", type=float, default=60.0, help="time bound of one concurrency level")
    p.add_argument("--server-args", default="", help="extra tools/serve.py flags for every server")
    p.add_argument("--warmup", type=int, default=300, help="unmeasured requests before each server's table")
    p.add_argument("--load-only", action="store_true", help="only the concurrency table (no overload, no soak)")
    p.add_argument("--models", default="demo,demo_int8,rec",
                   help="which exports to load-test: demo (fp32, Paddle Inference), demo_int8 (its int8 graph on "
                        "onnxruntime, served without flags), demo_onnx (the int8 export's fp32 ONNX graph on "
                        "onnxruntime: the engine's share of the int8 gain), rec")
    p.add_argument("--batches", default="32,1", help="--max-batch values to compare")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)
    n = a.requests or (150 if a.quick else 600)
    over_s = a.overload_s or (5.0 if a.quick else 30.0)
    soak_n = a.soak or (1000 if a.quick else 20000)
    levels = [int(x) for x in a.levels.split(",")]
    extra = a.server_args.split()
    tmp = tempfile.mkdtemp(prefix="serve_load_")
    models = a.models.split(",")
    if a.mm_export:
        mm, mm8 = a.mm_export, a.mm_int8_export
    else:
        mm, mm8 = build_mm_export(tmp, int8=bool({"demo_int8", "demo_onnx"} & set(models)))
    rec = a.rec_export or (build_rec_export(tmp) if "rec" in models else None)
    recs = mm_records(mm)
    data = {"demo": (mm, recs, ())}
    if mm8:
        data["demo_int8"] = (mm8, recs, ())
        data["demo_onnx"] = (mm8, recs, ("--engine", "onnxruntime", "--precision", "fp32"))
        with open(os.path.join(mm8, "export.yaml")) as f:
            q = (yaml.safe_load(f) or {}).get("quantization") or {}
        if q:
            a8 = q["agreement"]
            print(f"demo_int8: {q['method']}, {q['calibration']['items']} calibration items; same class as fp32 on "
                  f"{a8['same_class_rate']:.2%} of {a8['items']} {a8['split']} items, max |prob diff| "
                  f"{a8['max_prob_diff']:.3g}", flush=True)
    elif {"demo_int8", "demo_onnx"} & set(models):
        print("demo_int8 / demo_onnx skipped: give --mm-int8-export with --mm-export", flush=True)
    if rec:
        data["rec"] = (rec, rec_records(rec), ())
    data = {k: v for k, v in data.items() if k in models}
    result = {"cpu": cpu_name(), "cores": os.cpu_count(), "load": [], "problems": []}
    print(f"CPU: {result['cpu']} ({os.cpu_count()} cores)", flush=True)
    hdr = f"{'model':10} {'max_batch':>9} {'conc':>5} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}  statuses"
    print(hdr, flush=True)
    for name, (export, records, srv_args) in data.items():
        for mb in [int(x) for x in a.batches.split(",")]:
            srv = Server(export, "--max-batch", mb, *srv_args, *extra)
            try:
                # unmeasured warm-up: the predictor's first run of each new input shape is slow
                asyncio.run(closed_loop(srv.url, records, 32, a.warmup, "warmup", 60))
                for c in levels:
                    tally, secs = asyncio.run(closed_loop(srv.url, records, c, n, f"{name}{mb}c{c}", a.max_s))
                    s = {"model": name, "max_batch": mb, "concurrency": c, **tally.summary(secs)}
                    result["load"].append(s)
                    result["problems"] += [f"{name} mb={mb} c={c}: {x}" for x in tally.check()]
                    print(f"{name:10} {mb:>9} {c:>5} {s['rps']:>8} {s['p50_ms']:>8} {s['p95_ms']:>8} {s['p99_ms']:>8}  "
                          f"{s['status']}", flush=True)
            finally:
                srv.stop()
    by = {(s["model"], s["max_batch"], s["concurrency"]): s for s in result["load"]}
    if ("demo", 32, 32) in by and ("demo", 1, 32) in by:
        result["demo_batching_speedup_c32"] = round(
            by[("demo", 32, 32)]["rps"] / max(by[("demo", 1, 32)]["rps"], 1e-9), 2)
    if a.load_only:
        print("problems: " + ("; ".join(result["problems"]) if result["problems"] else "none"), flush=True)
        if a.json:
            print(json.dumps(result))
        return 1 if result["problems"] else 0
    # ---- overload and soak on the batching demo server
    capacity = max(s["rps"] for s in result["load"] if s["model"] == "demo" and s["max_batch"] == 32)
    export, records, _ = data["demo"]
    srv = Server(export, "--max-batch", 32, *extra)
    try:
        asyncio.run(closed_loop(srv.url, records, 32, a.warmup, "warmup", 60))
        rate = 4 * capacity
        tally, secs = asyncio.run(open_loop(srv.url, records, rate, over_s, "over"))
        ready = asyncio.run(_get(srv.url + "/readyz"))
        o = {"rate_per_s": round(rate, 1), "seconds": round(secs, 1), **tally.summary(secs), "readyz_after": ready,
             "answered_once": len(tally.ids_sent) == sum(tally.status.values()) and not tally.check()}
        result["overload"] = o
        result["problems"] += [f"overload: {x}" for x in tally.check()] + ([] if ready == 200 else ["readyz not 200"])
        print(f"\noverload at {rate:.0f} req/s for {secs:.0f} s: {o['status']}, ok p99 {o['p99_ms']} ms, "
              f"/readyz after: {ready}", flush=True)
        warm, _ = asyncio.run(closed_loop(srv.url, records, 32, 500, "warm", a.max_s))
        rss0 = srv.rss_mb()
        tally, secs = asyncio.run(closed_loop(srv.url, records, 32, soak_n, "soak", 3600))
        rss1 = srv.rss_mb()
        sk = {**tally.summary(secs), "seconds": round(secs, 1), "rss_before_mb": round(rss0, 1),
              "rss_after_mb": round(rss1, 1), "rss_growth_pct": round(100 * (rss1 - rss0) / max(rss0, 1e-9), 2)}
        result["soak"] = sk
        result["problems"] += [f"soak: {x}" for x in tally.check()]
        if sk["requests"] != soak_n or sk["ok"] != soak_n:
            result["problems"].append(f"soak: {sk['ok']} of {soak_n} answered 200")
        print(f"soak: {sk['ok']}/{soak_n} ok in {sk['seconds']} s ({sk['rps']} req/s, p99 {sk['p99_ms']} ms), "
              f"RSS {rss0:.0f} -> {rss1:.0f} MiB ({sk['rss_growth_pct']:+.1f}%)", flush=True)
    finally:
        result["exit_code_after_sigterm"] = srv.stop()
    if "demo_batching_speedup_c32" in result:
        print(f"demo, concurrency 32: batching gives {result['demo_batching_speedup_c32']}x the req/s of --max-batch 1")
    print("problems: " + ("; ".join(result["problems"]) if result["problems"] else "none"), flush=True)
    if a.json:
        print(json.dumps(result))
    return 1 if result["problems"] else 0


async def _get(url):
    import httpx

    async with httpx.AsyncClient() as c:
        try:
            return (await c.get(url, timeout=10)).status_code
        except Exception as e:
            return type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
