"""What an executor is: it takes a cell's spec, its folder and the code root to run it with, and returns a
handle; calling the handle waits for the cell's record (a failed record with the reason, never an
exception). Every command that launches cells (``bench.run``, ``bench.tune``, ``bench.ab``,
``bench.overhead``) goes through one, built by name from the registry (:mod:`bench.launch.executors`).

Registered with ``@register_executor(name, options)``: a factory ``(options: dict[str, str], run_dir: Path)
-> Executor``; ``options`` names the ``--executor-opt`` keys it reads (anything else is refused before a
cell starts). No torch import.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from bench.cells.contract import CellRecord, CellSpec
from bench.launch.revisions import REPO_ROOT

Handle = Callable[[], CellRecord]


class Executor(Protocol):
    def submit(self, spec: CellSpec, cell_dir: Path, code_root: Path = REPO_ROOT) -> Handle:
        """Start (or queue) the cell; the handle waits for its record."""
        ...

    def close(self) -> None:
        """Release what the executor holds (servers, pools); it may be used again after, starting afresh."""
        ...


ExecutorFactory = Callable[[dict[str, str], Path], Executor]
EXECUTORS: dict[str, ExecutorFactory] = {}
EXECUTOR_OPTIONS: dict[str, dict[str, str]] = {}  # per executor: --executor-opt key -> what it sets


def register_executor(name: str, options: dict[str, str] | None = None) -> Callable[[ExecutorFactory], ExecutorFactory]:
    def add(factory: ExecutorFactory) -> ExecutorFactory:
        if name in EXECUTORS:
            raise ValueError(f"executor {name!r} is registered twice")
        EXECUTORS[name] = factory
        EXECUTOR_OPTIONS[name] = dict(options or {})
        return factory

    return add
