"""No import cycles in fractal_llm/ and nanochat/, imports inside functions included: a cycle hidden behind
an import in a function still ties two modules into one (neither can be understood, moved or tested alone).
The graph is read from the source with the ast module, so nothing is imported to build it."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fractal_llm", "nanochat")


def modules() -> dict[str, Path]:
    """{dotted name: file} of every module of the packages (a package's __init__ under the package's name)."""
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules `name` imports anywhere in its file (top level, functions, `if __name__` blocks)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from pkg import mod` imports the module pkg.mod; `from mod import thing`, the module mod
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import fractal_llm.x.y`: the longest known prefix
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imported(name, path, known) for name, path in known.items()}


def cycles(graph: dict[str, set[str]]) -> list[tuple[list[str], set[str]]]:
    """Each strongly connected component of more than one module (Tarjan): one of its cycles, as a path
    a -> b -> a, and all of its modules."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [(_cycle_in(graph, component), component) for component in components]


def _cycle_in(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first back to it)."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    return paths[v] + [start]
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start}")


def test_the_graph_sees_imports_inside_functions():
    graph = import_graph()
    assert "fractal_llm.train" in graph["fractal_llm.runners.local"]  # `from fractal_llm import train`, in a function
    assert "fractal_llm.cli" in graph["fractal_llm.runners.local"]  # in its `if __name__ == "__main__"` block
    assert "fractal_llm.errors" in graph["fractal_llm.config"]  # `from fractal_llm.errors import ...`


def test_cycles_are_found_and_named():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert cycles(graph) == [(["a", "b", "c", "a"], {"a", "b", "c"})]


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(
        f"  {' -> '.join(cycle)}  (all of: {', '.join(sorted(component))})" for cycle, component in found)


# Layers: what a package may not import. Plans (what to run, where it lives) and the worker pool sit below
# both the runners and the report, so the report and paper mode read them without depending on how points
# get run (docs/design.md, Layout).
FORBIDDEN = {
    "fractal_llm.report": ("fractal_llm.runners",),
    "fractal_llm.paper": ("fractal_llm.runners",),
    "fractal_llm.plans": ("fractal_llm.runners", "fractal_llm.report", "fractal_llm.paper"),
    "fractal_llm.pool": ("fractal_llm.runners", "fractal_llm.report", "fractal_llm.paper"),
}


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    return [f"{name} imports {target}" for name, targets in sorted(graph.items())
            for package, forbidden in FORBIDDEN.items() if _within(name, package)
            for target in sorted(targets) if any(_within(target, f) for f in forbidden)]


def test_layer_violations_are_found():
    graph = {"fractal_llm.report.sequence": {"fractal_llm.runners.zoom", "fractal_llm.plans.zoom"},
             "fractal_llm.runners.zoom": {"fractal_llm.plans.zoom"}, "fractal_llm.reports": {"fractal_llm.runners"}}
    assert layer_violations(graph) == ["fractal_llm.report.sequence imports fractal_llm.runners.zoom"]


def test_report_and_paper_do_not_import_the_runners():
    graph = import_graph()
    found = layer_violations(graph)
    assert not found, "imports against the layers:\n" + "\n".join(f"  {v}" for v in found)
    assert "fractal_llm.plans.zoom" in graph["fractal_llm.report.sequence"]  # the plan is read from below
