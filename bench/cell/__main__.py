"""``python -m bench.cell SPEC.json RESULT.json``: measure and guard one matrix cell in its own process.

The launcher (:mod:`bench.launch.process`) starts one such process per cell. The result is written to
RESULT.json, including on failure (with the reason) whenever Python is still alive.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bench.measure.entry import run_cell_file


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m bench.cell SPEC.json RESULT.json", file=sys.stderr)
        return 2
    return run_cell_file(Path(argv[0]), Path(argv[1]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
