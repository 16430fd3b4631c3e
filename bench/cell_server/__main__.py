"""``python -m bench.cell_server``: run cells on request, each in a child forked from a process that has
already imported torch (:mod:`bench.measure.serving`; ``bench.ab`` starts one per code root)."""

from __future__ import annotations

import sys

from bench.measure.serving import serve


def main() -> int:
    serve(sys.stdin, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
