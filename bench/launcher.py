"""Runs one cell in its own process, and reads and writes the records of a run (``cells.jsonl``).

Used by ``bench.run``, ``bench.tune`` and ``bench.overhead`` alike: a cell is always ``python -m
bench.cell SPEC RESULT`` in a fresh process, so nothing (threads, allocator, RNG, compiled kernels,
leaked memory) carries over between cells, and a crash takes down only its cell. No torch import.
"""

from __future__ import annotations

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


def launch_cell(spec: CellSpec, cell_dir: Path, code_root: Path = REPO_ROOT) -> CellRecord:
    """Run one cell in a fresh process (``spec.measure.cell_timeout_s`` at most) with the code under
    ``code_root`` (this checkout, or a git revision's worktree for ``bench.ab``); whatever happens,
    return a record: the cell's own, or a failed one with the reason (the log's last line, the signal)."""
    cell_dir.mkdir(parents=True, exist_ok=True)
    spec_path, result_path, log_path = cell_paths(cell_dir, spec.cell_id)
    result_path.unlink(missing_ok=True)
    spec_path.write_text(spec.model_dump_json(indent=2))
    env = code_env(code_root)
    identity = {
        "cell_id": spec.cell_id,
        "axes": spec.axes,
        "precision": spec.config.get("precision"),
        "device": spec.device,
        "role": spec.role,
    }
    try:
        with open(log_path, "w") as log:
            proc = subprocess.run(
                module_command(code_root, "bench.cell", str(spec_path), str(result_path)),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                timeout=spec.measure.cell_timeout_s,
            )
    except subprocess.TimeoutExpired:
        return CellRecord.not_measured(
            FAILED, f"timed out after {spec.measure.cell_timeout_s:.0f} s (log: {log_path})", **identity
        )
    if result_path.exists():
        try:
            return CellRecord.model_validate({**identity, **json.loads(result_path.read_text())})
        except (json.JSONDecodeError, ValidationError):
            pass
    return CellRecord.not_measured(FAILED, f"{_why(proc.returncode, log_path)} (log: {log_path})", **identity)


def _why(returncode: int, log_path: Path) -> str:
    if returncode < 0:
        return f"killed by signal {-returncode}" + (" (out of memory?)" if returncode == -9 else "")
    lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else f"exit code {returncode}"
