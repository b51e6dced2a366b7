"""Serve an export folder over HTTP (FastAPI + uvicorn) with dynamic batching.

    python tools/serve.py --model-dir OUT/export [--host 127.0.0.1] [--port 8000] [--max-batch 32]
                          [--max-wait-ms 5] [--token-file F] [--watch]

Prints ``serving on http://HOST:PORT`` once the model is loaded and warmed (then ``/readyz`` answers 200).
Endpoints and limits: ``paddle_models/engine/server.py``. SIGTERM (or Ctrl+C) drains: ``/readyz`` and new
predictions answer 503, new connections are refused, the requests in flight are answered, then the process
exits 0 (a signal during start-up: exit 0 once the model is loaded, without serving). SIGHUP, or a change
of the folder that ``--model-dir`` names (with ``--watch``: a symlink repointed, or export.yaml
rewritten), loads the model again and swaps it in without failing a request.

``--processes N`` (default: one per CPU core) runs N server processes on one listening socket, each with its
own model, batcher and metrics; ``--workers N`` runs N batcher threads in one process, each with its own
predictors of ``--threads`` CPU threads (default: the cores shared out among processes and workers).
Processes, sockets and signals: ``paddle_models/engine/serve_process.py``.
"""
import argparse
import os

from ..cli import setup_logging

EXIT_CODES = ("exit codes: 0 stopped by SIGTERM or SIGINT (after draining, or during start-up); 2 error (the "
              "message says which); with --processes N, the first non-zero code of a server process")


def parser(prog=None):
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0], epilog=EXIT_CODES)
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
    _add_limit_flags(p)
    return p


def _add_limit_flags(p):
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


def parse_args(argv=None, prog=None):
    """The flags, checked (``--processes 0`` becomes the number of CPU cores)."""
    args = parser(prog).parse_args(argv)
    if args.processes == 0:
        args.processes = os.cpu_count() or 1
    for k in ("max_batch", "workers", "processes", "max_records", "max_queue", "preprocess_threads"):
        if getattr(args, k) < 1:
            raise ValueError(f"--{k.replace('_', '-')} must be >= 1, got {getattr(args, k)}")
    return args


def make_server_factory(args):
    """``make_server()`` over the export with the flags' options, the family's task (``task_for_export``) and
    predictors of ``--threads`` threads (default: the cores shared out among processes and workers)."""
    from ..engine.serve_process import read_token, server_factory
    from ..inference import task_for_export

    threads = args.threads or max(1, (os.cpu_count() or 1) // (args.workers * args.processes))

    def make_predictor(model_dir, variant):
        from ..engine.predictor import open_predictor

        return open_predictor(model_dir, variant=variant, threads=threads, engine=args.engine,
                              precision=args.precision, onednn=args.onednn)

    options = {"max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms, "workers": args.workers,
               "preprocess_threads": args.preprocess_threads, "max_body_bytes": args.max_body_bytes,
               "max_records": args.max_records, "max_queue": args.max_queue, "timeout_s": args.timeout_s,
               "max_image_bytes": args.max_image_bytes, "max_image_pixels": args.max_image_pixels,
               "max_text_chars": args.max_text_chars, "truncate": not args.no_truncate,
               "token": read_token(args.token_file), "bucket": not args.no_bucket}
    return server_factory(args.model_dir, task_for_export, make_predictor, options)


def main(argv=None, prog=None):
    args = parse_args(argv, prog)
    setup_logging(quiet=True)
    from ..engine.serve_process import bind, serve_one, serve_processes

    try:
        sock = bind(args.host, args.port)
        make_server = make_server_factory(args)
    except KeyboardInterrupt:  # SIGTERM / SIGINT before start-up began: nothing to drain
        return 0
    watch_dir = args.model_dir if args.watch else None
    if args.processes > 1:
        return serve_processes(make_server, sock, args.processes, watch_dir)
    return serve_one(make_server, sock, watch_dir)
