"""Stop signals (SIGTERM, SIGINT) in every tool: the exception and exit code they end in, blocking them
while a process starts, and repairing their OS-level handlers after a native library replaced them.

Exit codes of the tools (``tools/*.py``; each tool's ``--help`` says them): 0 done, 1 ran and a check
failed, 2 error, 130 stopped by SIGINT (Ctrl-C), 143 stopped by SIGTERM (128 + the signal's number, the
shell's convention). ``tools/serve.py`` drains on either signal and then exits 0.

    install_stop_handlers()        # SIGTERM raises Terminated, SIGINT KeyboardInterrupt (the tool layer)
    restore_handlers()             # after imports, before long work: the OS-level handlers Python reports
    with blocked(STOP_SIGNALS):    # a signal arriving in the block waits, pending, until the block ends
        ...

Why the repair: ``signal.signal`` installs one C function at the OS level and keeps the Python handler in
its own table, so a native library can replace the OS-level handler while ``signal.getsignal`` still
reports the Python one. ``import paddle`` installs Paddle's C++ failure handler on SIGTERM (it prints
"FatalError: Termination signal is detected" and kills the process) and ``import paddlenlp`` calls
``paddle.disable_signal_handler()``, which resets SIGTERM to the default action (the process dies at once,
no Python runs). :func:`restore_handlers` installs again, at the OS level, what Python reports, and says
which signals needed it; :func:`os_handler` reads the OS-level handler (``sigaction``) to check.
"""
from __future__ import annotations

import contextlib
import ctypes
import signal
import threading
from collections.abc import Iterable, Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def exit_code(signum: int) -> int:
    """The exit code of a tool stopped by ``signum``: 128 + its number (130 for SIGINT, 143 for SIGTERM)."""
    return 128 + int(signum)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's ``KeyboardInterrupt`` so the same clean-up runs (``finally`` blocks, an
    atomic write removing its temporary file, an export removing its ``.tmp`` folder)."""

    signum = signal.SIGTERM

    def __init__(self, message: str = "terminated (SIGTERM)"):
        super().__init__(message)


def raise_terminated(signum, frame):
    raise Terminated()


def install_stop_handlers() -> None:
    """SIGTERM raises :class:`Terminated` and SIGINT ``KeyboardInterrupt`` (main thread only; elsewhere
    nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGTERM, raise_terminated)
    signal.signal(signal.SIGINT, signal.default_int_handler)


class _SigAction(ctypes.Structure):
    # struct sigaction starts with the handler on Linux (glibc, musl) and macOS; the rest is not read
    _fields_ = [("handler", ctypes.c_void_p), ("rest", ctypes.c_char * 256)]


def os_handler(signum: int) -> int | None:
    """The OS-level handler of ``signum`` as a number (0: the default action, 1: ignored, else the address
    of a C function), read with ``sigaction``; None where it cannot be read."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        action = _SigAction()
        if libc.sigaction(int(signum), None, ctypes.byref(action)) != 0:
            return None
    except (OSError, AttributeError):
        return None
    return int(action.handler or 0)


def restore_handlers(signals: Iterable[int] = STOP_SIGNALS) -> list[str]:
    """Install again, at the OS level, the handler ``signal.getsignal`` reports for each of ``signals`` (see
    the module doc); the names of those whose OS-level handler had been replaced. Main thread only (elsewhere
    it does nothing and returns [])."""
    if threading.current_thread() is not threading.main_thread():
        return []
    repaired = []
    for signum in signals:
        handler = signal.getsignal(signum)
        if handler is None:  # installed outside Python: nothing to restore it to
            continue
        before = os_handler(signum)
        signal.signal(signum, handler)
        if before is not None and before != os_handler(signum):
            repaired.append(signal.Signals(signum).name)
    return repaired


@contextlib.contextmanager
def blocked(signals: Iterable[int]) -> Iterator[None]:
    """Block ``signals`` in this thread for the block (threads started in it keep them blocked); at its end
    they are unblocked, even if they were blocked before (a forked child inherits its parent's mask), and one
    that arrived meanwhile is delivered then, to the handler installed by that time."""
    signals = set(signals)
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)
