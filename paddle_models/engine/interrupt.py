"""Ctrl-C or SIGTERM during training: the first signal only asks the loop to stop at its next consistent point
(after an optimizer step, where it saves ``checkpoints/last``), the second raises at once
(``KeyboardInterrupt`` for SIGINT, :class:`~.signals.Terminated` for SIGTERM)."""
from __future__ import annotations

import logging
import signal
import threading

from .signals import STOP_SIGNALS, Terminated

log = logging.getLogger("paddle_models")


class StopRequest:
    """``with StopRequest() as stop:`` ... ``if stop.requested:`` save and stop (``stop.signum`` says which
    signal asked).

    The handlers are installed only in the main thread of a single process (``enabled``); elsewhere a signal
    does what it did before. Installing them also repairs their OS-level handlers, which imports made before
    the loop (paddlenlp's) may have replaced (see :mod:`.signals`). The previous handlers come back on exit."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.requested = False
        self.signum = None
        self._old = {}

    def _on_signal(self, signum, frame):
        if self.requested:
            raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt
        self.requested, self.signum = True, signum
        again = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
        log.warning("%s: stopping after the current step (%s again to stop at once)",
                    signal.Signals(signum).name, again)

    def __enter__(self) -> StopRequest:
        self.requested, self.signum = False, None
        if self.enabled and threading.current_thread() is threading.main_thread():
            self._old = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
        self._old = {}
        return False
