"""The commands as one program: ``tools/<name>.py``, ``python -m paddle_models <name>`` and the console script's
``paddle_models.commands:main`` run the same parser and code, with the environment each command needs set
before paddle is imported; the tools stay parse + call."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from paddle_models import commands

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/transformer/copy_toy.yaml"

# Runs a command with a meta-path hook that records the environment at the moment paddle is first imported.
_RECORD_ENV_AT_PADDLE_IMPORT = r"""
import json, os, runpy, sys
seen, code = {}, None
class Hook:
    def find_spec(self, name, path=None, target=None):
        if name == "paddle" and not seen:
            seen.update({k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "GLOG_minloglevel")})
        return None
sys.meta_path.insert(0, Hook())
how, *argv = sys.argv[1:]
sys.argv = [how] + argv
try:
    if how == "module":
        runpy.run_module("paddle_models", run_name="__main__", alter_sys=True)
    else:
        runpy.run_path(how, run_name="__main__")
except SystemExit as e:
    code = e.code
print(json.dumps({"seen": seen, "code": code}))
"""


def _clean_env():
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "GLOG_minloglevel")}
    env["PYTHONPATH"] = str(ROOT)
    return env


@pytest.mark.parametrize("how", ["tools/export.py", "module"])
def test_environment_is_set_before_paddle_is_imported(how, tmp_path):
    """export without a checkpoint: paddle is imported, then the config is refused (exit 2, one error line)."""
    argv = (["export"] if how == "module" else []) + ["-c", CONFIG, "-o", f"Global.output_dir={tmp_path}",
                                                     "--out", str(tmp_path / "export")]
    p = subprocess.run([sys.executable, "-c", _RECORD_ENV_AT_PADDLE_IMPORT, how, *argv], capture_output=True,
                       text=True, cwd=str(ROOT), env=_clean_env(), timeout=300)
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert res["code"] == 2, p.stderr[-2000:]
    assert "error: set the weights to export with -o Global.checkpoint=PATH" in p.stderr
    assert res["seen"] == {"OMP_NUM_THREADS": str(os.cpu_count() or 1), "GLOG_minloglevel": "2"}


def test_importing_the_commands_imports_no_paddle():
    code = ("import sys; import paddle_models.commands, paddle_models.commands.infer, paddle_models.commands.serve; "
            "print('paddle' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT), env=_clean_env(),
                       timeout=120)
    assert p.stdout.strip() == "False", p.stderr[-2000:]


def test_module_help_names_the_command():
    p = subprocess.run([sys.executable, "-m", "paddle_models", "infer", "--help"], capture_output=True, text=True,
                       cwd=str(ROOT), env=_clean_env(), timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("usage: paddle-models infer ") and "--model-dir MODEL_DIR" in p.stdout
    tool = subprocess.run([sys.executable, "tools/infer.py", "--help"], capture_output=True, text=True,
                          cwd=str(ROOT), env=_clean_env(), timeout=120)
    # the same options, only the program name differs
    assert tool.stdout.replace("usage: infer.py ", "").split() == \
        p.stdout.replace("usage: paddle-models infer ", "").split()


def test_unknown_or_missing_command(capsys):
    assert commands.main([]) == 2
    assert "commands: train, eval" in capsys.readouterr().err
    assert commands.main(["trian"]) == 2
    assert "error: unknown command 'trian'" in capsys.readouterr().err
    assert commands.main(["--help"]) == 0
    assert "import-graph" in capsys.readouterr().out


def test_console_script_entry_runs_a_command_like_its_tool():
    """``paddle_models.commands:main`` (what setup.py's console script calls) and the tool print the same."""
    via_main = subprocess.run([sys.executable, "-c", "import sys; from paddle_models.commands import main; "
                               "sys.exit(main(['import_graph', '--check', '--json']))"],
                              capture_output=True, text=True, cwd=str(ROOT), env=_clean_env(), timeout=120)
    via_tool = subprocess.run([sys.executable, "tools/import_graph.py", "--check", "--json"], capture_output=True,
                              text=True, cwd=str(ROOT), env=_clean_env(), timeout=120)
    assert via_main.returncode == via_tool.returncode == 0, via_main.stderr + via_tool.stderr
    assert via_main.stdout == via_tool.stdout
    res = json.loads(via_main.stdout.strip().splitlines()[-1])
    assert res["engine_violations"] == [] and res["cycles"] == [] and res["modules"] > 50


def test_every_tool_is_parse_and_call():
    """tools/*.py hold no logic: at most 90 lines, and each one is a known command."""
    for path in sorted((ROOT / "tools").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert len(text.splitlines()) <= 90, path
        name = path.stem.replace("_", "-")
        assert name in commands.COMMANDS and f'run_command("{name}")' in text, path


def test_setup_declares_the_console_script():
    assert '"paddle-models = paddle_models.commands:main"' in (ROOT / "setup.py").read_text(encoding="utf-8")
    assert callable(commands.main)
