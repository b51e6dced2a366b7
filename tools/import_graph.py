#!/usr/bin/env python
"""Print the import graph of paddle_models (module -> modules it imports, one line each) and check it.

    python tools/import_graph.py [--check] [--json]

``--check`` exits 1 when a module of ``engine/`` imports a family package or ``cli``, or when any import
cycle exists (imports inside functions count).
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from paddle_models.cli import add_debug_flag, run_tool  # noqa: E402
from paddle_models.importgraph import engine_violations, find_cycles, format_graph, import_graph  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 on an engine -> family/cli edge or a cycle")
    p.add_argument("--json", action="store_true", help="print one JSON object with the results as the last line")
    add_debug_flag(p)
    args = p.parse_args()
    graph = import_graph(os.path.join(ROOT, "paddle_models"))
    print(format_graph(graph))
    bad, cycles = engine_violations(graph), find_cycles(graph)
    print(f"\nengine -> family/cli edges: {len(bad)}" + "".join(f"\n  {b}" for b in bad))
    print(f"import cycles: {len(cycles)}" + "".join(f"\n  {' <-> '.join(c)}" for c in cycles))
    if args.json:
        import json

        print(json.dumps({"modules": len(graph), "engine_violations": bad, "cycles": cycles}))
    return 1 if args.check and (bad or cycles) else 0


if __name__ == "__main__":
    run_tool(main)
