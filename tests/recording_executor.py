"""A user's executor, in one file: registered as ``recording``, it launches each cell as the forked
executor does (a child of a server that imported torch once) and writes a line per cell (its id and the
code root it ran) to ``recorded.txt`` in the run's folder.
``--executor recording_executor:recording`` imports this module (the tests folder is on the path)."""

from __future__ import annotations

from pathlib import Path

from bench.cells.contract import CellSpec
from bench.launch.executor import Executor, Handle, register_executor
from bench.launch.forked import ForkedExecutor
from bench.launch.revisions import REPO_ROOT


class RecordingExecutor:
    def __init__(self, run_dir: Path) -> None:
        self.log = run_dir / "recorded.txt"
        self.forked = ForkedExecutor()

    def submit(self, spec: CellSpec, cell_dir: Path, code_root: Path = REPO_ROOT) -> Handle:
        launch = self.forked.submit(spec, cell_dir, code_root)

        def handle() -> object:
            with open(self.log, "a") as f:
                f.write(f"{spec.cell_id} {code_root}\n")
            return launch()

        return handle  # type: ignore[return-value]

    def close(self) -> None:
        self.forked.close()
        with open(self.log, "a") as f:
            f.write("closed\n")


@register_executor("recording")
def recording(options: dict[str, str], run_dir: Path) -> Executor:
    return RecordingExecutor(run_dir)
