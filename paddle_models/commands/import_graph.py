"""Print the import graph of paddle_models (module -> modules it imports, one line each) and check it.

    python tools/import_graph.py [--check] [--json]

``--check`` exits 1 when a module of ``engine/`` imports a family package or the tool layer (``cli``,
``commands``), or when any import cycle exists (imports inside functions count).
"""
import argparse
import json
import os

from ..cli import add_debug_flag
from ..importgraph import engine_violations, find_cycles, format_graph, import_graph

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parser(prog=None):
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 on an engine -> family/cli edge or a cycle")
    p.add_argument("--json", action="store_true", help="print one JSON object with the results as the last line")
    add_debug_flag(p)
    return p


def main(argv=None, prog=None):
    args = parser(prog).parse_args(argv)
    graph = import_graph(PACKAGE_DIR)
    print(format_graph(graph))
    bad, cycles = engine_violations(graph), find_cycles(graph)
    print(f"\nengine -> family/cli edges: {len(bad)}" + "".join(f"\n  {b}" for b in bad))
    print(f"import cycles: {len(cycles)}" + "".join(f"\n  {' <-> '.join(c)}" for c in cycles))
    if args.json:
        print(json.dumps({"modules": len(graph), "engine_violations": bad, "cycles": cycles}))
    return 1 if args.check and (bad or cycles) else 0
