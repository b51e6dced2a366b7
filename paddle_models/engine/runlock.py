"""An exclusive lock on an output folder while a run writes it (training, evaluation artifacts).

The lock is ``<folder>/.lock``, held with ``fcntl.flock`` on an open descriptor; the file records the
holder's pid and host so a second run's error can name them. The kernel releases a flock when its process
dies, so the lock of a killed run is stale by construction and the next run takes it over (saying so).
"""
from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("paddle_models")

LOCK_FILE = ".lock"


class OutputLockedError(RuntimeError):
    """Another live process holds the output folder's lock; the message names it."""


def _read_holder(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read().strip()
    except OSError:
        return ""
    return text


class OutputLock:
    """``with OutputLock(folder, what="training"):`` holds ``<folder>/.lock`` for the block.

    Raises :class:`OutputLockedError` when another process holds it. On platforms without ``fcntl`` the
    lock is a no-op."""

    def __init__(self, folder: str, what: str = "a run"):
        self.folder = os.path.abspath(folder)
        self.path = os.path.join(self.folder, LOCK_FILE)
        self.what = what
        self._fd = None

    def acquire(self) -> OutputLock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return self
        os.makedirs(self.folder, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                holder = _read_holder(self.path) or "an unknown process"
                raise OutputLockedError(
                    f"{self.folder}: another run is writing this output folder ({holder}, lock file {self.path}); "
                    f"wait for it to finish or choose another Global.output_dir") from None
            # the file may have been unlinked by its previous holder between our open and our flock
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = _read_holder(self.path)
        if previous:
            log.warning("%s: taking over the lock left by a run that is no longer alive (%s)", self.folder, previous)
        os.ftruncate(fd, 0)
        os.write(fd, f"{self.what}: pid {os.getpid()} on {socket.gethostname()}\n".encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)  # while still holding it: a waiting opener re-checks the inode
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False
