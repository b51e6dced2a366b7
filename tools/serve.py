#!/usr/bin/env python
"""Serve an export folder over HTTP (FastAPI + uvicorn) with dynamic batching.

    python tools/serve.py --model-dir OUT/export [--host 127.0.0.1] [--port 8000] [--max-batch 32]
                          [--max-wait-ms 5] [--token-file F] [--watch]

Prints ``serving on http://HOST:PORT`` once the model is loaded and warmed (then ``/readyz`` answers 200).
Endpoints and limits: ``paddle_models/engine/server.py``. SIGTERM (or Ctrl+C) drains: requests in flight
are answered, new ones refused, then the process exits 0. SIGHUP, or a change of the folder that
``--model-dir`` names (with ``--watch``: a symlink repointed, or export.yaml rewritten), loads the model
again and swaps it in without failing a request.

``--processes N`` (default: one per CPU core) runs N server processes on one listening socket, each with its
own model, batcher and metrics; ``--workers N`` runs N batcher threads in one process, each with its own
predictors of ``--threads`` CPU threads (default: the cores shared out among processes and workers).
"""
import argparse
import logging
import os
import signal
import socket
import sys
import threading
import time

os.environ.setdefault("GLOG_minloglevel", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddle_models.cli import run_tool, setup_logging  # noqa: E402

log = logging.getLogger("paddle_models")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", required=True, help="export folder (tools/export.py --out), or a symlink to one")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    p.add_argument("--port", type=int, default=8000, help="0: any free port (the ready line says which)")
    p.add_argument("--max-batch", type=int, default=32, help="records per predictor call (1: no batching)")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a request waits for others to batch with")
    p.add_argument("--workers", type=int, default=1, help="batcher threads, each with its own predictors")
    p.add_argument("--threads", type=int, default=0, help="CPU threads per predictor (0: cores / workers)")
    p.add_argument("--processes", type=int, default=0,
                   help="server processes sharing the socket (0: one per CPU core; measured faster than one process "
                        "with several predictor threads, see the README). Each has its own /metrics")
    p.add_argument("--preprocess-threads", type=int, default=2, help="threads validating and decoding records")
    p.add_argument("--engine", choices=["auto", "paddle", "onnxruntime"], default="auto",
                   help="auto: onnxruntime for an export with an int8 graph (tools/export.py --quantize int8), else "
                        "Paddle Inference")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "int8"], default="auto",
                   help="auto: the export's int8 graph when it has one, else the export's own precision (fp32, or "
                        "bf16 for an export made with Global.precision: bf16)")
    p.add_argument("--onednn", choices=["auto", "on", "off"], default=os.environ.get("PADDLE_MODELS_ONEDNN", "auto"))
    p.add_argument("--token-file", default=None, help="file holding a bearer token required on /v1/* and /metrics")
    p.add_argument("--watch", action="store_true", help="reload when the model folder changes (polled every second)")
    p.add_argument("--max-body-bytes", type=int, default=16 << 20)
    p.add_argument("--max-records", type=int, default=64, help="records per request")
    p.add_argument("--max-queue", type=int, default=128, help="records admitted and not answered (503 beyond)")
    p.add_argument("--timeout-s", type=float, default=10.0, help="per request (504 beyond)")
    p.add_argument("--max-image-bytes", type=int, default=10 << 20)
    p.add_argument("--max-image-pixels", type=int, default=40_000_000)
    p.add_argument("--max-text-chars", type=int, default=10_000)
    p.add_argument("--no-truncate", action="store_true", help="a text over the model's max_len tokens is an error")
    p.add_argument("--no-bucket", action="store_true",
                   help="run each batch at its own size (default: padded to the next power of two, so the predictor "
                        "meets a few shapes only)")
    args = p.parse_args(argv)
    if args.processes == 0:
        args.processes = os.cpu_count() or 1
    for k in ("max_batch", "workers", "processes", "max_records", "max_queue", "preprocess_threads"):
        if getattr(args, k) < 1:
            raise ValueError(f"--{k.replace('_', '-')} must be >= 1, got {getattr(args, k)}")
    return args


def read_token(path):
    if not path:
        return None
    with open(path, encoding="utf-8") as f:
        token = f.read().strip()
    if not token:
        raise ValueError(f"{path}: the token file is empty")
    return token


def build_server(args):
    """The engine's Server over the export, with this tool's task and predictor factories."""
    from paddle_models.cli import task_for_export
    from paddle_models.engine.predictor import open_predictor
    from paddle_models.engine.server import Server, ServeOptions, load_model

    cores = os.cpu_count() or 1
    threads = args.threads or max(1, cores // (args.workers * args.processes))

    def make_predictor(model_dir, variant):
        return open_predictor(model_dir, variant=variant, threads=threads, engine=args.engine,
                              precision=args.precision, onednn=args.onednn)

    def load():
        return load_model(args.model_dir, task_for_export, make_predictor, workers=args.workers)

    opts = ServeOptions(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, workers=args.workers,
                        preprocess_threads=args.preprocess_threads, max_body_bytes=args.max_body_bytes,
                        max_records=args.max_records, max_queue=args.max_queue, timeout_s=args.timeout_s,
                        max_image_bytes=args.max_image_bytes, max_image_pixels=args.max_image_pixels,
                        max_text_chars=args.max_text_chars, truncate=not args.no_truncate,
                        token=read_token(args.token_file), bucket=not args.no_bucket)
    return Server(load(), opts, reload_fn=load)


def folder_stamp(model_dir):
    """What --watch compares: the folder a path resolves to and its export.yaml's mtime."""
    real = os.path.realpath(model_dir)
    try:
        return real, os.stat(os.path.join(real, "export.yaml")).st_mtime_ns
    except OSError:
        return real, None


def watch(server, model_dir, stop: threading.Event):
    last = folder_stamp(model_dir)
    while not stop.wait(1.0):
        now = folder_stamp(model_dir)
        if now != last and now[1] is not None:
            time.sleep(0.5)  # let a writer finish the folder
            server.reload()
            last = folder_stamp(model_dir)


def serve_one(args, sock, ready_fd=None):
    """Run one server process on ``sock`` until SIGTERM / SIGINT; returns 0 after draining."""
    import uvicorn

    server = build_server(args)
    stop = threading.Event()
    host, port = sock.getsockname()[:2]

    class UvicornServer(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets=sockets)
            import asyncio

            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGHUP, lambda: threading.Thread(target=server.reload, daemon=True).start())
            if ready_fd is not None:
                os.write(ready_fd, b"r")
            else:
                print(f"serving on http://{host}:{port}", flush=True)

        def handle_exit(self, sig, frame):
            server.drain()
            super().handle_exit(sig, frame)

    if args.watch:
        threading.Thread(target=watch, args=(server, args.model_dir, stop), daemon=True).start()
    config = uvicorn.Config(server.app, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=int(args.timeout_s) + 5, backlog=2048,
                            timeout_keep_alive=30)  # longer than clients keep idle connections
    # uvicorn re-raises the signal that stopped it once it has shut down: handled here, so we exit 0
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    UvicornServer(config).run(sockets=[sock])
    stop.set()
    server.close()
    return 0


def bind(host, port):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP: accepted connections inherit it, and asyncio sets TCP_NODELAY only on sockets that
    # say TCP; without it every response waits on the client's delayed ACK (about 40 ms on Linux)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve_processes(args, sock):
    """``--processes N``: N forked server processes accept on one socket; signals are passed on to them."""
    r, w = os.pipe()
    children = []
    for _ in range(args.processes):
        pid = os.fork()
        if pid == 0:
            os.close(r)
            try:
                code = serve_one(args, sock, ready_fd=w)
            except BaseException:
                logging.exception("server process failed")
                code = 1
            os._exit(code)
        children.append(pid)
    os.close(w)
    got = 0
    while got < len(children):
        b = os.read(r, 1)
        if not b:
            raise RuntimeError("a server process exited before it was ready")
        got += 1
    host, port = sock.getsockname()[:2]
    print(f"serving on http://{host}:{port}", flush=True)

    def forward(sig, _frame):
        for pid in children:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    code = 0
    for pid in children:
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
        code = code or os.waitstatus_to_exitcode(status)
    return code


def main(argv=None):
    args = parse_args(argv)
    setup_logging(quiet=True)
    sock = bind(args.host, args.port)
    if args.processes > 1:
        return serve_processes(args, sock)
    return serve_one(args, sock)


if __name__ == "__main__":
    run_tool(main)
