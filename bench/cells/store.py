"""The records of a run: ``cells.jsonl``, one :class:`~bench.cells.contract.CellRecord` per line, read and
written only here (a kill mid-write loses at most the line being written). No torch import."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import ValidationError

from bench.cells.contract import CellRecord


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
