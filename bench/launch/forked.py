"""The ``forked`` executor: each cell a child forked from a ``python -m bench.cell_server`` that imported
torch once (one server per code root), which saves a cell the seconds a new interpreter spends on
imports. Still one fresh process per cell. Needs Linux's pidfds and the server in the code's revision
(:meth:`CellServer.available`); ``close`` ends the servers, and the next cell starts new ones."""

from __future__ import annotations

from pathlib import Path

from bench.cells.contract import CellSpec
from bench.launch.executor import Executor, Handle, register_executor
from bench.launch.process import launch_cell
from bench.launch.revisions import REPO_ROOT
from bench.launch.server import CellServer
from trainer_core.errors import ConfigError

# A forked server's children share its address-space layout, a property of the process that a new
# interpreter would draw afresh; closing the servers every SERVER_ROUNDS rounds of a paired run draws it
# again, so a run samples several. Executors without servers ignore it (closing them releases nothing).
SERVER_ROUNDS = 5


class ForkedExecutor:
    def __init__(self) -> None:
        self.servers: dict[Path, CellServer] = {}

    def submit(self, spec: CellSpec, cell_dir: Path, code_root: Path = REPO_ROOT) -> Handle:
        if not CellServer.available(code_root):
            raise ConfigError(f"--executor forked: {code_root} has no bench.cell_server, or this system no pidfds")
        return lambda: launch_cell(spec, cell_dir, code_root, server=self._server(code_root))

    def _server(self, code_root: Path) -> CellServer:
        if code_root not in self.servers:
            self.servers[code_root] = CellServer(code_root)
        return self.servers[code_root]

    def prepare(self, code_roots: list[Path]) -> None:
        """Start the servers of ``code_roots`` now, without waiting (:meth:`wait_ready` waits): renewing the
        servers of both sides of an A/B then costs one import's time on two cores, not two."""
        for root in code_roots:
            self._server(root)

    def wait_ready(self) -> None:
        """Until every server has imported torch, so no import runs beside a reading."""
        for server in self.servers.values():
            server.wait_ready()

    def close(self) -> None:
        for server in self.servers.values():
            server.close()
        self.servers.clear()


@register_executor("forked")
def forked_executor(options: dict[str, str], run_dir: Path) -> Executor:
    return ForkedExecutor()
