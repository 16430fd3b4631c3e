"""The ``local`` executor: each cell a new interpreter on this machine, started when its record is asked
for (one at a time, so cells never share the machine)."""

from __future__ import annotations

from pathlib import Path

from bench.cells.contract import CellSpec
from bench.launch.executor import Executor, Handle, register_executor
from bench.launch.process import launch_cell
from bench.launch.revisions import REPO_ROOT


class LocalExecutor:
    def submit(self, spec: CellSpec, cell_dir: Path, code_root: Path = REPO_ROOT) -> Handle:
        return lambda: launch_cell(spec, cell_dir, code_root)

    def close(self) -> None:
        return None


@register_executor("local")
def local_executor(options: dict[str, str], run_dir: Path) -> Executor:
    return LocalExecutor()
