"""Shared command-line plumbing for tools/: ``-c CONFIG``, ``-o key=value``, ``--json``, ``--debug`` and the
one-line ``error: ...`` exit path."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Optional

from .engine.artifact import to_builtin  # noqa: F401  (re-exported for tools)


def base_parser(description: str, config_required: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
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


def run_tool(main):
    """Run ``main()`` and exit with its code. Errors end in one line on stderr: ``error: <message>`` and exit
    code 2 (a tool returns 1 itself for "ran, and a check failed"). An interrupt (Ctrl-C) prints its message
    (the trainer's says where to resume) and exits 130. With ``--debug`` on the command line the stack trace
    is shown instead."""
    debug = "--debug" in sys.argv[1:]
    try:
        code = main()
    except SystemExit:
        raise
    except KeyboardInterrupt as e:
        if debug:
            raise
        print(f"interrupted{': ' + str(e) if str(e) else ''}", file=sys.stderr, flush=True)
        sys.exit(130)
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


def task_for_export(model_dir: str, meta: Optional[dict] = None):
    """The family's task serving the export folder ``model_dir`` (``Task.for_export`` with the folder's
    export.yaml and config.yaml): its ``read_inputs``, ``prepare_inputs`` and ``prediction_rows``."""
    from .config import load_config
    from .engine.artifact import CONFIG_FILE, read_export_meta
    from .registry import get_task

    meta = meta if meta is not None else read_export_meta(model_dir)
    family = meta.get("family")
    if not family:
        raise ValueError(f"{model_dir}: export.yaml names no family")
    cfg = load_config(os.path.join(model_dir, meta.get("config") or CONFIG_FILE))
    return get_task(family).for_export(model_dir, meta, cfg)
