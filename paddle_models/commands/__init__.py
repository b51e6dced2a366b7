"""The command lines of the project as one program: the tool layer.

    python tools/infer.py --model-dir OUT/export --input data/test.jsonl --out OUT/pred.csv
    python -m paddle_models infer --model-dir OUT/export --input data/test.jsonl --out OUT/pred.csv
    paddle-models infer ...                      # the console script of an installed project

All three run the same code: each command is a module of this package with ``parser(prog)`` (its flags)
and ``main(argv=None, prog=None) -> exit code`` (parse, call the package, print the result);
``tools/<name>.py`` is a few lines that call :func:`run_command`. :func:`run_command` first sets the
environment a command needs before paddle is imported (``OMP_NUM_THREADS``: all cores, as paddle would
otherwise use one; ``GLOG_minloglevel=2``: Paddle's C++ log quiet; a value already set is kept), then
imports the command (and first paddle, for the commands of :data:`PADDLE_FIRST`, so that the stop handlers
installed next stay in place) and runs it under :func:`paddle_models.cli.run_tool` (an error ends in one
``error: ...`` line and exit code 2; SIGINT / SIGTERM in one ``interrupted by ...`` line and exit code 130 /
143). This package is the tool layer: the engine never imports it.
"""
from __future__ import annotations

import importlib
import os
import sys

THREADS = "OMP_NUM_THREADS"
QUIET_GLOG = "GLOG_minloglevel"

# commands that import paddle anyway: run_command imports it before the stop handlers go in (paddle's import
# replaces SIGTERM's handler at the OS level; see engine/signals.py). Not serve: its parent forks without paddle
PADDLE_FIRST = ("train", "eval", "export", "infer", "translate", "demo")

# command -> (module of this package, environment variables it sets before paddle is imported)
COMMANDS = {
    "train": ("train", (THREADS,)),
    "eval": ("eval", (THREADS,)),
    "export": ("export", (THREADS, QUIET_GLOG)),
    "infer": ("infer", (THREADS, QUIET_GLOG)),
    "serve": ("serve", (QUIET_GLOG,)),
    "translate": ("translate", (THREADS, QUIET_GLOG)),
    "compare-arch": ("compare_arch", ()),
    "demo": ("demo", (THREADS,)),
    "make-demo-data": ("make_demo_data", ()),
    "train-tokenizer": ("train_tokenizer", ()),
    "train-spm": ("train_spm", ()),
    "import-graph": ("import_graph", ()),
    "faithful-e2e": ("faithful_e2e", ()),
    "average-checkpoints": ("average_checkpoints", ()),
    "convert-weights": ("convert_weights", ()),
    "weights-parity": ("weights_parity", (THREADS,)),
    "draw-architecture": ("draw_architecture", ()),
}


def environment_defaults(names) -> dict:
    """The value each of ``names`` gets when the environment does not set it."""
    values = {THREADS: str(os.cpu_count() or 1), QUIET_GLOG: "2"}
    return {name: values[name] for name in names}


def run_command(name: str, argv=None, prog: str | None = None):
    """Set the command's environment defaults, import it and run ``main(argv, prog)``; exits the process with
    its code (``argv`` None: the process's own arguments)."""
    from ..cli import run_tool

    module_name, env_names = COMMANDS[name]
    for key, value in environment_defaults(env_names).items():
        os.environ.setdefault(key, value)
    module = importlib.import_module(f"{__name__}.{module_name}")
    run_tool(lambda: module.main(argv, prog), argv, preload=_import_paddle if name in PADDLE_FIRST else None)


def _import_paddle():
    import paddle  # noqa: F401


def usage() -> str:
    return ("usage: paddle-models <command> [options]   (or: python -m paddle_models <command> ...)\n\n"
            "commands: " + ", ".join(COMMANDS) + "\n'paddle-models <command> --help' lists a command's options.")


def main(argv=None):
    """``paddle-models <command> [options]``: run one command (a tool's file name works too: compare_arch)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    name = argv[0].replace("_", "-")
    if name not in COMMANDS:
        print(f"error: unknown command {argv[0]!r}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    run_command(name, argv[1:], prog=f"paddle-models {name}")
