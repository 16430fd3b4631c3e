"""The forked cell server's parent side: a running ``python -m bench.cell_server`` (the child side is
:mod:`bench.measure.serving`) that forks one child per cell from a process that imported torch once.
No torch import."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from pathlib import Path

from bench.launch.revisions import REPO_ROOT, code_env, module_command


def announces_ready(code_root: Path) -> bool:
    """Whether the server in ``code_root`` writes a "ready" line before its first reply (servers of revisions
    from before that do not, and are waited on through their first reply alone)."""
    serving = code_root / "bench" / "measure" / "serving.py"
    return serving.is_file() and "READY = " in serving.read_text()


class CellServer:
    """A running ``python -m bench.cell_server`` with the code under ``code_root``: each cell it is given
    runs in a child forked from a process that imported torch once (:mod:`bench.measure.serving`), which
    saves a cell the seconds a new interpreter spends on imports. One cell at a time."""

    def __init__(self, code_root: Path = REPO_ROOT) -> None:
        self.waiting = announces_ready(code_root)  # its "ready" line is still to be read
        self.proc = subprocess.Popen(
            module_command(code_root, "bench.cell_server"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=code_env(code_root),
        )

    @staticmethod
    def available(code_root: Path) -> bool:
        """Whether the code under ``code_root`` has the server (a revision older than it does not) and this
        system can run it (it waits on its children through Linux's pidfds)."""
        bench = code_root / "bench"
        # the server's child side: bench/cell_serving.py before bench/ became packages, bench/measure/serving.py after
        has_server = (bench / "cell_serving.py").is_file() or (bench / "measure" / "serving.py").is_file()
        return hasattr(os, "pidfd_open") and has_server

    def wait_ready(self) -> None:
        """Block until the server's imports are done (a server that died is found by the next :meth:`run`)."""
        if self.waiting and self.proc.stdout is not None:
            self.proc.stdout.readline()
        self.waiting = False

    def run(self, spec_path: Path, result_path: Path, log_path: Path, timeout_s: float) -> tuple[int, bool]:
        """One cell in a forked child: (its exit code, timed out). A server that died reads as a failed cell."""
        self.wait_ready()
        request = {"spec": str(spec_path), "result": str(result_path), "log": str(log_path), "timeout_s": timeout_s}
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            reply = self.proc.stdout.readline()
        except BrokenPipeError:
            reply = ""
        if not reply:
            with open(log_path, "a") as log:
                log.write(f"bench.cell_server exited (code {self.proc.wait()}) before answering\n")
            return 1, False
        got = json.loads(reply)
        return int(got["exitcode"]), bool(got["timed_out"])

    def close(self) -> None:
        """End the server (end of its input) and wait for it; kill it if it does not go."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):  # a server that died has nothing to read
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
