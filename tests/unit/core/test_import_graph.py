"""No import cycles under dscore/ (issue 7, section 7: "a test fails if any import cycle appears").

The graph is built statically from every module's source: every `import` and `from ... import`
anywhere in a file counts, inside functions and `if TYPE_CHECKING:` blocks too, since a cycle held
together by a deferred import is still two modules that cannot be understood (or layered) apart.
`from a.b import c` points at the module `a.b.c` if there is one, else at `a.b`. Importing `a.b.c` also
runs the `__init__` of `a` and `a.b`, but those are not edges: each package whose `__init__` re-exports
a submodule would otherwise form a cycle with it.

Cycles are the strongly connected components of the graph (Tarjan); a failure names each cycle as a path
of imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

import dscore

PACKAGE_ROOT = Path(dscore.__file__).parent
#: the simulator's modules, which form one known cycle that another change removes
SIMULATOR = "dscore.sim"


def module_index(root: Path, package: str) -> dict[str, Path]:
    """Module name -> source file, for every module of the package rooted at `root`."""
    index = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        index[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return index


def import_graph(root: Path, package: str = "dscore") -> dict[str, set[str]]:
    """Module -> the package's modules it imports (anywhere in its source)."""
    index = module_index(root, package)

    def nearest(name: str) -> str | None:
        while name and name not in index:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in index.items():
        own_package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        targets: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(nearest(alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = own_package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    source = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    source = node.module or ""
                for alias in node.names:
                    submodule = f"{source}.{alias.name}"
                    targets.add(submodule if submodule in index else nearest(source))
        graph[module] = {t for t in targets if t is not None and t != module}
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """The components with more than one module (Tarjan's algorithm, iterative), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph.get(succ, ())))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
    return components


def cycle_path(graph: dict[str, set[str]], component: list[str]) -> str:
    """One concrete cycle through the component, as `a -> b -> a` (shortest from its first module)."""
    members = set(component)
    start = component[0]
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for succ in sorted(graph[node] & members):
                if succ == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return " -> ".join([start, *reversed(path[:-1]), start]) if len(path) > 1 else start
                if succ not in previous:
                    previous[succ] = node
                    following.append(succ)
        frontier = following
    raise AssertionError("not a cycle")


def describe(graph: dict[str, set[str]], components: list[list[str]]) -> str:
    return "\n".join(f"{len(c)} modules, e.g. {cycle_path(graph, c)}" for c in components)


def in_simulator(module: str) -> bool:
    return module == SIMULATOR or module.startswith(SIMULATOR + ".")


GRAPH = import_graph(PACKAGE_ROOT)
COMPONENTS = strongly_connected(GRAPH)


def test_the_graph_sees_real_imports() -> None:
    assert "dscore.core.codec" in GRAPH["dscore.protocols.raft.node"]
    assert "dscore.core.errors" in GRAPH["dscore.core.codec"]
    assert len(GRAPH) >= 50


def test_no_import_cycle_outside_the_simulator() -> None:
    # A cycle that reaches outside dscore.sim (or lies wholly outside it) fails here.
    outside = [c for c in COMPONENTS if not all(in_simulator(m) for m in c)]
    assert not outside, "import cycles:\n" + describe(GRAPH, outside)


def test_no_import_cycle_in_the_simulator() -> None:
    inside = [c for c in COMPONENTS if all(in_simulator(m) for m in c)]
    assert not inside, "import cycles in the simulator:\n" + describe(GRAPH, inside)


def write_package(root: Path, files: dict[str, str]) -> Path:
    package = root / "pkg"
    for name, source in files.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return package


def test_the_checker_finds_a_planted_cycle(tmp_path: Path) -> None:
    package = write_package(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "def later():\n    from pkg import b\n",  # inside a function
            "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .sub.c import X\n",
            "sub/__init__.py": "",
            "sub/c.py": "import pkg.a as a\nX = 1\n",  # and back: a -> b -> sub.c -> a
            "d.py": "from pkg.a import later\n",  # points into the cycle, is not part of it
        },
    )
    graph = import_graph(package, "pkg")
    assert graph["pkg.b"] == {"pkg.sub.c"} and graph["pkg.d"] == {"pkg.a"}
    components = strongly_connected(graph)
    assert components == [["pkg.a", "pkg.b", "pkg.sub.c"]]
    assert describe(graph, components) == "3 modules, e.g. pkg.a -> pkg.b -> pkg.sub.c -> pkg.a"


def test_the_checker_finds_no_cycle_where_there_is_none(tmp_path: Path) -> None:
    package = write_package(
        tmp_path,
        {
            "__init__.py": "from pkg.a import f\n",  # a package re-exporting its submodule is no cycle
            "a.py": "import pkg.b\ndef f():\n    import pkg.b as again\n",
            "b.py": "import json\n",
        },
    )
    assert strongly_connected(import_graph(package, "pkg")) == []
