"""The module dependency picture: no import circle inside a package, and packages import one way.

Read from the source with `ast` (every `import`, deferred ones inside functions included, since a
deferred import is still a dependency); only imports under `if TYPE_CHECKING:` are left out, as they
never run. Rule (docs: DESIGN.md): coda_lsp → coda_model, coda_train → coda_model, coda_bench → any;
coda_model imports none of them; the default model's recipe scripts are coda_train's and follow its rule.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"coda_model": "model", "coda_lsp": "coda_lsp", "coda_train": "train", "coda_bench": "benchmarks"}
ALLOWED = {"coda_model": set(), "coda_lsp": {"coda_model"}, "coda_train": {"coda_model"},
           "coda_bench": {"coda_model", "coda_lsp", "coda_train"}}


def _modules() -> dict[str, Path]:
    """Every module of the four packages (recipes included: `coda_train.recipes.…`), name -> file."""
    out = {}
    for name, folder in PACKAGES.items():
        base = ROOT / folder
        for path in base.rglob("*.py"):
            rel = path.relative_to(base).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([name, *parts])] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or \
        (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imported(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The project modules `module` imports (a `from pkg import name` counts `pkg.name` when it is a module)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                pkg = ".".join(base + ([node.module] if node.module else []))
            else:
                pkg = node.module or ""
            for a in node.names:
                found.add(f"{pkg}.{a.name}" if f"{pkg}.{a.name}" in known else pkg)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    out = set()
    for name in found:   # `import coda_lsp.http.app` -> the deepest project module it names
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name and name != module:
            out.add(name)
    return out


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {m: _imported(ast.parse(p.read_text(encoding="utf-8")), m, p.name == "__init__.py", known)
            for m, p in mods.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_circle_finder_finds_a_circle_and_passes_a_line():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_graph_sees_deferred_and_relative_imports(tmp_path):
    tree = ast.parse("from . import b\ndef f():\n    from coda_lsp.c import x\nif TYPE_CHECKING:\n    import coda_lsp.d\n")
    known = {"coda_lsp", "coda_lsp.a", "coda_lsp.b", "coda_lsp.c", "coda_lsp.d"}
    assert _imported(tree, "coda_lsp.a", False, known) == {"coda_lsp.b", "coda_lsp.c"}


@pytest.mark.parametrize("package", ["coda_lsp", "coda_model", "coda_train"])
def test_no_import_circle_inside_the_package(package):
    graph = {m: {d for d in deps if d.split(".")[0] == package}
             for m, deps in import_graph().items() if m.split(".")[0] == package}
    assert circles(graph) == []


def test_packages_import_in_the_one_direction():
    wrong = sorted(f"{m} imports {d}" for m, deps in import_graph().items() for d in deps
                   if d.split(".")[0] != m.split(".")[0] and d.split(".")[0] not in ALLOWED[m.split(".")[0]])
    assert wrong == []


def test_recipes_are_in_the_graph():
    assert any(m.startswith("coda_train.recipes.") for m in import_graph())
