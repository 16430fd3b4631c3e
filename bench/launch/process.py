"""Runs one cell in its own process: ``python -m bench.cell SPEC RESULT`` in a fresh interpreter, or a
child forked by a :class:`~bench.launch.server.CellServer`, with the code under a code root (this checkout,
or a git revision's worktree for ``bench.ab``). Nothing (threads, allocator, RNG, compiled kernels, leaked
memory) carries over between cells, and a crash takes down only its cell. Every executor ends here.
No torch import.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from pydantic import ValidationError

from bench.cells.contract import FAILED, CellRecord, CellSpec
from bench.cells.store import cell_paths
from bench.launch.revisions import REPO_ROOT, code_env, module_command
from bench.launch.server import CellServer


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
    spec_path.write_text(spec.to_json())
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


def _why(returncode: int, log_path: Path) -> str:
    if returncode < 0:
        return f"killed by signal {-returncode}" + (" (out of memory?)" if returncode == -9 else "")
    lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else f"exit code {returncode}"
