"""The layers: trainer_core <- bench libraries <- CLIs. Checked on the import graph, statically and at run time."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from conftest import REPO

CORE = sorted((REPO / "trainer_core").glob("*.py"))


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports included)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def test_trainer_core_never_imports_bench() -> None:
    for path in CORE:
        bad = sorted(m for m in imported_modules(path) if m == "bench" or m.startswith("bench."))
        assert not bad, f"{path.name} imports {bad}"
    # and at run time: importing every trainer_core module loads nothing of bench
    modules = ", ".join(f"trainer_core.{p.stem}" for p in CORE if p.stem != "__init__")
    code = f"import sys, {modules}; print(sorted(m for m in sys.modules if m == 'bench' or m.startswith('bench.')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


BENCH = sorted((REPO / "bench").glob("*.py"))
# A CLI module is one `python -m` runs; it only parses, builds, runs and closes (torchtitan's train.py).
CLI_MODULES = {f"bench.{p.stem}" for p in BENCH if 'if __name__ == "__main__":' in p.read_text()}
# Read results, format and compute statistics: these start without torch (bench.compare well under a second).
LIGHT = [
    "bench.compare",
    "bench.comparison",
    "bench.report",
    "bench.trace",
    "bench.trace_analysis",
    "bench.stats",
    "bench.contract",
    "bench.launcher",
    "bench.tune_report",
    "bench.history_db",
    "bench.abtest",
    "bench.ab_report",
    "bench.pytest_bench",
    "bench.revisions",
    "bench.html_report",
    "bench.html_figures",
]


def bench_imports(path: Path) -> set[str]:
    """bench modules ``path`` imports, with ``from bench import x`` read as ``bench.x``."""
    out = {m for m in imported_modules(path) if m.startswith("bench.")}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "bench":
            out |= {f"bench.{a.name}" for a in node.names}
    return out


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
        "guard_audit",
        "ab",
        "history",
    }
    assert {f"bench.{n}" for n in expected} <= CLI_MODULES


def test_no_module_imports_a_cli_module() -> None:
    for path in BENCH + CORE:
        bad = sorted(bench_imports(path) & CLI_MODULES)
        assert not bad, f"{path.relative_to(REPO)} imports the CLI module(s) {bad}: move what it needs into a library"


def test_cli_modules_only_parse_build_run_close() -> None:
    for name in CLI_MODULES:
        tree = ast.parse((REPO / "bench" / f"{name.split('.')[1]}.py").read_text())
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
    for path in BENCH + CORE:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long.append(
                    f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
                )
    assert not long, long
