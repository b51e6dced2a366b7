"""The HTTP server of an export folder: request records -> the family's Task -> a dynamic batcher -> the
predictor -> prediction rows (FastAPI app; ``serve_process.py`` runs it under uvicorn for ``tools/serve.py``).

    model = load_model(model_dir, task_factory, predictor_factory, workers=1)
    server = Server(model, ServeOptions(max_batch=32, max_wait_ms=5), reload_fn=...)
    app = server.app

The engine knows no family: ``task_factory(model_dir)`` returns the family's serving task
(``Task.for_export``) and ``predictor_factory(model_dir, variant)`` a loaded predictor; the tool layer
passes both.

Endpoints: ``GET /healthz`` (the process is up), ``GET /readyz`` (a model is loaded and warmed and the
server is not draining), ``GET /v1/model`` (export facts and version hash), ``GET /metrics`` (Prometheus
text of this server's own registry), ``POST /v1/predict`` (``{"records": [...]}`` ->
``{"predictions": [...]}`` in request order).

A request goes through:

1. admission: bearer token (401), body size (413, read in chunks and cut off at the limit), JSON (400),
   ``records`` a non-empty list of at most ``max_records`` (422 / 413), records admitted but not answered
   at most ``max_queue`` (503 with ``Retry-After``);
2. ``task.prepare_items(records, limits)`` in a thread pool: validation and decoding per record; any bad
   record -> 422 listing every bad record's index, id, field and message (the request is not run);
3. the batcher: queued items of several requests, grouped up to ``max_batch`` records or until the oldest
   waited ``max_wait_ms``, are collated by ``task.collate_items`` and run as one predictor call by one of
   ``workers`` threads (each with its own predictors); each request gets its own rows back. A request is
   never split; one larger than ``max_batch`` runs alone.
4. the whole request is bounded by ``timeout_s`` (504); a request that times out while queued is dropped
   from the queue.

:meth:`Server.reload` loads a model folder (again), warms it, then swaps it in: requests admitted before
the swap finish on the model they were prepared with; batches never mix models. :meth:`Server.drain`
(called on SIGTERM by ``serve_process``) makes ``/readyz`` and new predictions answer 503 while the requests in
flight finish.
"""

import asyncio
import collections
import concurrent.futures
import hmac
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .artifact import default_variant, read_export_meta, to_builtin, version_hash
from .task import RecordError, ServingNotSupported

log = logging.getLogger("paddle_models")


@dataclass
class ServeOptions:
    """Batching and limits of a :class:`Server` (the tool's command-line flags)."""
    max_batch: int = 32                 # records per predictor call
    max_wait_ms: float = 5.0            # how long the oldest queued request waits for others to join
    workers: int = 1                    # batcher threads, each with its own predictors
    preprocess_threads: int = 2         # threads running task.prepare_items
    max_body_bytes: int = 16 << 20      # request body (413)
    max_records: int = 64               # records per request (413)
    max_queue: int = 128                # records admitted and not yet answered (503 beyond)
    timeout_s: float = 10.0             # whole request (504)
    bucket: bool = True                 # run batches at power-of-two sizes (padded rows), see bucket_size
    max_image_bytes: int = 10 << 20     # one decoded base64 image (422)
    max_image_pixels: int = 40_000_000  # width x height of one image: decompression bombs (422)
    max_text_chars: int = 10_000        # one text (422)
    truncate: bool = True               # False: a text over the model's max_len tokens is a 422
    token: str | None = None         # bearer token for /v1/* and /metrics (401 without it)
    retry_after_s: int = 1              # Retry-After of a 503

    def limits(self) -> dict:
        return {"max_image_bytes": self.max_image_bytes, "max_image_pixels": self.max_image_pixels,
                "max_text_chars": self.max_text_chars, "truncate": self.truncate}


@dataclass(eq=False)
class LoadedModel:
    """One loaded export: its serving task and one runner (batch -> outputs) per batcher worker."""
    model_dir: str
    meta: dict
    version: str
    task: object
    runners: list[Callable]
    predictors: list[object]
    loaded_at: float = field(default_factory=time.time)

    def facts(self) -> dict:
        variant = default_variant(self.meta)
        entry = self.meta["variants"].get(variant) or {}
        pred = self.predictors[0] if self.predictors else None
        return to_builtin({
            "family": self.meta.get("family"), "model": self.meta.get("model"), "model_dir": self.model_dir,
            "version": self.version, "variant": variant, "variants": list(self.meta["variants"]),
            "inputs": entry.get("inputs") or [], "outputs": entry.get("outputs") or [],
            "labels": list(self.meta.get("labels") or []), "preprocess": self.meta.get("preprocess") or {},
            "engine": getattr(pred, "engine", None), "precision": getattr(pred, "precision", None),
            "quantization": self.meta.get("quantization"), "loaded_at": self.loaded_at})


def load_model(model_dir: str, task_factory: Callable, predictor_factory: Callable, workers: int = 1) -> LoadedModel:
    """Read ``model_dir`` (a symlink is resolved now, so a later reload can see it repointed), build the
    task and ``workers`` runners, and warm every predictor on the export's example inputs."""
    real = os.path.realpath(model_dir)
    meta = read_export_meta(real)
    version = version_hash(real)
    task = task_factory(real)
    runners, preds = [], []
    for _ in range(max(1, int(workers))):
        def make(variant=None):
            p = predictor_factory(real, variant)
            p.run(p.example_inputs())  # warm: the executor is built on the first run
            preds.append(p)
            return p

        runners.append(task.serving_runner(make))
    return LoadedModel(real, meta, version, task, runners, preds)


class QueueFull(Exception):
    """Admitting a request would pass ``max_queue`` records."""


class _Entry:
    __slots__ = ("model", "items", "n", "future", "t")

    def __init__(self, model: LoadedModel, items: list):
        self.model, self.items, self.n = model, items, len(items)
        self.future: concurrent.futures.Future = concurrent.futures.Future()
        self.t = time.monotonic()


class Batcher:
    """Queued requests grouped into predictor calls by ``workers`` threads (see the module doc)."""

    def __init__(self, max_batch: int, max_wait_s: float, workers: int, on_batch: Callable[[int], None],
                 on_depth: Callable[[int], None], bucket: bool = True):
        self.max_batch, self.max_wait_s = max(1, int(max_batch)), max(0.0, float(max_wait_s))
        self.bucket = bool(bucket)
        self._q: collections.deque[_Entry] = collections.deque()
        self._queued = 0
        self._cond = threading.Condition()
        self._stop = False
        self._on_batch, self._on_depth = on_batch, on_depth
        self._threads = [threading.Thread(target=self._loop, args=(i,), name=f"batcher-{i}", daemon=True)
                         for i in range(max(1, int(workers)))]
        for t in self._threads:
            t.start()

    def submit(self, entry: _Entry) -> None:
        with self._cond:
            self._q.append(entry)
            self._queued += entry.n
            self._on_depth(self._queued)
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout=5)

    def _take(self) -> list[_Entry] | None:
        """The next group: the head entry and the following ones of the same model, up to max_batch records;
        waits until max_batch records are queued or the head has waited max_wait_s."""
        with self._cond:
            while True:
                while self._q and self._q[0].future.cancelled():  # timed out while queued
                    self._queued -= self._q.popleft().n
                if self._stop and not self._q:
                    return None
                if not self._q:
                    self._cond.wait()
                    continue
                head = self._q[0]
                ready, n = 0, 0
                for e in self._q:
                    if e.model is not head.model or n + e.n > self.max_batch and n:
                        break
                    n += e.n
                    ready += 1
                full = n >= self.max_batch or ready < len(self._q)
                left = head.t + self.max_wait_s - time.monotonic()
                if full or left <= 0 or self._stop:
                    group = [self._q.popleft() for _ in range(ready)]
                    self._queued -= n
                    self._on_depth(self._queued)
                    if self._q:
                        self._cond.notify()  # another worker can start on the rest
                    return group
                self._cond.wait(left)

    def _loop(self, worker: int) -> None:
        while True:
            group = self._take()
            if group is None:
                return
            group = [e for e in group if e.future.set_running_or_notify_cancel()]
            if not group:
                continue
            model = group[0].model
            try:
                items = [it for e in group for it in e.items]
                batch = model.task.collate_items(items)
                n = len(items)
                size = bucket_size(n, self.max_batch) if self.bucket else n
                outputs = model.runners[worker % len(model.runners)](pad_rows(batch, n, size))
                if size != n:
                    outputs = {k: (v[:n] if getattr(v, "ndim", 0) and v.shape[0] == size else v)
                               for k, v in outputs.items()}
                rows = model.task.prediction_rows(outputs, batch)
                self._on_batch(len(items))
            except BaseException as e:  # answered as a 500 to every request of the group
                log.exception("batch of %d requests failed", len(group))
                for en in group:
                    en.future.set_exception(e)
                continue
            k = 0
            for en in group:
                en.future.set_result(rows[k:k + en.n])
                k += en.n


def bucket_size(n: int, max_batch: int) -> int:
    """The batch size a group of ``n`` records runs at: the next power of two, at most ``max_batch`` (a single
    request larger than ``max_batch`` runs at its own size). Few distinct sizes let the predictor reuse the
    kernels it built for each shape."""
    if n >= max_batch:
        return n
    size = 1
    while size < n:
        size *= 2
    return min(size, max_batch)


def pad_rows(batch: dict, n: int, size: int) -> dict:
    """``batch`` with its numeric arrays of ``n`` rows grown to ``size`` rows by repeating the first row (the
    extra rows' outputs are dropped; rows do not interact in a forward pass)."""
    if size == n:
        return batch
    import numpy as np

    out = {}
    for k, v in batch.items():
        if isinstance(v, np.ndarray) and v.ndim and v.shape[0] == n and v.dtype.kind in "biuf":
            v = np.concatenate([v, np.repeat(v[:1], size - n, axis=0)])
        out[k] = v
    return out


class _HTTPError(Exception):
    def __init__(self, status: int, body: dict, headers: dict | None = None):
        self.status, self.body, self.headers = status, body, headers or {}


class Server:
    """The FastAPI app over a :class:`LoadedModel` with dynamic batching, limits, drain and reload."""

    def __init__(self, model: LoadedModel, options: ServeOptions, reload_fn: Callable[[], LoadedModel] | None = None):
        from fastapi import FastAPI
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.opt = options
        self.model = model
        self._reload_fn = reload_fn
        self._reload_lock = threading.Lock()
        self.draining = False
        self._admitted = 0  # records admitted and not answered
        self._admit_lock = threading.Lock()
        self.registry = CollectorRegistry()
        r = self.registry
        self.m_requests = Counter("serve_requests", "Prediction requests by HTTP status", ["status"], registry=r)
        self.m_latency = Histogram("serve_request_seconds", "Prediction request latency (admission to answer)",
                                   buckets=(.005, .01, .025, .05, .1, .15, .25, .5, 1, 2.5, 5, 10), registry=r)
        self.m_batch = Histogram("serve_batch_size", "Records per predictor call",
                                 buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r)
        self.m_depth = Gauge("serve_queue_depth", "Records queued for the batcher", registry=r)
        self.m_reloads = Counter("serve_model_reloads", "Model reloads by result", ["result"], registry=r)
        self.pool = concurrent.futures.ThreadPoolExecutor(max(1, options.preprocess_threads),
                                                          thread_name_prefix="preprocess")
        self.batcher = Batcher(options.max_batch, options.max_wait_ms / 1000.0, options.workers,
                               self.m_batch.observe, self.m_depth.set, bucket=options.bucket)
        self.app = FastAPI(title="paddle-models serve", docs_url=None, redoc_url=None, openapi_url=None)
        self._routes()

    # ---- lifecycle -----------------------------------------------------------------------------------
    def drain(self) -> None:
        """Refuse new predictions (503) and report not ready; requests in flight still finish."""
        self.draining = True

    def close(self) -> None:
        self.batcher.stop()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def reload(self) -> bool:
        """Load the model folder again (``reload_fn``) and swap it in; False (and the old model kept) when
        loading fails. One reload at a time."""
        if self._reload_fn is None:
            return False
        with self._reload_lock:
            try:
                new = self._reload_fn()
            except Exception as e:
                log.error("reload failed, keeping %s: %s", self.model.model_dir, e)
                self.m_reloads.labels("error").inc()
                return False
            old, self.model = self.model, new
            self.m_reloads.labels("ok").inc()
            log.info("reloaded: %s (%s) -> %s (%s)", old.model_dir, old.version[:12], new.model_dir, new.version[:12])
            return True

    # ---- request handling ----------------------------------------------------------------------------
    def _check_token(self, request) -> None:
        if not self.opt.token:
            return
        got = request.headers.get("authorization", "")
        ok = got.startswith("Bearer ") and hmac.compare_digest(got[7:].strip().encode(), self.opt.token.encode())
        if not ok:
            raise _HTTPError(401, {"error": "missing or wrong bearer token (Authorization: Bearer <token>)"},
                             {"WWW-Authenticate": "Bearer"})

    async def _read_body(self, request) -> bytes:
        limit = self.opt.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _HTTPError(413, {"error": f"request body of {declared} bytes is over the limit of {limit} bytes"})
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _HTTPError(413, {"error": f"request body over the limit of {limit} bytes"})
            chunks.append(chunk)
        return b"".join(chunks)

    def _records(self, body: bytes) -> list:
        try:
            doc = json.loads(body)
        except (UnicodeDecodeError, ValueError) as e:
            raise _HTTPError(400, {"error": f"request body is not JSON ({e})"}) from None
        if not isinstance(doc, dict) or "records" not in doc:
            raise _HTTPError(422, {"error": 'expected a JSON object {"records": [...]}'})
        records = doc["records"]
        if not isinstance(records, list) or not records:
            raise _HTTPError(422, {"error": "records: expected a non-empty list of records"})
        if len(records) > self.opt.max_records:
            raise _HTTPError(413, {"error": f"{len(records)} records in one request; the limit is "
                                            f"{self.opt.max_records}"})
        return records

    def _admit(self, n: int) -> None:
        with self._admit_lock:
            if self._admitted + n > self.opt.max_queue:
                raise _HTTPError(503, {"error": f"server busy: {self._admitted} records queued (limit "
                                                f"{self.opt.max_queue}); retry later"},
                                 {"Retry-After": str(self.opt.retry_after_s)})
            self._admitted += n

    def _release(self, n: int) -> None:
        with self._admit_lock:
            self._admitted -= n

    async def predict(self, request) -> tuple:
        """(status, body, headers) of one POST /v1/predict."""
        self._check_token(request)
        if self.draining:
            raise _HTTPError(503, {"error": "server is shutting down"}, {"Retry-After": str(self.opt.retry_after_s)})
        records = self._records(await self._read_body(request))
        self._admit(len(records))
        try:
            return await asyncio.wait_for(self._run(records), timeout=self.opt.timeout_s)
        except asyncio.TimeoutError:
            raise _HTTPError(504, {"error": f"request not answered within {self.opt.timeout_s:g} s"}) from None
        finally:
            self._release(len(records))

    async def _run(self, records: list) -> tuple:
        model = self.model  # this request runs on the model current at admission, even across a reload
        loop = asyncio.get_running_loop()
        try:
            items, errors = await loop.run_in_executor(self.pool, model.task.prepare_items, records,
                                                       self.opt.limits())
        except ServingNotSupported as e:
            raise _HTTPError(501, {"error": str(e)}) from None
        bad = [e for e in errors if e is not None]
        if bad:
            return 422, {"error": f"{len(bad)} of {len(records)} records are invalid; nothing was predicted",
                         "errors": [_error_entry(e) for e in bad]}, {}
        entry = _Entry(model, items)
        self.batcher.submit(entry)
        try:
            rows = await asyncio.wrap_future(entry.future)
        except asyncio.CancelledError:
            entry.future.cancel()
            raise
        return 200, {"predictions": to_builtin(rows)}, {}

    def _routes(self) -> None:
        """The endpoints of the module doc on ``self.app``."""
        self._add_probes()
        self._add_model_facts()
        self._add_metrics()
        self._add_predict()
        self._add_not_found()

    def _add_probes(self) -> None:
        """``GET /healthz`` (the process is up) and ``GET /readyz`` (a model is loaded and not draining)."""
        from fastapi.responses import JSONResponse

        @self.app.get("/healthz")
        def healthz():
            return {"status": "ok"}

        @self.app.get("/readyz")
        def readyz():
            if self.draining:
                return JSONResponse({"status": "draining"}, status_code=503)
            return {"status": "ready", "version": self.model.version}

    def _add_model_facts(self) -> None:
        """``GET /v1/model``: the export's facts and the batching settings (bearer token checked)."""
        from fastapi import Request

        @self.app.get("/v1/model")
        def model_facts(request: Request):
            try:
                self._check_token(request)
            except _HTTPError as e:
                return _error_response(e)
            return {**self.model.facts(), "max_batch": self.opt.max_batch, "max_wait_ms": self.opt.max_wait_ms,
                    "workers": self.opt.workers, "max_records": self.opt.max_records}

    def _add_metrics(self) -> None:
        """``GET /metrics``: this server's Prometheus registry as text (bearer token checked)."""
        from fastapi import Request
        from fastapi.responses import Response

        @self.app.get("/metrics")
        def metrics(request: Request):
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

            try:
                self._check_token(request)
            except _HTTPError as e:
                return _error_response(e)
            return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    def _add_predict(self) -> None:
        """``POST /v1/predict`` through :meth:`predict`: every outcome counted by status and timed."""
        from fastapi import Request
        from fastapi.responses import JSONResponse

        @self.app.post("/v1/predict")
        async def predict(request: Request):
            t0 = time.perf_counter()
            try:
                status, body, headers = await self.predict(request)
            except _HTTPError as e:
                status, body, headers = e.status, e.body, e.headers
            except Exception as e:  # a failed batch or task: the request gets a 500, the server goes on
                log.exception("prediction failed")
                status, body, headers = 500, {"error": f"prediction failed: {type(e).__name__}: {e}"}, {}
            self.m_requests.labels(str(status)).inc()
            self.m_latency.observe(time.perf_counter() - t0)
            return JSONResponse(body, status_code=status, headers=headers)

    def _add_not_found(self) -> None:
        from fastapi.responses import PlainTextResponse

        @self.app.exception_handler(404)
        async def not_found(request, exc):
            return PlainTextResponse("not found", status_code=404)


def _error_response(e: _HTTPError):
    from fastapi.responses import JSONResponse

    return JSONResponse(e.body, status_code=e.status, headers=e.headers)


def _error_entry(e: RecordError) -> dict:
    msg = str(e)
    head = f"{e.field}: "
    return {"index": e.index, "id": e.record_id, "field": e.field,
            "message": msg.split(head, 1)[1] if head in msg else msg}
