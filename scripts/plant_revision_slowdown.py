"""A revision A/B's ground truth: a throwaway clone of this repository with one commit on top that only *adds*
work to SimpleCNN's forward (``x = x + 0.0 * torch.tanh(x)`` on the pooled conv1 output, ``--lines`` times):
slower by construction, by an amount measured first with a long interleaved run, then the target of shorter
default-budget runs (issue 31's table in docs/measurements.md).

    python scripts/plant_revision_slowdown.py --lines 1 [--at conv2] [--op scale] --out /tmp/plant1
    cd /tmp/plant1 && python -m bench.ab --a HEAD~1 --b HEAD --config configs/fashion_mnist.yaml

``--lines 0`` commits nothing but the commit itself: the A/A of the same table (two commits, the same code).

Prints the clone's path and its two commits. The clone is yours to delete; this checkout is not touched.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODELS = "trainer_core/models.py"
# Where the planted lines go: after conv1's pooled output (14x14), or after conv2's (7x7, about half the
# elements of conv1's: a smaller slowdown).
ANCHORS = {
    "conv1": "        x = self.pool(torch.relu(self.conv1(x)))  # 28x28 -> 14x14\n",
    "conv2": "        x = self.pool(torch.relu(self.conv2(x)))  # 14x14 -> 7x7\n",
}
# What each planted line computes: the same result, with extra elementwise work forward and backward
# (tanh: three ops; scale: two, a smaller slowdown).
PLANTS = {
    "tanh": "        x = x + 0.0 * torch.tanh(x)  # planted: extra work, same result\n",
    "scale": "        x = x + 0.0 * x  # planted: extra work, same result\n",
}


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def plant(out: Path, lines: int, source: Path = REPO, at: str = "conv1", op: str = "tanh") -> tuple[str, str]:
    """Clone ``source`` (its HEAD) to ``out`` and commit ``lines`` planted lines: (base commit, planted commit)."""
    if out.exists():
        raise SystemExit(f"--out {out}: already exists; choose a new folder")
    subprocess.run(["git", "clone", "--quiet", "--local", str(source), str(out)], check=True)
    models = out / MODELS
    text = models.read_text()
    anchor = ANCHORS[at]
    if text.count(anchor) != 1:
        raise SystemExit(f"{MODELS}: SimpleCNN's {at} line not found once; the plant needs updating")
    models.write_text(text.replace(anchor, anchor + PLANTS[op] * lines))
    base = git("rev-parse", "HEAD", cwd=out)
    # --lines 0 commits no change at all: an A/A of two real commits whose code is the same.
    message = f"planted slowdown: {lines} extra {op} line(s) after {at} in SimpleCNN.forward"
    message = message if lines else "A/A: no change"
    git("-c", "user.name=plant", "-c", "user.email=plant@localhost", "commit", "--quiet", "--allow-empty", "-am",
        message, cwd=out)  # fmt: skip
    return base, git("rev-parse", "HEAD", cwd=out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lines", type=int, default=1, help="planted lines (more lines, a larger slowdown; 0: an A/A pair)")
    p.add_argument("--at", choices=sorted(ANCHORS), default="conv1", help="after which conv (conv2: smaller)")
    p.add_argument("--op", choices=sorted(PLANTS), default="tanh", help="what the line computes (scale: smaller)")
    p.add_argument("--out", type=Path, required=True, help="the clone's folder (must not exist)")
    args = p.parse_args(argv)
    base, planted = plant(args.out, args.lines, at=args.at, op=args.op)
    print(f"{args.out}: {base[:10]} (A, HEAD~1) -> {planted[:10]} (B, HEAD, {args.lines} planted line(s))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
