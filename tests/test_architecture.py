"""The package's shape: the engine imports no family and no tool-layer module, and no import cycle exists
(imports inside functions count). The checker itself is tested on a planted package."""
import os

from paddle_models.importgraph import engine_violations, find_cycles, format_graph, import_graph

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "paddle_models")


def test_engine_imports_no_family_and_no_cli():
    graph = import_graph(PACKAGE)
    assert "paddle_models.engine.trainer" in graph and "paddle_models.multimodal.task" in graph
    assert engine_violations(graph) == [], format_graph(graph)


def test_no_import_cycles():
    graph = import_graph(PACKAGE)
    assert find_cycles(graph) == [], format_graph(graph)


def test_families_reach_the_engine_only_through_its_modules():
    """Every family's task imports engine.task (the interface), so the edges are family -> engine."""
    graph = import_graph(PACKAGE)
    for family in ("multimodal", "rec", "transformer"):
        assert "paddle_models.engine.task" in graph[f"paddle_models.{family}.task"]


def _write(root, rel, text):
    path = os.path.join(root, *rel.split("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def test_checker_finds_planted_violations(tmp_path):
    pkg = tmp_path / "paddle_models"
    _write(str(pkg), "__init__.py", "")
    _write(str(pkg), "cli.py", "")
    _write(str(pkg), "engine/__init__.py", "")
    _write(str(pkg), "engine/trainer.py", "def f():\n    from ..multimodal import task\n")  # late import counts
    _write(str(pkg), "engine/export.py", "from paddle_models.cli import x\nfrom .predictor import P\n")
    _write(str(pkg), "engine/predictor.py", "from . import export\n")
    _write(str(pkg), "multimodal/__init__.py", "")
    _write(str(pkg), "multimodal/task.py", "from ..engine import trainer\n")
    graph = import_graph(str(pkg))
    assert engine_violations(graph) == ["paddle_models.engine.export -> paddle_models.cli",
                                        "paddle_models.engine.trainer -> paddle_models.multimodal.task"]
    assert find_cycles(graph) == [
        ["paddle_models.engine.export", "paddle_models.engine.predictor"],
        ["paddle_models.engine.trainer", "paddle_models.multimodal.task"],
    ]


def test_checker_finds_engine_imports_of_the_commands(tmp_path):
    """The commands package is tool layer too: the engine importing it (or one of its modules) is a violation."""
    pkg = tmp_path / "paddle_models"
    _write(str(pkg), "__init__.py", "")
    _write(str(pkg), "commands/__init__.py", "")
    _write(str(pkg), "commands/infer.py", "from ..engine import predictor\n")
    _write(str(pkg), "engine/__init__.py", "")
    _write(str(pkg), "engine/predictor.py", "")
    _write(str(pkg), "engine/server.py", "def f():\n    from paddle_models.commands.infer import main\n")
    _write(str(pkg), "engine/trainer.py", "from .. import commands\n")
    graph = import_graph(str(pkg))
    assert engine_violations(graph) == ["paddle_models.engine.server -> paddle_models.commands.infer",
                                        "paddle_models.engine.trainer -> paddle_models.commands"]
    assert find_cycles(graph) == []
