"""``python -m bench.cell SPEC.json RESULT.json``: measure and guard one matrix cell in its own process.

The launcher (:mod:`bench.launcher`) starts one such process per cell. The result is written to
RESULT.json, including on failure (with the reason) whenever Python is still alive.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

from bench.cell_run import run_cell
from bench.contract import FAILED, CellRecord, CellSpec


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m bench.cell SPEC.json RESULT.json", file=sys.stderr)
        return 2
    spec_path, result_path = Path(argv[0]), Path(argv[1])
    spec = CellSpec.model_validate_json(spec_path.read_text())
    try:
        record, code = run_cell(spec), 0
    except Exception as e:  # the runner records this as a failed cell and carries on
        first = (str(e).strip().splitlines() or [""])[0][:400]
        record = CellRecord.not_measured(FAILED, f"{type(e).__name__}: {first}", spec.cell_id, spec.axes)
        traceback.print_exc()
        code = 1
    result_path.write_text(record.to_json() + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
