"""Running the HTTP :class:`~paddle_models.engine.server.Server` as processes: the listening socket, one
uvicorn server process or N forked ones accepting on that socket, signals, and the model-folder watch.

    sock = bind("127.0.0.1", 8000)
    make_server = server_factory(model_dir, task_factory, predictor_factory, {"max_batch": 32, ...})
    code = serve_processes(make_server, sock, processes=4) if processes > 1 else serve_one(make_server, sock)

``make_server()`` builds a Server with its own model, batcher and metrics; each process calls it once
(after the fork), so processes share nothing but the socket. Like :mod:`.server`, this module knows no
family: the tool layer passes ``task_factory(model_dir)`` (the family's serving task) and
``predictor_factory(model_dir, variant)``.

Signals: SIGTERM or SIGINT drains (requests in flight are answered, new ones refused) and the process
exits 0; SIGHUP loads the model folder again and swaps it in. With several processes the parent passes
each of these signals on to every child and exits with the first non-zero child code. ``watch_dir``
polls the model folder every second and reloads when the folder a path resolves to, or its export.yaml's
mtime, changes.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable

log = logging.getLogger("paddle_models")


def read_token(path: str | None) -> str | None:
    """The bearer token held in the file ``path`` (surrounding whitespace dropped); None without a path."""
    if not path:
        return None
    with open(path, encoding="utf-8") as f:
        token = f.read().strip()
    if not token:
        raise ValueError(f"{path}: the token file is empty")
    return token


def server_factory(model_dir: str, task_factory: Callable, predictor_factory: Callable, options: dict) -> Callable:
    """``make_server()``: a Server over the export ``model_dir`` with ``ServeOptions(**options)``, whose reload
    loads the folder again with the same factories. Nothing is imported or loaded until it is called, so a
    parent that forks server processes has not imported paddle (whose import starts threads) before the fork."""
    def make_server():
        from .server import ServeOptions, Server, load_model

        serve_options = ServeOptions(**options)

        def load():
            return load_model(model_dir, task_factory, predictor_factory, workers=serve_options.workers)

        return Server(load(), serve_options, reload_fn=load)

    return make_server


def folder_stamp(model_dir: str) -> tuple:
    """What the watch compares: the folder a path resolves to and its export.yaml's mtime."""
    real = os.path.realpath(model_dir)
    try:
        return real, os.stat(os.path.join(real, "export.yaml")).st_mtime_ns
    except OSError:
        return real, None


def watch(server, model_dir: str, stop: threading.Event) -> None:
    """Reload ``server`` whenever :func:`folder_stamp` of ``model_dir`` changes, until ``stop`` is set."""
    last = folder_stamp(model_dir)
    while not stop.wait(1.0):
        now = folder_stamp(model_dir)
        if now != last and now[1] is not None:
            time.sleep(0.5)  # let a writer finish the folder
            server.reload()
            last = folder_stamp(model_dir)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free one), inheritable by forked children."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP: accepted connections inherit it, and asyncio sets TCP_NODELAY only on sockets that
    # say TCP; without it every response waits on the client's delayed ACK (about 40 ms on Linux)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def ready_line(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"serving on http://{host}:{port}"


def _uvicorn_server(server, config, ready: Callable[[], None]):
    """A uvicorn server that reloads the model on SIGHUP, calls ``ready()`` once started and drains the
    Server when uvicorn is told to exit."""
    import uvicorn

    class UvicornServer(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets=sockets)
            import asyncio

            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGHUP, lambda: threading.Thread(target=server.reload, daemon=True).start())
            ready()

        def handle_exit(self, sig, frame):
            server.drain()
            super().handle_exit(sig, frame)

    return UvicornServer(config)


def serve_one(make_server: Callable, sock: socket.socket, watch_dir: str | None = None,
              ready_fd: int | None = None) -> int:
    """Run one server process on ``sock`` until SIGTERM / SIGINT; returns 0 after draining. Once ready it
    prints the ready line, or (a child of :func:`serve_processes`) writes one byte to ``ready_fd``."""
    import uvicorn

    server = make_server()
    stop = threading.Event()

    def ready():
        if ready_fd is not None:
            os.write(ready_fd, b"r")
        else:
            print(ready_line(sock), flush=True)

    if watch_dir:
        threading.Thread(target=watch, args=(server, watch_dir, stop), daemon=True).start()
    config = uvicorn.Config(server.app, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=int(server.opt.timeout_s) + 5, backlog=2048,
                            timeout_keep_alive=30)  # longer than clients keep idle connections
    # uvicorn re-raises the signal that stopped it once it has shut down: handled here, so we exit 0
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    _uvicorn_server(server, config, ready).run(sockets=[sock])
    stop.set()
    server.close()
    return 0


def _fork_children(make_server: Callable, sock: socket.socket, processes: int, watch_dir: str | None,
                   pipe: tuple) -> list:
    """Fork ``processes`` children, each running :func:`serve_one` with the write end of ``pipe`` (read fd,
    write fd) as its ready channel (exit 1 when it fails); their pids."""
    read_fd, write_fd = pipe
    children = []
    for _ in range(processes):
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            try:
                code = serve_one(make_server, sock, watch_dir, ready_fd=write_fd)
            except BaseException:
                logging.exception("server process failed")
                code = 1
            os._exit(code)
        children.append(pid)
    return children


def _wait_ready(read_fd: int, children: list) -> None:
    """Block until every child wrote its ready byte; a child that exits first is an error."""
    got = 0
    while got < len(children):
        if not os.read(read_fd, 1):
            raise RuntimeError("a server process exited before it was ready")
        got += 1


def _forward_signals(children: list) -> None:
    """SIGTERM, SIGINT and SIGHUP to this process are sent on to every child."""
    def forward(sig, _frame):
        for pid in children:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)


def _wait_children(children: list) -> int:
    """Wait for every child; the first non-zero exit code (0 when all exit 0)."""
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


def serve_processes(make_server: Callable, sock: socket.socket, processes: int, watch_dir: str | None = None) -> int:
    """``processes`` forked server processes accept on one socket; the parent prints the ready line once all
    are ready, passes signals on to them and returns once they have all exited."""
    read_fd, write_fd = os.pipe()
    children = _fork_children(make_server, sock, processes, watch_dir, (read_fd, write_fd))
    os.close(write_fd)
    _wait_ready(read_fd, children)
    print(ready_line(sock), flush=True)
    _forward_signals(children)
    return _wait_children(children)
