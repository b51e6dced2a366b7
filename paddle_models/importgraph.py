"""The import graph of a package, read from its source with ``ast`` (nothing is imported).

Every ``import`` / ``from ... import`` statement counts, at module level or inside a function, so a cycle
dodged by a late import still shows. Edges go from a module to the modules of the same package it
imports (``from . import x`` names the submodule ``x`` when it is one). ``tools/import_graph.py`` prints
it; the architecture test checks its rules.
"""
from __future__ import annotations

import ast
import os

FAMILIES = ("multimodal", "rec", "transformer")
TOOL_LAYER = ("cli", "commands")  # the command-line plumbing and the commands


def module_name(root: str, path: str, package: str) -> str:
    rel = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
    if rel.endswith("__init__"):
        rel = rel[: -len("__init__")].rstrip(".")
    return package + ("." + rel if rel else "")


def _resolve(current: str, is_package: bool, level: int, name: str) -> str:
    parts = current.split(".")
    base = parts if is_package else parts[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def import_graph(root: str, package: str = "") -> dict[str, set[str]]:
    """``{module: modules of the package it imports}`` for every ``.py`` file under ``root`` (the package
    folder); ``package`` defaults to the folder's name."""
    package = package or os.path.basename(os.path.abspath(root))
    files = {}
    for d, _, names in os.walk(root):
        for n in names:
            if n.endswith(".py"):
                p = os.path.join(d, n)
                files[module_name(root, p, package)] = p
    known = set(files)
    graph: dict[str, set[str]] = {}
    for mod, path in sorted(files.items()):
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=path)
        is_pkg = path.endswith("__init__.py")
        deps: set[str] = set()
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(mod, is_pkg, node.level, node.module or "") if node.level else (node.module or "")
                subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]
                # ``from pkg import sub`` imports the submodule; other names are read from ``base`` itself
                targets = subs + ([base] if len(subs) < len(node.names) else [])
            for t in targets:
                while t and t not in known and "." in t:  # a name inside a module -> the module
                    t = t.rsplit(".", 1)[0]
                if t in known and t != mod:
                    deps.add(t)
        graph[mod] = deps
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (each is at least one cycle), sorted."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def engine_violations(graph: dict[str, set[str]], package: str = "paddle_models",
                      families=FAMILIES) -> list[str]:
    """``engine -> x`` edges where ``x`` is a family package (or inside one) or the tool layer (``cli``,
    ``commands`` and its modules)."""
    forbidden = [f"{package}.{f}" for f in families + TOOL_LAYER]
    bad = []
    for mod, deps in sorted(graph.items()):
        if mod != f"{package}.engine" and not mod.startswith(f"{package}.engine."):
            continue
        for d in sorted(deps):
            if any(d == f or d.startswith(f + ".") for f in forbidden):
                bad.append(f"{mod} -> {d}")
    return bad


def format_graph(graph: dict[str, set[str]]) -> str:
    return "\n".join(f"{m} -> {', '.join(sorted(d)) if d else '(none)'}" for m, d in sorted(graph.items()))
