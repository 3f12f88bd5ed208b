"""No import circles among bayesalign's modules, read from the source with `ast`.

Two graphs, each with an edge A → B for an import of B in A:
- the imports that run when A is imported (module level, class bodies, ``try``/``if`` blocks; not
  inside functions, which are the lazy ones, nor under ``if TYPE_CHECKING:``). A circle here can
  break an import outright; there must be none.
- every import, lazy and TYPE_CHECKING ones too: the dependencies as a reader sees them. A lazy
  import can hide a circle from Python, not from the design; the known ones are listed below.
Importing ``bayesalign.p.m`` also runs the ``__init__`` of package ``bayesalign.p``, so that is an
edge too (except towards the importer's own packages, which are already being imported). A circle
is a strongly connected component of more than one module.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).parent.parent / "src"

# Circles of the full graph (lazy and TYPE_CHECKING imports included) that exist today, to be
# removed (issue 16). The test fails on any other circle, and on an entry here that is no longer a
# circle, so that this list only shrinks.


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def all_imports(body: list[ast.stmt]) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement of a module whose top level is ``body``."""
    module = ast.Module(body=body, type_ignores=[])
    return [node for node in ast.walk(module) if isinstance(node, ast.Import | ast.ImportFrom)]


def eager_imports(body: list[ast.stmt]) -> list[ast.Import | ast.ImportFrom]:
    """The import statements that run when a module whose top level is ``body`` is imported."""
    found: list[ast.Import | ast.ImportFrom] = []
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If):
            if not is_type_checking(node.test):
                found += eager_imports(node.body)
            found += eager_imports(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, *(h.body for h in node.handlers), node.orelse, node.finalbody):
                found += eager_imports(block)
        elif isinstance(node, ast.With | ast.ClassDef):
            found += eager_imports(node.body)
    return found


def import_graph(lazy: bool = False) -> dict[str, set[str]]:
    """Module → the bayesalign modules its import runs (``lazy``: that it imports anywhere)."""
    files = {module_name(p): p for p in (SRC / "bayesalign").rglob("*.py")}
    packages = {module_name(p) for p in (SRC / "bayesalign").rglob("__init__.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if name in packages else name.rpartition(".")[0]
        targets: set[str] = set()
        imports = all_imports if lazy else eager_imports
        for node in imports(ast.parse(path.read_text(encoding="utf-8")).body):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
                continue
            base = node.module or ""
            if node.level:  # relative: from .x import y
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets.add(base)
            targets |= {f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in files}
        own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}
        edges = set()
        for target in targets:
            parts = target.split(".")
            for i in range(1, len(parts) + 1):  # the module and the packages above it
                step = ".".join(parts[:i])
                if step in files and step not in own:
                    edges.add(step)
        graph[name] = edges
    return graph


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                found.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_the_imports_that_run():
    graph = import_graph()
    assert "bayesalign.config.scorers" in graph["bayesalign.pretraining.config"]
    assert "bayesalign.config" in graph["bayesalign.pretraining.config"]  # its __init__ runs too
    assert "bayesalign.torch" not in graph["bayesalign.models"]  # only bayesalign's own modules
    assert "bayesalign.config.sections" not in graph["bayesalign.commands"]  # TYPE_CHECKING and lazy ones
    assert "bayesalign.config.sections" in import_graph(lazy=True)["bayesalign.commands"]
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


def test_no_import_circles_at_import_time():
    found = [sorted(c) for c in circles(import_graph())]
    assert not found, f"import circles among bayesalign's modules: {found}"


def test_no_import_circles_counting_lazy_and_type_checking_imports():
    """Stricter than the test above: an import inside a function (kept lazy for a fast CLI) or
    under TYPE_CHECKING still says which module depends on which, so it must not close a circle
    either (the checkpoint once reached into the trainer; targets and moments once imported
    each other)."""
    found = [sorted(c) for c in circles(import_graph(lazy=True))]
    assert not found, f"import circles among bayesalign's modules: {found}"


def test_the_scorer_schema_imports_no_more_of_the_config():
    """pretraining/config.py imports the scorer schema; that must not load the training config."""
    graph = import_graph()
    reached, todo = set(), ["bayesalign.pretraining.config"]
    while todo:
        for nxt in graph[todo.pop()] - reached:
            reached.add(nxt)
            todo.append(nxt)
    config = {m for m in reached if m.startswith("bayesalign.config")}
    assert config == {"bayesalign.config", "bayesalign.config.base", "bayesalign.config.scorers"}


def test_the_config_entry_points_are_imported_one_way():
    """`Config`, `ConfigError`, `load_config`, ... come from ``bayesalign.config``; everything
    else from the module of the config package where it lives."""
    import bayesalign.config

    root = SRC.parent
    files = [  # not experiments/*/data/: corpora built there (the stdlib's .py files for PEP8) are data
        p
        for folder in ("src", "tests", "benchmarks", "experiments")
        for p in (root / folder).rglob("*.py")
        if "data" not in p.relative_to(root).parts
    ]
    wrong = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bayesalign.config."):
                names = {alias.name for alias in node.names} & set(bayesalign.config.__all__)
                if names and path.parent != SRC / "bayesalign" / "config":  # the package itself
                    wrong.append(f"{path.relative_to(root)}:{node.lineno} {sorted(names)}")
    assert not wrong, f"import these from bayesalign.config: {wrong}"
