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
