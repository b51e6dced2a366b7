"""Ctrl-C during training: the first SIGINT only asks the loop to stop at its next consistent point (after
an optimizer step), the second raises ``KeyboardInterrupt`` at once."""
from __future__ import annotations

import logging
import signal
import threading

log = logging.getLogger("paddle_models")


class StopRequest:
    """``with StopRequest() as stop:`` ... ``if stop.requested:`` save and stop.

    The SIGINT handler is installed only in the main thread of a single process (``enabled``); elsewhere
    Ctrl-C raises ``KeyboardInterrupt`` as usual. The previous handler comes back on exit."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.requested = False
        self._old = None

    def _on_sigint(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("interrupt: stopping after the current step (Ctrl-C again to stop at once)")

    def __enter__(self) -> StopRequest:
        self.requested = False
        if self.enabled and threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
            self._old = None
        return False
