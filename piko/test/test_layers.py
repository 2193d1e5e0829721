"""
The package graph is a layered DAG: no cycle, no import from a higher layer, no private reach-in.

Read from the source with :mod:`ast` (nothing is imported), so an import inside a function or
under ``TYPE_CHECKING`` counts as much as one at the top: each still ties the two packages
together.  A *unit* is a subpackage of :mod:`piko` (``piko.http``) or a module directly in it
(``piko.net``); tests are left out.  :data:`LAYERS` is the order written down in
``docs/how-it-works.md``: a unit may import only units of the layers below its own, so the units'
graph has no cycle (checked apart all the same, to name the loop).  Across units, only public
names of public modules are imported (``piko.config._programs``, or ``_ConnectionFactory`` from
another package, is a reach-in).

Print the graph, layer by layer, with ``python -m piko.test.test_layers [ROOT]`` (``ROOT`` a
checkout, default this one).
"""

from __future__ import annotations

import ast
import re
import sys
from collections import defaultdict
from collections.abc import Iterator, Mapping
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

#: Bottom first.  Each line of ``docs/how-it-works.md``'s layer table is one entry.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("piko", "piko._deadlines", "piko._tcp", "piko._reactor", "piko.interfaces"),
    ("piko.net", "piko.splice", "piko.metrics"),
    ("piko.config",),
    ("piko.logging", "piko.tls"),
    ("piko.mux", "piko.http", "piko.ws"),
    ("piko.auth", "piko.client", "piko.cluster", "piko.run"),
    ("piko.inspect", "piko.policy"),
    ("piko.server", "piko.agent", "piko.forward"),
    ("piko._twistd", "piko._tap_exit", "piko.cli", "piko.demo"),
    ("piko._tap_server", "piko._tap_agent", "piko._tap_forward", "piko.__main__"),
)

HERE = Path(__file__).resolve().parents[2]


def _modules(root: Path) -> Iterator[tuple[str, Path]]:
    """Each non-test module of ``root``'s ``piko`` package: its dotted name and its path."""
    for path in sorted((root / "piko").rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if "test" in parts[1:]:
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def unit_of(module: str) -> str:
    """``piko.http.pool`` -> ``piko.http``; ``piko.net`` -> ``piko.net``; ``piko`` -> ``piko``."""
    return ".".join(module.split(".")[:2])


def imports(root: Path) -> dict[str, set[tuple[str, str | None]]]:
    """
    Module -> each ``(module, name)`` of piko it imports (``name`` is ``None`` for ``import x``).

    ``from piko.http import pool`` is recorded as the module ``piko.http.pool`` when ``pool`` is a
    submodule, so that it counts against the module it names.
    """
    modules = dict(_modules(root))
    found: dict[str, set[tuple[str, str | None]]] = defaultdict(set)
    for module, path in modules.items():
        found[module] = set()
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "piko":
                        found[module].add((alias.name, None))
            elif isinstance(node, ast.ImportFrom):
                target = node.module or ""
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    target = ".".join([*base, *([target] if target else [])])
                if target.split(".")[0] != "piko":
                    continue
                for alias in node.names:
                    if f"{target}.{alias.name}" in modules:
                        found[module].add((f"{target}.{alias.name}", None))
                    else:
                        found[module].add((target, alias.name))
    return found


def unit_graph(found: Mapping[str, set[tuple[str, str | None]]]) -> dict[str, set[str]]:
    """Unit -> the other units it imports."""
    graph: dict[str, set[str]] = defaultdict(set)
    for module, targets in found.items():
        graph[unit_of(module)]
        for target, _ in targets:
            if unit_of(target) != unit_of(module):
                graph[unit_of(module)].add(unit_of(target))
    return graph


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one unit (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def layer_of(unit: str) -> int | None:
    """The index in :data:`LAYERS` of ``unit``, ``None`` if it is in no layer."""
    for number, layer in enumerate(LAYERS):
        if unit in layer:
            return number
    return None


def violations(found: Mapping[str, set[tuple[str, str | None]]]) -> list[str]:
    """Each import that goes up a layer or reaches into another unit's private parts."""
    problems = []
    for module, targets in sorted(found.items()):
        mine = unit_of(module)
        for target, name in sorted(targets, key=lambda t: (t[0], t[1] or "")):
            theirs = unit_of(target)
            if theirs == mine:
                continue
            what = f"{target}.{name}" if name else target
            if (layer_of(theirs) or 0) >= (layer_of(mine) or 0):
                problems.append(f"{module} imports {what}: {theirs} is not below {mine}")
            private = [part for part in target.split(".")[2:] if part.startswith("_")]
            if private or (name is not None and name.startswith("_") and name != "__version__"):
                problems.append(f"{module} imports {what}: private to {theirs}")
    return problems


def describe(root: Path) -> str:
    """The units, top layer first, each with what it imports; then any cycle."""
    graph = unit_graph(imports(root))
    lines = []
    for number in reversed(range(len(LAYERS))):
        for unit in LAYERS[number]:
            if unit in graph:
                lines.append(f"{number}  {unit} -> {', '.join(sorted(graph[unit])) or '-'}")
    for unit in sorted(set(graph) - {u for layer in LAYERS for u in layer}):
        lines.append(f"?  {unit} -> {', '.join(sorted(graph[unit])) or '-'}")
    for component in cycles(graph):
        lines.append("cycle: " + " <-> ".join(component))
    return "\n".join(lines) + "\n"


class LayerTests(SynchronousTestCase):
    """The real tree keeps to the layers; the checks catch what they are meant to."""

    def test_every_unit_has_a_layer(self) -> None:
        """A new package or top-level module must be given a layer (and a line in the docs)."""
        units = set(unit_graph(imports(HERE)))
        placed = {unit for layer in LAYERS for unit in layer}
        self.assertEqual(sorted(units - placed), [])
        self.assertEqual(sorted(placed - units), [])

    def test_no_cycle(self) -> None:
        """The packages' import graph has no cycle."""
        self.assertEqual(cycles(unit_graph(imports(HERE))), [])

    def test_no_layer_violation(self) -> None:
        """No package imports one of its own layer or above, or another's private module or name."""
        self.assertEqual(violations(imports(HERE)), [])

    def test_written_down(self) -> None:
        """``docs/how-it-works.md``'s layer table names the units of each layer, as here."""
        docs = HERE / "docs" / "how-it-works.md"
        if not docs.exists():
            raise SkipTest("docs/ is not next to this checkout")
        table = {}
        for line in docs.read_text().splitlines():
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if len(cells) == 3 and cells[0].isdigit():
                table[int(cells[0])] = set(re.findall(r"`([\w.]+)`", cells[1]))
        self.assertEqual(table, {number: set(layer) for number, layer in enumerate(LAYERS)})

    def test_catches_a_cycle(self) -> None:
        """Two units importing each other, even through a third, are a cycle."""
        graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
        self.assertEqual(cycles(graph), [["a", "b", "c"]])
        self.assertEqual(cycles({"a": {"b"}, "b": set()}), [])

    def test_catches_an_upward_import(self) -> None:
        """The import that made ``server`` and ``agent`` a cycle is an upward one, and private."""
        found: dict[str, set[tuple[str, str | None]]] = {
            "piko.http.pool": {("piko.server.metrics", "SIZE_BUCKETS")},
            "piko.agent.metrics": {("piko.server.listening", "listen")},
            "piko.server.forwarding": {("piko.http.pool", "_ConnectionFactory")},
            "piko.cluster.service": {("piko.config._addr", "split_host_port")},
        }
        self.assertEqual(
            violations(found),
            [
                "piko.agent.metrics imports piko.server.listening.listen:"
                " piko.server is not below piko.agent",
                "piko.cluster.service imports piko.config._addr.split_host_port:"
                " private to piko.config",
                "piko.http.pool imports piko.server.metrics.SIZE_BUCKETS:"
                " piko.server is not below piko.http",
                "piko.server.forwarding imports piko.http.pool._ConnectionFactory:"
                " private to piko.http",
            ],
        )

    def test_reads_lazy_and_relative_imports(self) -> None:
        """Imports inside functions and relative ones are found too."""
        root = Path(self.mktemp())
        (root / "piko" / "a").mkdir(parents=True)
        (root / "piko" / "__init__.py").write_text("")
        (root / "piko" / "a" / "__init__.py").write_text("from . import b\n")
        (root / "piko" / "a" / "b.py").write_text("def f():\n    from piko.c import g\n")
        (root / "piko" / "c.py").write_text("import piko.a.b\n")
        found = imports(root)
        self.assertEqual(found["piko.a"], {("piko.a.b", None)})
        self.assertEqual(found["piko.a.b"], {("piko.c", "g")})
        self.assertEqual(found["piko.c"], {("piko.a.b", None)})
        self.assertEqual(cycles(unit_graph(found)), [["piko.a", "piko.c"]])


if __name__ == "__main__":
    sys.stdout.write(describe(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE))
