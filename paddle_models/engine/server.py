"""The HTTP server of an export folder: request records -> the family's Task -> a dynamic batcher -> the
predictor -> prediction rows (FastAPI app; ``serve_process.py`` runs it under uvicorn for ``tools/serve.py``).

    model = load_model(model_dir, task_factory, predictor_factory, workers=1)
    server = Server(model, ServeOptions(max_batch=32, max_wait_ms=5), reload_fn=...)
    app = server.app

The engine knows no family: ``task_factory(model_dir)`` returns the family's serving task
(``Task.for_export``) and ``predictor_factory(model_dir, variant)`` a loaded predictor; the tool layer
passes both.

Endpoints: ``GET /healthz`` (the process is up), ``GET /readyz`` (a model is loaded and warmed and the
server is not draining), ``GET /v1/model`` (export facts, version hash, the answering process's pid),
``GET /metrics`` (Prometheus text of this server's own registry), ``POST /v1/predict``
(``{"records": [...]}`` -> ``{"predictions": [...]}`` in request order), ``GET /openapi.json`` (the
OpenAPI description, :mod:`.server_schema`). Every error is answered in JSON, ``{"error": message}``
(unknown paths and methods too).

A request goes through:

1. admission: bearer token (401), body size (413, read in chunks and cut off at the limit), JSON (400;
   also nesting deeper than 32 levels), ``records`` a non-empty list of at most ``max_records`` (422 /
   413), every string of every record valid Unicode (422 naming each record and field holding a lone
   surrogate), records admitted but not answered at most ``max_queue`` (503 with ``Retry-After``);
2. ``task.prepare_items(records, limits)`` in a thread pool: validation and decoding per record; any bad
   record -> 422 listing every bad record's index, id, field and message (the request is not run);
3. the batcher: queued items of several requests, grouped up to ``max_batch`` records or until the oldest
   waited ``max_wait_ms``, are collated by ``task.collate_items`` and run as one predictor call by one of
   ``workers`` threads (each with its own predictors); each request gets its own rows back. A request is
   never split; one larger than ``max_batch`` runs alone; when a group fails, each of its requests runs
   alone, so only the one that caused it gets the 500 (:mod:`.batcher`).
4. the whole request is bounded by ``timeout_s`` (504); a request that times out while queued is dropped
   from the queue.

``serve_requests_total`` counts answers by the status actually sent; a client that goes away before its
answer (mid-body, say) is counted in ``serve_client_disconnects_total`` instead, without a traceback.

:meth:`Server.reload` loads a model folder (again), warms it, then swaps it in: requests admitted before
the swap finish on the model they were prepared with; batches never mix models. :meth:`Server.drain`
(called on SIGTERM by ``serve_process``) makes ``/readyz`` and new predictions answer 503 while the requests in
flight finish (queued ones run at once); :meth:`Server.active_requests` says how many are left.
"""

import asyncio
import concurrent.futures
import hmac
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .artifact import default_variant, read_export_meta, to_builtin, version_hash
from .batcher import Batcher, QueuedRequest
from .request_json import JSONProblem, encode_json, invalid_string, parse_json
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
            "quantization": self.meta.get("quantization"), "loaded_at": self.loaded_at, "pid": os.getpid()})


def load_model(model_dir: str, task_factory: Callable, predictor_factory: Callable, workers: int = 1) -> LoadedModel:
    """Read ``model_dir`` (a symlink is resolved now, so a later reload can see it repointed), build the
    task and load what its serving reads (``Task.load_serving``), build ``workers`` runners, and warm every
    predictor on the export's example inputs."""
    real = os.path.realpath(model_dir)
    meta = read_export_meta(real)
    version = version_hash(real)
    task = task_factory(real)
    task.load_serving()  # the tokenizer, vocabularies: nothing is loaded (or imported) on a request
    runners, preds = [], []
    for _ in range(max(1, int(workers))):
        def make(variant=None):
            p = predictor_factory(real, variant)
            p.run(p.example_inputs())  # warm: the executor is built on the first run
            preds.append(p)
            return p

        runners.append(task.serving_runner(make))
    return LoadedModel(real, meta, version, task, runners, preds)


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
        self._active = 0  # prediction requests being handled (from the first byte read to the answer)
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
        self.m_disconnects = Counter("serve_client_disconnects", "Prediction requests whose client went away "
                                     "before the answer (nothing sent)", registry=r)
        self.pool = concurrent.futures.ThreadPoolExecutor(max(1, options.preprocess_threads),
                                                          thread_name_prefix="preprocess")
        self.batcher = Batcher(options.max_batch, options.max_wait_ms / 1000.0, options.workers,
                               self.m_batch.observe, self.m_depth.set, bucket=options.bucket)
        self.app = FastAPI(title="paddle-models serve", docs_url=None, redoc_url=None, openapi_url=None)
        self._routes()

    # ---- lifecycle -----------------------------------------------------------------------------------
    def drain(self) -> None:
        """Refuse new predictions (503) and report not ready; requests in flight still finish (queued ones
        run at once, without waiting for others to batch with)."""
        self.draining = True
        self.batcher.flush()

    def active_requests(self) -> int:
        """Prediction requests being handled now (their body read, prepared, queued or run)."""
        return self._active

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
        """The body, read in chunks up to ``max_body_bytes`` (413 beyond); a client that goes away meanwhile
        raises Starlette's ``ClientDisconnect``."""
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
        """The request's records: JSON (400, also for nesting deeper than ``request_json.MAX_DEPTH``) of the
        form ``{"records": [...]}`` (422) with at most ``max_records`` (413), each string valid Unicode (422
        naming every record and field that is not)."""
        try:
            doc = parse_json(body)
        except JSONProblem as e:
            raise _HTTPError(400, {"error": str(e)}) from None
        if not isinstance(doc, dict) or "records" not in doc:
            raise _HTTPError(422, {"error": 'expected a JSON object {"records": [...]}'})
        records = doc["records"]
        if not isinstance(records, list) or not records:
            raise _HTTPError(422, {"error": "records: expected a non-empty list of records"})
        if len(records) > self.opt.max_records:
            raise _HTTPError(413, {"error": f"{len(records)} records in one request; the limit is "
                                            f"{self.opt.max_records}"})
        bad = [RecordError(i, _plain_id(rec), *problem) for i, rec in enumerate(records)
               if (problem := invalid_string(rec)) is not None]
        if bad:
            raise _HTTPError(422, {"error": f"{len(bad)} of {len(records)} records hold text that is not valid "
                                            f"Unicode; nothing was predicted",
                                   "errors": [_error_entry(e) for e in bad]})
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
        entry = QueuedRequest(model, items)
        self.batcher.submit(entry)
        try:
            rows = await asyncio.wrap_future(entry.future)
        except asyncio.CancelledError:
            entry.future.cancel()
            raise
        return 200, {"predictions": to_builtin(rows)}, {}

    async def _outcome(self, request) -> tuple:
        """(status, body, headers) of :meth:`predict`, errors included; status None when the client went
        away before the answer (nothing is sent then)."""
        from starlette.requests import ClientDisconnect

        try:
            status, body, headers = await self.predict(request)
        except _HTTPError as e:
            status, body, headers = e.status, e.body, e.headers
        except ClientDisconnect:
            return None, None, None
        except Exception as e:  # a failed batch or task: the request gets a 500, the server goes on
            log.exception("prediction failed")
            status, body, headers = 500, {"error": f"prediction failed: {type(e).__name__}: {e}"}, {}
        if await request.is_disconnected():
            return None, None, None
        return status, body, headers

    def _routes(self) -> None:
        """The endpoints of the module doc on ``self.app``."""
        self._add_probes()
        self._add_model_facts()
        self._add_metrics()
        self._add_predict()
        self._add_schema()
        self._add_http_errors()

    def _add_probes(self) -> None:
        """``GET /healthz`` (the process is up) and ``GET /readyz`` (a model is loaded and not draining)."""
        @self.app.get("/healthz")
        def healthz():
            return json_response({"status": "ok"})

        @self.app.get("/readyz")
        def readyz():
            if self.draining:
                return json_response({"status": "draining"}, 503)
            return json_response({"status": "ready", "version": self.model.version})

    def _add_model_facts(self) -> None:
        """``GET /v1/model``: the export's facts and the batching settings (bearer token checked)."""
        from fastapi import Request

        @self.app.get("/v1/model")
        def model_facts(request: Request):
            try:
                self._check_token(request)
            except _HTTPError as e:
                return json_response(e.body, e.status, e.headers)
            return json_response({**self.model.facts(), "max_batch": self.opt.max_batch,
                                  "max_wait_ms": self.opt.max_wait_ms, "workers": self.opt.workers,
                                  "max_records": self.opt.max_records})

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
                return json_response(e.body, e.status, e.headers)
            return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    def _add_predict(self) -> None:
        """``POST /v1/predict`` through :meth:`predict`: every answer counted by the status actually sent and
        timed; a client gone before its answer is counted as a disconnect (nothing is sent)."""
        from fastapi import Request
        from fastapi.responses import Response

        @self.app.post("/v1/predict")
        async def predict(request: Request):
            t0 = time.perf_counter()
            self._active += 1  # the event loop's thread only: no lock
            try:
                status, body, headers = await self._outcome(request)
            finally:
                self._active -= 1
            if status is None:
                self.m_disconnects.inc()
                return Response(status_code=499)  # nginx's "client closed request"; no client reads it
            response = json_response(body, status, headers)
            self.m_requests.labels(str(response.status_code)).inc()
            self.m_latency.observe(time.perf_counter() - t0)
            return response

    def _add_schema(self) -> None:
        """``GET /openapi.json``: the OpenAPI description of these endpoints (``server_schema.py``)."""
        from .server_schema import openapi_schema

        @self.app.get("/openapi.json")
        def schema():
            return json_response(openapi_schema(self.model.task, self.opt.max_records))

    def _add_http_errors(self) -> None:
        """Unknown paths (404) and methods (405) answered in JSON like every other error."""
        from starlette.exceptions import HTTPException

        @self.app.exception_handler(HTTPException)
        async def http_error(request, exc):
            what = "not found" if exc.status_code == 404 else str(exc.detail).lower()
            return json_response({"error": f"{what}: {request.method} {request.url.path}"}, exc.status_code,
                                 dict(exc.headers or {}))


def json_response(body, status: int = 200, headers: dict | None = None):
    """A JSON response of ``body`` that is always JSON (``request_json.encode_json``)."""
    from fastapi.responses import Response

    content, status = encode_json(body, status)
    return Response(content, status_code=status, headers=headers if status != 500 else None,
                    media_type="application/json")


def _plain_id(rec):
    """A record's ``id`` when it is a plain string or integer that is valid text (for error entries)."""
    rid = rec.get("id") if isinstance(rec, dict) else None
    if isinstance(rid, bool) or not isinstance(rid, (str, int)):
        return None
    return None if isinstance(rid, str) and invalid_string(rid) else str(rid)


def _error_entry(e: RecordError) -> dict:
    msg = str(e)
    head = f"{e.field}: "
    return {"index": e.index, "id": e.record_id, "field": e.field,
            "message": msg.split(head, 1)[1] if head in msg else msg}
