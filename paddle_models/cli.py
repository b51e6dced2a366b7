"""Shared command-line plumbing of the commands (``paddle_models/commands``, run by ``tools/*.py``): ``-c CONFIG``,
``-o key=value``, ``--json``, ``--debug`` and the one-line ``error: ...`` exit path."""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys

from .engine.artifact import to_builtin  # noqa: F401  (re-exported for the commands)
from .engine.signals import blocked, exit_code, install_stop_handlers

EXIT_CODES = ("exit codes: 0 done; 1 ran, and a check failed; 2 error (one line: error: ...); 130 stopped by "
              "SIGINT (Ctrl-C), 143 stopped by SIGTERM (a training saves checkpoints/last first: resume with "
              "--resume). An interrupted tool leaves no partial file in place of a good one.")


def base_parser(description: str, config_required: bool = True, prog: str | None = None) -> argparse.ArgumentParser:
    """A parser with ``-c/--config``, ``-o/--override``, ``--json`` and ``--debug`` (``prog``: the name in its
    usage line; None: the script's file name)."""
    p = argparse.ArgumentParser(prog=prog, description=description, epilog=EXIT_CODES)
    p.add_argument("-c", "--config", required=config_required, help="YAML config (configs/<family>/<name>.yaml)")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. -o Global.epochs=3 -o Arch.modalities=[text]")
    p.add_argument("--json", action="store_true", help="print one JSON object with the results as the last line")
    add_debug_flag(p)
    return p


def add_debug_flag(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--debug``: on an error, show the stack trace instead of the one ``error: ...`` line."""
    p.add_argument("--debug", action="store_true", help="on an error, show the full stack trace")
    return p


def setup_logging(quiet: bool = False):
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="[%(asctime)s] %(levelname)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("paddle_models").setLevel(logging.WARNING if quiet else logging.INFO)
    os.environ.setdefault("GLOG_minloglevel", "2")


def emit_json(result: dict):
    sys.stdout.flush()
    print(json.dumps(to_builtin(result), ensure_ascii=False, sort_keys=False), flush=True)


def _expected(e: BaseException) -> bool:
    """True for errors that mean bad input or state (reported as their message alone): the package's own
    exception types (ConfigError, CheckpointError, DataError, OutputLockedError, ExportError, ...) and
    OSError, ValueError, KeyError."""
    own = any(c.__module__.split(".")[0] == "paddle_models" for c in type(e).__mro__)
    return own or isinstance(e, (OSError, ValueError, KeyError))


def run_tool(main, argv=None, preload=None):
    """Run ``main()`` and exit with its code. Errors end in one line on stderr: ``error: <message>`` and exit
    code 2 (a tool returns 1 itself for "ran, and a check failed"). SIGINT (Ctrl-C) and SIGTERM end in one
    ``interrupted by SIG...: ...`` line (the trainer's says where to resume) and exit 128 + the signal's number:
    130 and 143 (:data:`EXIT_CODES`); SIGTERM raises :class:`~paddle_models.engine.signals.Terminated`, so the
    clean-up of an interrupt runs for it too. ``preload()`` runs first with SIGTERM blocked, then the handlers
    are installed (an import that replaces SIGTERM's handler, paddle's, goes there). With ``--debug`` among the
    arguments (``argv``, by default the process's own) the stack trace is shown instead."""
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        with blocked([signal.SIGTERM]):  # a SIGTERM now waits until its handler is in place
            if preload is not None:
                preload()
            install_stop_handlers()
        code = main()
    except SystemExit:
        raise
    except KeyboardInterrupt as e:
        if debug:
            raise
        _interrupted(e)
    except Exception as e:
        if debug:
            raise
        if _expected(e):
            msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        else:  # a failure the tool did not anticipate: still one line, the stack on request
            msg = f"{type(e).__name__}: {e} (rerun with --debug for the stack trace)"
        sys.stdout.flush()
        print(f"error: {msg}", file=sys.stderr, flush=True)
        sys.exit(2)
    sys.exit(code or 0)


def _interrupted(e: KeyboardInterrupt):
    """The one line and exit code of a tool stopped by a signal (``e.signum``; SIGINT for a plain Ctrl-C)."""
    signum = getattr(e, "signum", signal.SIGINT)
    message = str(e) if str(e) and not str(e).startswith("terminated (") else ""
    sys.stdout.flush()
    print(f"interrupted by {signal.Signals(signum).name}{': ' + message if message else ''}", file=sys.stderr,
          flush=True)
    sys.exit(exit_code(signum))


def print_summary(title: str, result: dict):
    """A readable table of the scalar results (the JSON line carries everything)."""
    rows = [(k, v) for k, v in result.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)]
    rows += [(k, v) for k, v in result.items() if isinstance(v, bool)]
    if not rows:
        return
    width = max(len(k) for k, _ in rows)
    print(f"\n== {title} ==")
    for k, v in rows:
        if isinstance(v, float):
            v = f"{v:.4f}" if abs(v) < 1e5 else f"{v:.1f}"
        print(f"  {k.ljust(width)}  {v}")
    cm = result.get("confusion_matrix")
    if cm:
        print("  confusion matrix (rows: true, columns: predicted):")
        for row in cm:
            print("   " + " ".join(f"{int(x):6d}" for x in row))
    sys.stdout.flush()

