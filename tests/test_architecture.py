"""The layers: trainer_core <- bench libraries <- CLIs, and no import cycle anywhere. Checked on the whole
import graph (function-level and type-only imports included), statically and at run time."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from conftest import REPO

PACKAGES = ("trainer_core", "bench")


def module_name(path: Path) -> str:
    """``bench/run/__main__.py`` -> ``bench.run.__main__``; ``bench/run/__init__.py`` -> ``bench.run``."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


FILES = {module_name(p): p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))}
CORE = {m: p for m, p in FILES.items() if m.split(".")[0] == "trainer_core"}
BENCH = {m: p for m, p in FILES.items() if m.split(".")[0] == "bench"}
# A CLI module is one `python -m` runs: a command package's __main__; it only parses, builds, runs and closes
# (torchtitan's train.py).
CLI_MODULES = {m for m in BENCH if m.endswith(".__main__")}
# Read results, format and compute statistics: these start without torch (bench.compare well under a second).
LIGHT = [
    "bench.compare.__main__",
    "bench.compare.comparison",
    "bench.report.tables",
    "bench.trace.__main__",
    "bench.trace.analysis",
    "bench.stats",
    "bench.cells.contract",
    "bench.cells.store",
    "bench.launch.process",
    "bench.launch.server",
    "bench.launch.revisions",
    "bench.launch.pytest_bench",
    "bench.tune.report",
    "bench.history.db",
    "bench.paired.engine",
    "bench.paired.result",
    "bench.ab.report",
    "bench.report.html",
    "bench.report.figures",
    "bench.report.inference",
    "bench.cells.inference",
    "bench.export.report",
    "bench.fit.search",
    "bench.fit.report",
]


def imports(path: Path) -> set[str]:
    """The project modules ``path`` imports, at any depth (function-level and ``TYPE_CHECKING`` imports
    included); ``from pkg import name`` is the module ``pkg.name`` when there is one."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = {f"{node.module}.{a.name}" for a in node.names} & FILES.keys()
            out |= subs or {node.module}
    return {m for m in out if m.split(".")[0] in PACKAGES}


GRAPH = {m: imports(p) - {m} for m, p in FILES.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def test_the_cycle_finder_finds_cycles() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_no_import_cycle_anywhere() -> None:
    found = cycles(GRAPH)
    assert not found, f"import cycles (function-level imports counted): {found}"


def test_the_graph_sees_function_level_imports() -> None:
    # bench.ab's CLI reaches the history database only inside a function (a light start): the graph has the edge.
    assert "bench.history.db" in GRAPH["bench.ab.__main__"]
    assert GRAPH["bench.measure.ranks"] >= {"bench.measure.cell"}


def test_trainer_core_never_imports_bench() -> None:
    for name in CORE:
        bad = sorted(m for m in GRAPH[name] if m.split(".")[0] == "bench")
        assert not bad, f"{name} imports {bad}"
    # and at run time: importing every trainer_core module loads nothing of bench
    modules = ", ".join(m for m in CORE if m != "trainer_core")
    code = f"import sys, {modules}; print(sorted(m for m in sys.modules if m == 'bench' or m.startswith('bench.')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_cli_modules_are_the_commands() -> None:
    expected = {
        "run",
        "tune",
        "compare",
        "trace",
        "train",
        "evaluate",
        "recipe_race",
        "overhead",
        "cell",
        "cell_server",
        "guard_audit",
        "ab",
        "history",
        "prepare_text",
        "export",
        "fit",
    }
    assert {f"bench.{n}.__main__" for n in expected} == CLI_MODULES


def test_bench_has_few_files_at_its_top() -> None:
    top = sorted(p.name for p in (REPO / "bench").glob("*.py"))
    assert len(top) <= 12, top


def test_no_module_imports_a_cli_module() -> None:
    for name in FILES:
        bad = sorted(GRAPH[name] & CLI_MODULES)
        assert not bad, f"{name} imports the CLI module(s) {bad}: move what it needs into a library"


def test_cli_modules_only_parse_build_run_close() -> None:
    for name in CLI_MODULES:
        tree = ast.parse(FILES[name].read_text())
        defs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        extra = [
            n.name
            for n in defs
            if isinstance(n, ast.ClassDef)
            or not (n.name in ("build_parser", "main", "cli") or n.name.startswith("resolve_"))
        ]
        assert not extra, f"{name} defines {extra}: library code belongs in a library module"


def test_reading_and_formatting_results_imports_no_torch() -> None:
    code = f"import sys, {', '.join(LIGHT)}; print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_no_function_is_longer_than_sixty_lines() -> None:
    long = []
    for path in FILES.values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long.append(
                    f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
                )
    assert not long, long
