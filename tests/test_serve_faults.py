"""tools/serve.py against the faults a hostile probe found: SIGTERM after traffic (both process modes), a
signal during start-up, the children of --processes N when their parent dies, lone surrogates in record
strings, deeply nested JSON, error bodies that are not JSON, metrics, and a client that goes away mid-body.
The export is conftest's, the server subprocess helper test_serve.py's."""
import json
import os
import signal
import socket
import threading
import time

import httpx
import pytest
from test_serve import Served, records_of


@pytest.fixture(scope="module")
def mm(serve_mm_export):
    return {**serve_mm_export, "records": records_of(serve_mm_export["data"] / "test.jsonl")}


# ---- processes ------------------------------------------------------------------------------------------
def _stat(pid: int):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (a reparented child nobody reaps stays one)."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def children_of(pid: int) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        fields = _stat(int(name)) if name.isdigit() else None
        if fields and int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(name))
    return out


def blocks_sigterm(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as f:
        mask = next(int(line.split()[1], 16) for line in f if line.startswith("SigBlk:"))
    return bool(mask >> (signal.SIGTERM - 1) & 1)


def wait_until(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def connections_to_one_process(url: str, n: int = 3) -> tuple:
    """Two keep-alive clients whose connections reached the same server process (of ``n`` opened, two share a
    process when there are fewer than ``n`` processes), and that process's pid."""
    clients = [httpx.Client(base_url=url, timeout=30) for _ in range(n)]
    pids = [c.get("/v1/model").json()["pid"] for c in clients]
    for i in range(n):
        for j in range(i + 1, n):
            if pids[i] == pids[j]:
                for k, c in enumerate(clients):
                    if k not in (i, j):
                        c.close()
                return clients[i], clients[j], pids[i]
    raise AssertionError(f"no two of {n} connections reached the same process: {pids}")


@pytest.mark.parametrize("processes", [1, 2])
def test_sigterm_after_traffic_drains_and_exits_0(mm, processes):
    """Traffic first (the first request used to load the tokenizer, whose paddlenlp import reset SIGTERM to
    the default action: the process died by the signal, rc -15 / 241, and dropped what was in flight). Then
    SIGTERM while a request waits in the batcher: it is answered 200, a new request on a live connection to
    the same process gets 503 in JSON, new connections are refused, the server exits 0, no process is left."""
    s = Served(mm["export"], "--processes", processes, "--max-wait-ms", 1500, "--max-batch", 64)
    try:
        for _ in range(4):
            with httpx.Client(base_url=s.url, timeout=30) as fresh:  # a new connection each: both processes
                assert fresh.post("/v1/predict", json={"records": mm["records"][:1]}).status_code == 200
        children = children_of(s.proc.pid) if processes > 1 else []
        assert len(children) == (processes if processes > 1 else 0)
        busy, probe, _ = connections_to_one_process(s.url)
        res = {}
        t = threading.Thread(target=lambda: res.setdefault("r", busy.post(
            "/v1/predict", json={"records": mm["records"][:3]})))
        t.start()
        time.sleep(0.5)  # the request is queued, waiting for others to batch with
        s.proc.send_signal(signal.SIGTERM)
        late = probe.post("/v1/predict", json={"records": mm["records"][:1]})
        assert late.status_code == 503 and late.json()["error"] == "server is shutting down"
        assert late.headers["content-type"] == "application/json"
        t.join()
        assert res["r"].status_code == 200 and len(res["r"].json()["predictions"]) == 3
        assert s.proc.wait(60) == 0, "".join(s.lines)[-3000:]
        with pytest.raises(httpx.TransportError):
            httpx.get(s.url + "/healthz", timeout=5)
        assert not [pid for pid in children if alive(pid)]
        assert "FatalError" not in "".join(s.lines) and "Traceback" not in "".join(s.lines)
    finally:
        s.stop()


@pytest.mark.parametrize("processes", [1, 2])
def test_sigterm_during_start_up_exits_0_without_serving(mm, processes):
    """SIGTERM while the model loads (the server blocks the signal then): it takes effect once the handlers
    are in place; the process exits 0, with no traceback and no Paddle 'FatalError'."""
    import subprocess
    import sys

    from test_serve import ENV, ROOT

    cmd = [sys.executable, str(ROOT / "tools" / "serve.py"), "--model-dir", str(mm["export"]), "--port", "0",
           "--onednn", "off", "--threads", "1", "--processes", str(processes)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    try:
        if processes == 1:
            wait_until(lambda: blocks_sigterm(proc.pid), 60, "the server to block SIGTERM for its start-up")
        else:
            wait_until(lambda: len(children_of(proc.pid)) == processes, 60, "the server processes")
            children = children_of(proc.pid)
            wait_until(lambda: all(blocks_sigterm(c) for c in children), 60, "the children's start-up")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-3000:]
    assert "serving on" not in out and "Traceback" not in out and "FatalError" not in out, out[-3000:]
    if processes > 1:
        assert not [pid for pid in children if alive(pid)]


def test_children_exit_when_their_parent_is_killed(mm):
    """SIGKILL to the parent of --processes 2 (which cannot pass anything on): each child gets SIGTERM from
    the kernel (PR_SET_PDEATHSIG), drains and exits; none keeps serving an orphaned socket."""
    s = Served(mm["export"], "--processes", 2)
    try:
        children = children_of(s.proc.pid)
        assert len(children) == 2
        s.proc.kill()
        s.proc.wait(30)
        wait_until(lambda: not [pid for pid in children if alive(pid)], 60, "the orphaned server processes to exit")
    finally:
        for pid in children_of(s.proc.pid):
            os.kill(pid, signal.SIGKILL)
        s.stop()


# ---- records and bodies ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(mm):
    s = Served(mm["export"], "--max-wait-ms", 150, "--max-records", 16, "--max-body-bytes", 400_000,
               "--max-image-bytes", 20_000, "--max-text-chars", 500)
    yield s
    s.stop()


def body_with(records: list, field: str, raw_json_string: str) -> bytes:
    """The request body of ``records`` whose first record's ``field`` is the JSON string literal
    ``raw_json_string`` as written (``"\\ud800"`` spells a lone surrogate, which json.dumps cannot)."""
    first = {k: v for k, v in records[0].items() if k != field}
    text = json.dumps({"records": [first] + records[1:]})
    head = '{"records": [{'
    assert text.startswith(head)
    return (head + f'"{field}": {raw_json_string}, ' + text[len(head):]).encode()


def metric(server, name: str) -> float:
    for line in server.client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.parametrize("field", ["text", "id", "evidence_texts"])
def test_a_lone_surrogate_is_a_422_naming_record_and_field_and_neighbours_get_200(server, mm, field):
    """A lone surrogate in a record's string used to reach SentencePiece in the batch (500 for every request
    batched with it; in ``id`` a plain-text 500 built outside the handler, counted as 200). Now the record is
    refused when read (422 in JSON naming it and the field), and requests sent at the same moment get 200."""
    value = '["ok", "\\ud800"]' if field == "evidence_texts" else '"x\\ud800y"'
    poison = body_with([{**mm["records"][0]}, mm["records"][1]], field, value)
    before = {s: metric(server, f'serve_requests_total{{status="{s}"}}') for s in ("200", "422", "500")}
    results = {}

    def send(key, **kw):
        results[key] = server.client.post("/v1/predict", **kw)

    jobs = [("poison", {"content": poison, "headers": {"content-type": "application/json"}})]
    jobs += [(f"good{i}", {"json": {"records": [mm["records"][i]]}}) for i in range(5)]
    threads = [threading.Thread(target=send, args=(k,), kwargs=kw) for k, kw in jobs]
    [t.start() for t in threads]
    [t.join() for t in threads]
    r = results["poison"]
    assert r.status_code == 422 and r.headers["content-type"] == "application/json", r.text
    errors = r.json()["errors"]
    where = "evidence_texts[1]" if field == "evidence_texts" else field
    assert [(e["index"], e["field"]) for e in errors] == [(0, where)]
    assert "lone surrogate U+D800" in errors[0]["message"]
    assert errors[0]["id"] == (None if field == "id" else mm["records"][0]["id"])
    for i in range(5):
        good = results[f"good{i}"]
        assert good.status_code == 200 and good.json()["predictions"][0]["id"] == mm["records"][i]["id"]
    after = {s: metric(server, f'serve_requests_total{{status="{s}"}}') for s in ("200", "422", "500")}
    assert after["200"] - before["200"] == 5 and after["422"] - before["422"] == 1 and after["500"] == before["500"]


@pytest.mark.parametrize("depth", [40, 5000, 100_000])
def test_deeply_nested_json_is_a_400_in_json(server, mm, depth):
    """Nesting past the recursion limit used to raise RecursionError (500); any nesting past 32 levels is now
    a 400 saying so, as it is in a record's field."""
    deep = "[" * depth + "]" * depth
    for body in (deep, '{"records": [{"id": "a", "text": ' + deep + "}]}"):
        r = server.client.post("/v1/predict", content=body.encode(), headers={"content-type": "application/json"})
        assert r.status_code == 400 and "deeper than the limit of 32" in r.json()["error"], r.text
    assert server.predict(mm["records"][:1]).status_code == 200


def test_every_error_body_is_json(server):
    for r in (server.client.get("/nope"), server.client.get("/v1/predict"), server.client.delete("/healthz"),
              server.client.post("/v1/predict", content=b"\xff\xfe not utf-8")):
        assert r.status_code in (400, 404, 405) and r.headers["content-type"] == "application/json", r.text
        assert isinstance(r.json()["error"], str)
    assert server.client.get("/nope").json() == {"error": "not found: GET /nope"}


def test_a_client_gone_mid_body_is_counted_as_a_disconnect_without_a_traceback(server, mm):
    """A body cut off by the client used to be logged as a 500 with a traceback and counted as a 500."""
    host, port = server.url.split("//")[1].split(":")
    before = (metric(server, "serve_client_disconnects_total"), metric(server, 'serve_requests_total{status="500"}'))
    n_lines = len(server.lines)
    for _ in range(3):
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100000\r\n\r\n{\"records\": [")
            time.sleep(0.2)
    wait_until(lambda: metric(server, "serve_client_disconnects_total") == before[0] + 3, 30, "3 disconnects")
    assert metric(server, 'serve_requests_total{status="500"}') == before[1]
    assert "Traceback" not in "".join(server.lines[n_lines:])
    assert server.predict(mm["records"][:1]).status_code == 200


def test_openapi_document_describes_the_records(server):
    doc = server.client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.") and set(doc["paths"]) >= {"/healthz", "/readyz", "/v1/predict"}
    record = doc["paths"]["/v1/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    record = record["properties"]["records"]["items"]
    assert record["required"] == ["text", "image_b64"] and record["additionalProperties"] is False
