"""Running the HTTP :class:`~paddle_models.engine.server.Server` as processes: the listening socket, one
uvicorn server process or N forked ones accepting on that socket, signals, and the model-folder watch.

    sock = bind("127.0.0.1", 8000)
    make_server = server_factory(model_dir, task_factory, predictor_factory, {"max_batch": 32, ...})
    code = serve_processes(make_server, sock, processes=4) if processes > 1 else serve_one(make_server, sock)

``make_server()`` builds a Server with its own model, batcher and metrics; each process calls it once
(after the fork), so processes share nothing but the socket. Like :mod:`.server`, this module knows no
family: the tool layer passes ``task_factory(model_dir)`` (the family's serving task) and
``predictor_factory(model_dir, variant)``.

Signals: SIGTERM or SIGINT drains: ``/readyz`` and new predictions answer 503 at once, the listening
socket closes (new connections are refused), the requests in flight are answered, and once none is left
(or ``timeout_s`` + 5 s passed) the process exits 0; a second SIGTERM / SIGINT stops waiting for them.
SIGHUP loads the model folder again and swaps it in. ``watch_dir`` polls the model folder every second and
reloads when the folder a path resolves to, or its export.yaml's mtime, changes.

Start-up: the signals are blocked while a process imports, loads and warms its model (a signal that
arrives then waits until the handlers are in place: the process then exits 0 without serving), and after
loading, the OS-level handlers are checked and installed again (``signals.restore_handlers``: Paddle's
import and paddlenlp's replace them behind Python's back; a repair is logged). With several processes the
parent passes each signal on to every child, holds no listening socket itself, exits with the first
non-zero child code, and never leaves a child behind: each child gets SIGTERM when its parent dies
(``PR_SET_PDEATHSIG`` on Linux), and a parent that stops on an error stops its children first.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable

from .signals import STOP_SIGNALS, blocked, restore_handlers

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


def watch(server, model_dir: str, stop: threading.Event, reload: Callable[[], None] | None = None) -> None:
    """Reload ``server`` (``reload()``, default ``server.reload()``) whenever :func:`folder_stamp` of
    ``model_dir`` changes, until ``stop`` is set."""
    reload = reload or server.reload
    last = folder_stamp(model_dir)
    while not stop.wait(1.0):
        now = folder_stamp(model_dir)
        if now != last and now[1] is not None:
            time.sleep(0.5)  # let a writer finish the folder
            reload()
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


SERVER_SIGNALS = (*STOP_SIGNALS, signal.SIGHUP)
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class _StopFlag:
    """The start-up handlers of a server process: SIGTERM / SIGINT ask it to stop, SIGHUP is ignored (the
    model being loaded is the folder's current one)."""

    def __init__(self):
        self.requested = False

    def install(self) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._on_stop)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def _on_stop(self, signum, frame):
        self.requested = True


def check_handlers(where: str, expected: bool = False) -> None:
    """:func:`~.signals.restore_handlers` on the server's signals, logging any that had to be repaired (a
    warning, unless ``expected``: after the imports of start-up a repair is the rule)."""
    repaired = restore_handlers(SERVER_SIGNALS)
    if repaired:
        log.log(logging.DEBUG if expected else logging.WARNING, "%s: the OS-level handlers of %s had been "
                "replaced (by a native library); installed again", where, ", ".join(repaired))


def _uvicorn_server(server, config, ready: Callable[[], None], stop: _StopFlag, watch_dir: str | None):
    """A uvicorn server that drains the Server on SIGTERM / SIGINT (see the module doc), reloads the model on
    SIGHUP, checks the signal handlers once started and after each reload, then calls ``ready()``."""
    import asyncio

    import uvicorn

    class UvicornServer(uvicorn.Server):
        drain_since = None

        async def startup(self, sockets=None):
            await super().startup(sockets=sockets)
            loop = asyncio.get_running_loop()

            def reload_and_check():
                server.reload()
                loop.call_soon_threadsafe(check_handlers, "after a reload")

            loop.add_signal_handler(signal.SIGHUP, lambda: threading.Thread(target=reload_and_check,
                                                                            daemon=True).start())
            if watch_dir:
                threading.Thread(target=watch, args=(server, watch_dir, self.watch_stop, reload_and_check),
                                 daemon=True).start()
            check_handlers("after warm-up")
            if stop.requested:  # a signal between start-up and uvicorn's own handlers
                self.handle_exit(signal.SIGTERM, None)
            ready()

        def handle_exit(self, sig, frame):
            if self.drain_since is None:
                server.drain()
                self.drain_since = time.monotonic()
            else:  # a second signal: stop waiting for the requests in flight
                super().handle_exit(sig, frame)

        async def on_tick(self, counter: int) -> bool:
            if self.drain_since is not None and not self.should_exit:
                for listener in self.servers:
                    listener.close()  # new connections are refused from now on
                waited = time.monotonic() - self.drain_since
                if server.active_requests() == 0 or waited > server.opt.timeout_s + 5:
                    self.should_exit = True
            return await super().on_tick(counter)

    uvicorn_server = UvicornServer(config)
    uvicorn_server.watch_stop = threading.Event()
    return uvicorn_server


def serve_one(make_server: Callable, sock: socket.socket, watch_dir: str | None = None,
              ready_fd: int | None = None) -> int:
    """Run one server process on ``sock`` until SIGTERM / SIGINT; returns 0 after draining (or at once when
    the signal came during start-up). Once ready it prints the ready line, or (a child of
    :func:`serve_processes`) writes one byte to ``ready_fd`` and closes it."""
    import uvicorn

    stop = _StopFlag()
    with blocked(SERVER_SIGNALS):  # start-up: a signal waits, pending, until the handlers are in place
        stop.install()
        server = make_server()  # imports, loads and warms everything: a request loads nothing
        check_handlers("after loading the model", expected=True)
    if stop.requested:
        server.close()
        return 0

    def ready():
        if ready_fd is not None:
            os.write(ready_fd, b"r")
            os.close(ready_fd)
        else:
            print(ready_line(sock), flush=True)

    config = uvicorn.Config(server.app, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=int(server.opt.timeout_s) + 5, backlog=2048,
                            timeout_keep_alive=30)  # longer than clients keep idle connections
    uvicorn_server = _uvicorn_server(server, config, ready, stop, watch_dir)
    try:
        uvicorn_server.run(sockets=[sock])
    finally:
        uvicorn_server.watch_stop.set()
        server.close()
    return 0


def _die_with_parent(parent_pid: int) -> None:
    """This (forked) process gets SIGTERM when its parent dies (Linux ``PR_SET_PDEATHSIG``); if the parent
    is already gone, it exits now."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the parent's own clean-up is all there is
        pass
    if os.getppid() != parent_pid:
        os._exit(0)


def _fork_children(make_server: Callable, sock: socket.socket, processes: int, watch_dir: str | None,
                   pipe: tuple) -> list:
    """Fork ``processes`` children, each running :func:`serve_one` with the write end of ``pipe`` (read fd,
    write fd) as its ready channel (exit 1 when it fails); their pids. Call with the server's signals blocked
    (the children inherit the mask, so none runs a parent's handler)."""
    read_fd, write_fd = pipe
    parent_pid = os.getpid()
    children = []
    for _ in range(processes):
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            try:
                _die_with_parent(parent_pid)
                code = serve_one(make_server, sock, watch_dir, ready_fd=write_fd)
            except BaseException:
                logging.exception("server process failed")
                code = 1
            os._exit(code)
        children.append(pid)
    return children


class _Children:
    """The parent's side of :func:`serve_processes`: signals passed on to the children, and stopping them."""

    def __init__(self, pids: list):
        self.pids = pids
        self.stopping = False

    def forward_signals(self) -> None:
        """SIGTERM, SIGINT and SIGHUP to this process are sent on to every child."""
        for sig in SERVER_SIGNALS:
            signal.signal(sig, self._forward)

    def _forward(self, sig, _frame):
        if sig in STOP_SIGNALS:
            self.stopping = True
        self.send(sig)

    def send(self, sig) -> None:
        for pid in self.pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def wait_ready(self, read_fd: int) -> bool:
        """Block until every child wrote its ready byte (True); False when the parent was told to stop
        meanwhile and a child exited instead; a child that exits first otherwise is an error."""
        for _ in self.pids:
            if not os.read(read_fd, 1):
                if self.stopping:
                    return False
                raise RuntimeError("a server process exited before it was ready")
        return True

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the children (at most ``timeout`` seconds in all; None: until they exit); the first non-zero
        exit code among those that exited (0 when all exit 0). A child still running is kept in ``self.pids``."""
        code, deadline = 0, None if timeout is None else time.monotonic() + timeout
        for pid in list(self.pids):
            while True:
                done, status = os.waitpid(pid, 0 if deadline is None else os.WNOHANG)
                if done:
                    self.pids.remove(pid)
                    code = code or os.waitstatus_to_exitcode(status)
                    break
                if time.monotonic() > deadline:
                    return code
                time.sleep(0.05)
        return code

    def stop_all(self, grace_s: float = 15.0) -> None:
        """SIGTERM to the children still running, SIGKILL to any still there after ``grace_s`` seconds."""
        if not self.pids:
            return
        self.send(signal.SIGTERM)
        self.wait(grace_s)
        self.send(signal.SIGKILL)
        self.wait()


def serve_processes(make_server: Callable, sock: socket.socket, processes: int, watch_dir: str | None = None) -> int:
    """``processes`` forked server processes accept on one socket; the parent prints the ready line once all
    are ready, passes signals on to them and returns once they have all exited (see the module doc)."""
    line = ready_line(sock)
    read_fd, write_fd = os.pipe()
    with blocked(SERVER_SIGNALS):
        children = _Children(_fork_children(make_server, sock, processes, watch_dir, (read_fd, write_fd)))
        children.forward_signals()
    os.close(write_fd)
    sock.close()  # the children hold the socket: once they have closed it, new connections are refused
    try:
        if children.wait_ready(read_fd):
            print(line, flush=True)
        return children.wait()
    finally:
        os.close(read_fd)
        children.stop_all()
