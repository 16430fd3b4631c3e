"""Runs one cell in its own process, and reads and writes the records of a run (``cells.jsonl``).

Used by ``bench.run``, ``bench.tune`` and ``bench.overhead`` alike: a cell is always ``python -m
bench.cell SPEC RESULT`` in a fresh process, so nothing (threads, allocator, RNG, compiled kernels,
leaked memory) carries over between cells, and a crash takes down only its cell. ``bench.ab``, whose
readings are short and many, may run them as children of a :class:`CellServer` instead: still one
fresh process per cell, forked from one that has imported torch already. No torch import.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from pathlib import Path

from pydantic import ValidationError

from bench.contract import FAILED, CellRecord, CellSpec
from bench.revisions import REPO_ROOT, code_env, module_command


def read_records(path: Path) -> list[CellRecord]:
    """Records of a cells.jsonl (any schema version); a line cut short by a kill is ignored (that
    cell runs again on --resume)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(CellRecord.model_validate(json.loads(line)))
        except (json.JSONDecodeError, ValidationError):
            continue
    return out


def append_record(path: Path, record: CellRecord) -> None:
    """Append one record and make it durable before the next cell starts (a kill keeps it)."""
    with open(path, "a") as f:
        f.write(record.to_json() + "\n")
        f.flush()
        os.fsync(f.fileno())


def cell_paths(cell_dir: Path, cell_id: str) -> tuple[Path, Path, Path]:
    """(spec, result, log) files of a cell."""
    return cell_dir / f"{cell_id}.spec.json", cell_dir / f"{cell_id}.result.json", cell_dir / f"{cell_id}.log"


def launch_cell(
    spec: CellSpec, cell_dir: Path, code_root: Path = REPO_ROOT, server: CellServer | None = None
) -> CellRecord:
    """Run one cell in a fresh process (``spec.measure.cell_timeout_s`` at most) with the code under
    ``code_root`` (this checkout, or a git revision's worktree for ``bench.ab``): a new interpreter, or
    a child of ``server`` (which runs that same code); whatever happens, return a record: the cell's
    own, or a failed one with the reason (the log's last line, the signal)."""
    cell_dir.mkdir(parents=True, exist_ok=True)
    spec_path, result_path, log_path = cell_paths(cell_dir, spec.cell_id)
    result_path.unlink(missing_ok=True)
    spec_path.write_text(spec.model_dump_json(indent=2))
    identity = {
        "cell_id": spec.cell_id,
        "axes": spec.axes,
        "precision": spec.config.get("precision"),
        "device": spec.device,
        "role": spec.role,
    }
    timeout_s = spec.measure.cell_timeout_s
    if server is not None:
        returncode, timed_out = server.run(spec_path, result_path, log_path, timeout_s)
    else:
        returncode, timed_out = _run_interpreter(code_root, spec_path, result_path, log_path, timeout_s)
    if timed_out:
        return CellRecord.not_measured(FAILED, f"timed out after {timeout_s:.0f} s (log: {log_path})", **identity)
    if result_path.exists():
        try:
            return CellRecord.model_validate({**identity, **json.loads(result_path.read_text())})
        except (json.JSONDecodeError, ValidationError):
            pass
    return CellRecord.not_measured(FAILED, f"{_why(returncode, log_path)} (log: {log_path})", **identity)


def _run_interpreter(
    code_root: Path, spec_path: Path, result_path: Path, log_path: Path, timeout_s: float
) -> tuple[int, bool]:
    """``python -m bench.cell SPEC RESULT`` in a new interpreter: (exit code, timed out)."""
    try:
        with open(log_path, "w") as log:
            proc = subprocess.run(
                module_command(code_root, "bench.cell", str(spec_path), str(result_path)),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=code_env(code_root),
                timeout=timeout_s,
            )
    except subprocess.TimeoutExpired:
        return -9, True
    return proc.returncode, False


class CellServer:
    """A running ``python -m bench.cell_server`` with the code under ``code_root``: each cell it is given
    runs in a child forked from a process that imported torch once (:mod:`bench.cell_serving`), which
    saves a cell the seconds a new interpreter spends on imports. One cell at a time."""

    def __init__(self, code_root: Path = REPO_ROOT) -> None:
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
        return hasattr(os, "pidfd_open") and (code_root / "bench" / "cell_serving.py").is_file()

    def run(self, spec_path: Path, result_path: Path, log_path: Path, timeout_s: float) -> tuple[int, bool]:
        """One cell in a forked child: (its exit code, timed out). A server that died reads as a failed cell."""
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


def _why(returncode: int, log_path: Path) -> str:
    if returncode < 0:
        return f"killed by signal {-returncode}" + (" (out of memory?)" if returncode == -9 else "")
    lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else f"exit code {returncode}"
