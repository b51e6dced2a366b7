"""tools/serve.py end to end: each endpoint, the limits and their errors, batching isolation, drain
(SIGTERM), reload (SIGHUP) and the bearer token, on a tiny multimodal export and a small CTR export. Each
server runs as a subprocess on a free loopback port."""
import base64
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from paddle_models.config import load_config
from paddle_models.engine.artifact import version_hash
from paddle_models.engine.export import export_model
from paddle_models.registry import get_task, model_entry

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "multimodal" / "jsonl_small.yaml")
ENV = {**os.environ, "GLOG_minloglevel": "2", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


# ---- exports ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mm(serve_mm_export):
    """A tiny multimodal run (demo data, 2 steps) exported (conftest's serve_mm_export); its test split as
    request records."""
    return {**serve_mm_export, "records": records_of(serve_mm_export["data"] / "test.jsonl")}


def b64(path) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode()


def records_of(jsonl: Path) -> list:
    """The JSONL file's records as request records (images base64-encoded)."""
    out = []
    for line in jsonl.read_text().splitlines():
        r = json.loads(line)
        out.append({"id": r["id"], "text": r["text"], "evidence_texts": r.get("evidence_texts", []),
                    "image_b64": b64(jsonl.parent / r["image"]),
                    "evidence_images_b64": [b64(jsonl.parent / p) for p in r.get("evidence_images", [])]})
    return out


def _rec_export(name, out):
    import paddle

    base = model_entry(name)["small_config"]
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    data.setdefault("Arch", {})["name"] = name
    data.setdefault("Global", {})["output_dir"] = str(out) + "_run"
    cfg = load_config(data=data)
    task = get_task("rec")(cfg)
    paddle.seed(1)
    model = task.build_model()
    model.eval()
    export_model(cfg, str(out), task=task, model=model, onnx=False, threads=1, check_onednn=False)
    return task


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve_rec")
    task = _rec_export("deepfm", root / "export")
    return {"export": root / "export", "task": task}


# ---- a server subprocess ---------------------------------------------------------------------------------
class Served:
    def __init__(self, model_dir, *args):
        cmd = [sys.executable, str(ROOT / "tools" / "serve.py"), "--model-dir", str(model_dir), "--port", "0",
               "--onednn", "off", "--threads", "1", *(() if "--processes" in args else ("--processes", "1")),
               *map(str, args)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
        self.lines = []
        deadline = time.time() + 120
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            if line.startswith("serving on "):
                self.url = line.split()[-1]
                break
        else:
            line = ""
        if not getattr(self, "url", None):
            self.proc.kill()
            raise RuntimeError("server did not start:\n" + "".join(self.lines))
        threading.Thread(target=self._drain_output, daemon=True).start()
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def _drain_output(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    def predict(self, records, **kw):
        return self.client.post("/v1/predict", json={"records": records}, **kw)

    def stop(self):
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def server(mm):
    s = Served(mm["export"], "--max-wait-ms", 100, "--max-records", 16, "--max-body-bytes", 400_000,
               "--max-image-bytes", 20_000, "--max-image-pixels", 1_000_000, "--max-text-chars", 500, "--no-truncate")
    yield s
    s.stop()


def infer_rows(mm, tmp_path, batch_size):
    out = tmp_path / "pred.csv"
    subprocess.run([sys.executable, str(ROOT / "tools" / "infer.py"), "--model-dir", str(mm["export"]), "--input",
                    str(mm["data"] / "test.jsonl"), "--out", str(out), "--batch-size", str(batch_size), "--threads",
                    "1", "--onednn", "off", "--no-progress"], check=True, env=ENV, capture_output=True)
    rows = [json.loads(line) for line in (tmp_path / "pred.jsonl").read_text().splitlines()]
    for r in rows:
        r.pop("true_label", None)
    return rows


# ---- endpoints ------------------------------------------------------------------------------------------
def test_endpoints(server, mm):
    assert server.client.get("/healthz").json() == {"status": "ok"}
    r = server.client.get("/readyz")
    assert r.status_code == 200 and r.json()["version"] == version_hash(str(mm["export"]))
    m = server.client.get("/v1/model").json()
    assert m["family"] == "multimodal" and m["labels"] == ["negative", "neutral", "positive"]
    assert m["version"] == version_hash(str(mm["export"]))
    assert [i["name"] for i in m["inputs"]][:2] == ["input_ids", "attention_mask"]
    assert server.client.get("/nope").status_code == 404


def test_predict_rows_equal_infer_tool(server, mm, tmp_path):
    """One request with the whole test split = tools/infer.py with one batch of the same records: same rows."""
    recs = mm["records"]
    r = server.predict(recs)
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == infer_rows(mm, tmp_path, len(recs))
    # one record per request, batched by the server with others: same labels, probabilities to 1e-5
    out = {}

    def one(rec):
        out[rec["id"]] = server.predict([rec]).json()["predictions"][0]

    ts = [threading.Thread(target=one, args=(rec,)) for rec in recs]
    [t.start() for t in ts]
    [t.join() for t in ts]
    for row in r.json()["predictions"]:
        got = out[row["id"]]
        assert got["label"] == row["label"] and got["label_name"] == row["label_name"]
        np.testing.assert_allclose(list(got["probabilities"].values()), list(row["probabilities"].values()), atol=2e-5)
    text = server.client.get("/metrics").text
    assert 'serve_requests_total{status="200"}' in text
    assert "serve_batch_size_bucket" in text and "serve_queue_depth" in text and "serve_request_seconds_bucket" in text


def _png(w, h) -> str:
    """A one-bit PNG: a few hundred bytes that decode to w x h pixels."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (w, h)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


BAD = [  # (what, record change, field, words in the message)
    ("not base64", {"image_b64": "@@@not base64@@@"}, "image_b64", "base64"),
    ("not an image", {"image_b64": base64.b64encode(b"hello, not a png").decode()}, "image_b64", "decodable"),
    ("image over the byte limit", {"image_b64": base64.b64encode(os.urandom(30_000)).decode()}, "image_b64", "larger"),
    ("decompression bomb", {"image_b64": _png(3000, 3000)}, "image_b64", "pixels"),
    ("bad evidence image", {"evidence_images_b64": ["AAAA"]}, "evidence_images_b64[0]", "decodable"),
    ("text missing", {"text": None}, "text", "missing"),
    ("text not a string", {"text": 17}, "text", "expected a string"),
    ("text over the character limit", {"text": "x" * 600}, "text", "limit"),
    ("text over max_len with truncation off", {"text": " ".join(["word"] * 60)}, "text", "truncation is off"),
    ("evidence texts not a list", {"evidence_texts": "a caption"}, "evidence_texts", "list"),
]


@pytest.mark.parametrize("what,change,field,words", BAD, ids=[b[0] for b in BAD])
def test_bad_record_gets_422_naming_record_and_field(server, mm, what, change, field, words):
    rec = {**mm["records"][0], **change, "id": "bad-1"}
    rec = {k: v for k, v in rec.items() if v is not None}
    r = server.predict([mm["records"][1], rec])
    assert r.status_code == 422, r.text
    errs = r.json()["errors"]
    assert len(errs) == 1 and errs[0]["index"] == 1 and errs[0]["id"] == "bad-1" and errs[0]["field"] == field
    assert words in errs[0]["message"], errs[0]


def test_request_level_errors(server, mm):
    c = server.client
    assert c.post("/v1/predict", content=b"{not json").status_code == 400
    assert c.post("/v1/predict", json={"rows": []}).status_code == 422
    assert c.post("/v1/predict", json={"records": []}).status_code == 422
    r = server.predict([mm["records"][0]] * 17)
    assert r.status_code == 413 and "limit is 16" in r.json()["error"]
    r = c.post("/v1/predict", content=b'{"records": [' + b'"x",' * 200_000 + b'"x"]}')
    assert r.status_code == 413 and "body" in r.json()["error"]
    r = server.predict(["just a string"])
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "record"


def test_a_bad_request_never_fails_the_requests_batched_with_it(server, mm):
    """Good and bad requests sent together (the server waits 100 ms to batch): the good ones get their rows."""
    expect = {row["id"]: row for row in server.predict(mm["records"][:6]).json()["predictions"]}
    results = {}

    def send(k, recs):
        results[k] = server.predict(recs)

    bad = {**mm["records"][0], "id": "broken", "image_b64": "AAAA"}
    jobs = [(f"good{i}", [mm["records"][i]]) for i in range(6)] + [("bad", [bad]), ("mixed", [mm["records"][2], bad])]
    ts = [threading.Thread(target=send, args=j) for j in jobs]
    [t.start() for t in ts]
    [t.join() for t in ts]
    for i in range(6):
        r = results[f"good{i}"]
        assert r.status_code == 200
        got = r.json()["predictions"][0]
        assert got["id"] == mm["records"][i]["id"] and got["label"] == expect[got["id"]]["label"]
    assert results["bad"].status_code == 422 and results["bad"].json()["errors"][0]["id"] == "broken"
    assert results["mixed"].status_code == 422 and [e["index"] for e in results["mixed"].json()["errors"]] == [1]


# ---- queue, timeout, token ------------------------------------------------------------------------------
def test_full_queue_is_503_with_retry_after_and_slow_request_504(mm):
    s = Served(mm["export"], "--max-queue", 2, "--max-wait-ms", 3000, "--max-batch", 64, "--timeout-s", 1)
    try:
        first = {}
        t = threading.Thread(target=lambda: first.setdefault("r", s.predict(mm["records"][:2])))
        t.start()
        time.sleep(0.3)
        r = s.predict(mm["records"][2:3])
        assert r.status_code == 503 and r.headers["retry-after"] == "1" and "busy" in r.json()["error"]
        t.join()
        assert first["r"].status_code == 504 and "within 1 s" in first["r"].json()["error"]
        assert s.client.get("/readyz").status_code == 200
        # the timed-out request left the queue: a new one is admitted (and times out the same way)
        assert s.predict(mm["records"][:1]).status_code == 504
    finally:
        s.stop()


def test_bearer_token(mm, tmp_path):
    tok = tmp_path / "token"
    tok.write_text("s3cret-token\n")
    s = Served(mm["export"], "--token-file", tok)
    try:
        assert s.client.get("/healthz").status_code == 200
        assert s.client.get("/readyz").status_code == 200
        r = s.predict(mm["records"][:1])
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert s.predict(mm["records"][:1], headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert s.client.get("/v1/model").status_code == 401 and s.client.get("/metrics").status_code == 401
        ok = s.predict(mm["records"][:1], headers={"Authorization": "Bearer s3cret-token"})
        assert ok.status_code == 200 and ok.json()["predictions"][0]["id"] == mm["records"][0]["id"]
    finally:
        s.stop()


# ---- drain and reload -----------------------------------------------------------------------------------
def test_sigterm_answers_requests_in_flight_then_exits_0(mm):
    s = Served(mm["export"], "--max-wait-ms", 1500, "--max-batch", 64)
    res = {}
    t = threading.Thread(target=lambda: res.setdefault("r", s.predict(mm["records"][:3])))
    t.start()
    time.sleep(0.5)  # the request is queued, waiting for others
    s.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    with pytest.raises(httpx.TransportError):  # the listening socket is closed: new connections are refused
        httpx.post(s.url + "/v1/predict", json={"records": mm["records"][:1]}, timeout=5)
    t.join()
    assert res["r"].status_code == 200 and len(res["r"].json()["predictions"]) == 3
    assert s.proc.wait(30) == 0
    s.client.close()


def test_two_processes_share_the_socket_and_drain_on_sigterm(mm):
    """The default on a multi-core machine: one server process per core on one socket."""
    s = Served(mm["export"], "--processes", 2, "--max-wait-ms", 1500, "--max-batch", 64)
    res = {}
    threads = [threading.Thread(target=lambda k=k: res.setdefault(k, s.predict(mm["records"][k:k + 2])))
               for k in range(4)]
    [t.start() for t in threads]
    time.sleep(0.6)  # the requests are queued, waiting for others to batch with
    s.proc.send_signal(signal.SIGTERM)  # the parent passes it on; both children drain and exit 0
    [t.join() for t in threads]
    assert all(res[k].status_code == 200 and [p["id"] for p in res[k].json()["predictions"]] ==
               [r["id"] for r in mm["records"][k:k + 2]] for k in range(4))
    assert s.proc.wait(60) == 0
    s.client.close()


def test_sighup_reloads_a_repointed_folder_without_failing_a_request(mm, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(mm["export"], a)
    shutil.copytree(mm["export"], b)
    with open(b / "export.yaml", "a") as f:
        f.write("# another version\n")
    link = tmp_path / "current"
    os.symlink(a, link)
    s = Served(link, "--max-wait-ms", 5)
    try:
        v0 = s.client.get("/v1/model").json()["version"]
        assert v0 == version_hash(str(a))
        stop, statuses = threading.Event(), []

        def hammer():
            with httpx.Client(base_url=s.url, timeout=30) as c:
                while not stop.is_set():
                    statuses.append(c.post("/v1/predict", json={"records": mm["records"][:2]}).status_code)

        ts = [threading.Thread(target=hammer) for _ in range(4)]
        [t.start() for t in ts]
        time.sleep(0.5)
        os.unlink(link)
        os.symlink(b, link)
        s.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 60
        while s.client.get("/v1/model").json()["version"] == v0 and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)
        stop.set()
        [t.join() for t in ts]
        assert s.client.get("/v1/model").json()["version"] == version_hash(str(b)) != v0
        assert statuses and set(statuses) == {200}, statuses
        assert 'serve_model_reloads_total{result="ok"} 1.0' in s.client.get("/metrics").text
    finally:
        s.stop()


# ---- the recommender family -----------------------------------------------------------------------------
def test_rec_ctr_export_serves_raw_values_like_training(rec):
    from paddle_models.engine.predictor import Predictor

    task = rec["task"]
    table = task.data._raw_split("val")
    n = 6
    records = []
    for i in range(n):
        r = {"id": f"row{i}"}
        for c, col in table.columns.items():
            v = col[i]
            r[c] = [int(x) for x in v if x >= 0] if col.ndim == 2 else v.item()
        records.append(r)
    expect = Predictor(str(rec["export"]), threads=1, onednn="off").run(task.data.fmap.transform(table.take(range(n))))
    p = np.asarray(next(iter(expect.values()))).reshape(-1)
    s = Served(rec["export"])
    try:
        r = s.predict(records)
        assert r.status_code == 200, r.text
        rows = r.json()["predictions"]
        assert [x["id"] for x in rows] == [f"row{i}" for i in range(n)]
        np.testing.assert_allclose([x["probabilities"]["click"] for x in rows], p, atol=2e-6)
        bad = s.predict([records[0], {**records[1], "n0": "abc"}, {k: v for k, v in records[2].items() if k != "c1"}])
        assert bad.status_code == 422
        assert [(e["index"], e["field"]) for e in bad.json()["errors"]] == [(1, "n0"), (2, "c1")]
        assert s.client.get("/v1/model").json()["labels"] == ["no_click", "click"]
    finally:
        s.stop()


def test_dssm_export_answers_501(tmp_path):
    _rec_export("dssm", tmp_path / "export")
    s = Served(tmp_path / "export")
    try:
        r = s.predict([{"id": 1, "user_id": 3}])
        assert r.status_code == 501 and "towers" in r.json()["error"]
    finally:
        s.stop()
