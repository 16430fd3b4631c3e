"""The two named pipes through which a lockstep pair of cells hands the baton (the cell side is
:mod:`bench.measure.lockstep`, which says the protocol). Made by the launcher before both cells start. No torch."""

from __future__ import annotations

import os
from pathlib import Path

READY, TURN, DONE = b"R", b"T", b"D"  # one byte per message


def make_channels(folder: Path, names: tuple[str, str]) -> dict[str, tuple[str, str]]:
    """Two fresh named pipes under ``folder``; per side name, (the pipe it reads, the pipe it writes)."""
    folder.mkdir(parents=True, exist_ok=True)
    a, b = names
    to_a, to_b = folder / f"to-{a}", folder / f"to-{b}"
    for p in (to_a, to_b):
        p.unlink(missing_ok=True)  # a pipe of an earlier reading may still hold bytes nobody read
        os.mkfifo(p)
    return {a: (str(to_a), str(to_b)), b: (str(to_b), str(to_a))}
