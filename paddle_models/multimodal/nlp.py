"""PaddleNLP's ``transformers`` (ERNIE-M's model, config and tokenizer), imported with the stop signals kept.

``import paddlenlp`` calls ``paddle.disable_signal_handler()``, which resets SIGTERM to the default action at
the OS level (the process would die at once, no clean-up, while ``signal.getsignal`` still reports the
Python handler); :func:`transformers` imports it with SIGTERM blocked and installs the reported handlers
again (``engine.signals.restore_handlers``) before a SIGTERM that arrived meanwhile is delivered.
"""
from __future__ import annotations


def transformers():
    """The ``paddlenlp.transformers`` module (imported once; the signal handlers restored after)."""
    import signal

    from ..engine.signals import blocked, restore_handlers

    with blocked([signal.SIGTERM]):
        import paddlenlp.transformers as module

        restore_handlers()
    return module
