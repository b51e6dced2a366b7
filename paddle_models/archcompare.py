"""Compare a live Paddle module tree with a printed one, node by node.

Both sides are parsed from Paddle's ``repr`` format::

    NetWork(
      (ernie): ErnieMModel(
        (embeddings): ErnieMEmbeddings(
          (word_embeddings): Embedding(250002, 768, sparse=False)

into nodes ``(path, type, attributes)``. Differences are reported by module path: a missing or an
unexpected subtree (once, at its top), a changed layer type, a changed attribute, a changed child
order. Attributes that newer Paddle versions add to a repr with their default value are normalized
(removed where only one side has them) and listed, never hidden.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

#: (layer type, attribute, default value) that a Paddle version may add to the repr.
NORMALIZABLE = (
    ("Embedding", "scale_grad_by_freq", "False"),
    ("Embedding", "dtype", "paddle.float32"),
    ("Dropout", "inplace", "False"),
    ("ReLU", "inplace", "False"),
)

_LINE = re.compile(r"^(?P<indent>\s*)\((?P<name>[^()]+)\): (?P<type>[A-Za-z_][\w.]*)\((?P<rest>.*)$")
_ROOT = re.compile(r"^(?P<type>[A-Za-z_][\w.]*)\((?P<rest>.*)$")


@dataclass
class Node:
    path: str
    type: str
    attrs: list[str]
    line: int
    children: list[str] = field(default_factory=list)


def split_args(text: str) -> list[str]:
    """Split ``a, b=[1, 2], c=(1, 1)`` at top-level commas."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def parse_tree(text: str, source: str = "<print>") -> dict[str, Node]:
    """Parse a printed module tree into ``{path: Node}`` (root path ``""``), in print order."""
    lines = [ln.rstrip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln.strip()]
    if not lines:
        raise ValueError(f"{source}: empty module print")
    m = _ROOT.match(lines[0].strip())
    if not m:
        raise ValueError(f"{source}: line 1: expected 'TypeName(' to start the print, got {lines[0]!r}")
    nodes: dict[str, Node] = {}
    rest = m.group("rest")
    root_args = rest[:-1] if rest.endswith(")") else rest
    nodes[""] = Node("", m.group("type"), split_args(root_args), 1)
    stack: list[tuple[int, str]] = [(-1, "")]  # (indent, path) of open containers
    for i, ln in enumerate(lines[1:], start=2):
        if ln.strip() == ")":
            indent = len(ln) - len(ln.lstrip())
            while stack and stack[-1][0] >= indent:
                stack.pop()
            continue
        mm = _LINE.match(ln)
        if not mm:
            raise ValueError(f"{source}: line {i}: cannot parse {ln.strip()!r}")
        indent = len(mm.group("indent"))
        while len(stack) > 1 and stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1]
        path = f"{parent}.{mm.group('name')}" if parent else mm.group("name")
        rest = mm.group("rest")
        is_leaf = rest.endswith(")") and _balanced(rest[:-1])
        args = rest[:-1] if is_leaf else rest
        nodes[path] = Node(path, mm.group("type"), split_args(args), i)
        nodes[parent].children.append(path)
        if not is_leaf:
            stack.append((indent, path))
    return nodes


def _balanced(s: str) -> bool:
    d = 0
    for ch in s:
        d += ch in "([{"
        d -= ch in ")]}"
        if d < 0:
            return False
    return d == 0


def _normalize(type_: str, exp: list[str], got: list[str], applied: dict[str, int]):
    exp, got = list(exp), list(got)
    for t, key, default in NORMALIZABLE:
        if t != type_:
            continue
        item = f"{key}={default}"
        if (item in exp) != (item in got):
            (exp if item in exp else got).remove(item)
            tag = f"{t}: {item}"
            applied[tag] = applied.get(tag, 0) + 1
    return exp, got


def compare_trees(expected: dict[str, Node], found: dict[str, Node]):
    """Return (differences, normalized): differences as (path, expected, found) triples."""
    diffs: list[tuple[str, str, str]] = []
    applied: dict[str, int] = {}

    def walk(path: str):
        e, f = expected[path], found[path]
        shown = path or "<root>"
        if e.type != f.type:
            diffs.append((shown, f"type {e.type}", f"type {f.type}"))
        else:
            ea, fa = _normalize(e.type, e.attrs, f.attrs, applied)
            if ea != fa:
                diffs.append((shown, f"{e.type}({', '.join(ea)})", f"{f.type}({', '.join(fa)})"))
        e_kids, f_kids = e.children, f.children
        for c in e_kids:
            if c not in found:
                diffs.append((c, f"{expected[c].type} (print line {expected[c].line})", "missing"))
        for c in f_kids:
            if c not in expected:
                diffs.append((c, "absent", f"{found[c].type}"))
        common_e = [c for c in e_kids if c in found]
        common_f = [c for c in f_kids if c in expected]
        if common_e != common_f:
            diffs.append((shown, "children " + ", ".join(x.rsplit(".", 1)[-1] for x in common_e),
                          "children " + ", ".join(x.rsplit(".", 1)[-1] for x in common_f)))
        for c in common_e:
            walk(c)

    walk("")
    normalized = [f"{k} (x{v})" for k, v in sorted(applied.items())]
    return diffs, normalized


def count_parameters(model) -> int:
    import numpy as np

    return int(sum(int(np.prod(p.shape)) for p in model.parameters()))


def compare_model(model, printed_text: str, printed_source: str = "<print>"):
    expected = parse_tree(printed_text, printed_source)
    found = parse_tree(str(model), "<live model>")
    diffs, normalized = compare_trees(expected, found)
    return {"differences": diffs, "normalized": normalized, "parameters": count_parameters(model),
            "expected_nodes": len(expected), "found_nodes": len(found)}


#: readable names for positional containers (the ResNet trunk is a Sequential of paddle.vision children)
ALIASES = {"resnet.resnet.0": "conv1", "resnet.resnet.1": "bn1", "resnet.resnet.4": "layer1",
           "resnet.resnet.5": "layer2", "resnet.resnet.6": "layer3", "resnet.resnet.7": "layer4"}


def alias(path: str) -> str:
    for prefix, name in ALIASES.items():
        if path == prefix or path.startswith(prefix + "."):
            return name + path[len(prefix):]
    return ""


def format_report(result: dict, max_lines: int | None = 200) -> str:
    out = []
    for path, exp, got in result["differences"][:max_lines]:
        a = alias(path)
        out.append(f"DIFF {path}{f' ({a})' if a else ''}\n     expected: {exp}\n     found:    {got}")
    if max_lines is not None and len(result["differences"]) > max_lines:
        out.append(f"... {len(result['differences']) - max_lines} more differences")
    for n in result["normalized"]:
        out.append(f"normalized: {n}")
    out.append(f"nodes: expected {result['expected_nodes']}, found {result['found_nodes']}")
    out.append(f"parameters: {result['parameters']:,}")
    out.append(f"differences: {len(result['differences'])}")
    return "\n".join(out)
