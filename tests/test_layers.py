"""Layers import downward only: cli -> analysis -> run -> codecs -> data -> metrics, and no cycles.

The layers are benchmark's sub-packages (benchmark/analysis, run, codecs, data), baselines/ (codecs) and metrics/.

The import graph is read from the source (ast over every file of benchmark/, baselines/ and metrics/, imports
inside functions included: they couple modules as much as those at the top), so a new module must be given a
layer here, and an upward import or a cycle fails with the modules named.
"""

import ast
import itertools
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("benchmark", "metrics", "baselines")
# Highest first. baselines/ are codecs; metrics/ is the floor and imports nothing of cmcbench but itself.
LAYERS = {
    "cli": ["benchmark.cli"],
    "analysis": ["benchmark.analysis"],
    "run": ["benchmark.run", "benchmark.results"],  # benchmark.results: run.results at its first address
    "codecs": ["benchmark.codecs", "benchmark.codec", "baselines"],  # benchmark.codec: the protocol's first address
    "data": ["benchmark.data"],
    "package": ["benchmark"],  # benchmark/__init__.py: the version
    "metrics": ["metrics"],
}
RANK = {name: rank for rank, name in enumerate(reversed(LAYERS))}


def layer_of(module: str) -> str | None:
    """The layer of a module: its own entry, else its package's (benchmark.run.worker is in benchmark.run's);
    the package `benchmark` itself holds only its __init__."""
    for name, members in LAYERS.items():
        if module in members or any(module.startswith(m + ".") for m in members if m != "benchmark"):
            return name
    return None


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the cmcbench modules it imports, anywhere in its file."""
    files = {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    graph = {}
    for module, path in files.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:  # `from benchmark import bootstrap` names a module
                    full = f"{node.module}.{alias.name}"
                    targets.add(full if full in files else node.module)
            elif isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
        graph[module] = {t for t in targets if t in files and t != module}
    return graph


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Imports from a lower layer into a higher one, from metrics into anything else, and modules with no layer
    (a module straight under benchmark/ other than the command line and the two first addresses)."""
    out = []
    for module, targets in sorted(graph.items()):
        mine = layer_of(module)
        if mine is None:
            out.append(f"{module} has no layer: add it to LAYERS in tests/test_layers.py")
            continue
        for target in sorted(targets):
            theirs = layer_of(target)
            if theirs is None:
                continue  # reported as its own module
            if RANK[theirs] > RANK[mine] or (mine == "metrics" and theirs != "metrics"):
                out.append(f"{module} ({mine}) imports {target} ({theirs})")
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = itertools.count()

    def visit(v):
        index[v] = low[v] = next(counter)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_checker_finds_a_cycle_an_upward_import_and_metrics_importing_benchmark():
    graph = {"benchmark.codec": {"benchmark.run.runner"}, "benchmark.run.runner": {"benchmark.codec"},
             "metrics.fid": {"benchmark.results"}, "benchmark.results": set(), "benchmark.newthing": set()}
    assert cycles(graph) == [["benchmark.codec", "benchmark.run.runner"]]
    assert violations(graph) == ["benchmark.codec (codecs) imports benchmark.run.runner (run)",
                                 "benchmark.newthing has no layer: add it to LAYERS in tests/test_layers.py",
                                 "metrics.fid (metrics) imports benchmark.results (run)"]


def test_layers_import_downward_only_and_nothing_is_a_cycle():
    graph = import_graph()
    assert len(graph) > 50 and graph["benchmark.cli"]  # the whole source was read
    assert cycles(graph) == []
    assert violations(graph) == []
