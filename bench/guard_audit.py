"""``python -m bench.guard_audit``: false-alarm rate and catch rate of the guards, measured here.

Runs every guard on every shipped run config and every model x precision of the shipped matrices
(each must pass: a failure is a false alarm) and on each planted fault of :mod:`bench.planted` (its
own guard must fail: a pass is a miss), over ``--seeds`` seeds. Exit code 1 on any false alarm or miss.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench._cli import EXIT_FAILED, make_parser, run_cli
from bench.guard_cases import planted_cases, run_case, shipped_cases, with_data


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("bench.guard_audit", "Measure the guards' false-alarm rate (shipped configs) and catch rate (planted faults).")
    p.add_argument("--configs", default="configs", help="folder of configs and matrices to check (default configs/)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per case: the config's own and the next ones (default 3)")
    p.add_argument("--data-root", help="IDX folder for configs whose data is not found where they look")
    p.add_argument("--json", metavar="FILE", help="also write every verdict to FILE")
    return p


def main(args: argparse.Namespace) -> int:
    groups = {"healthy": shipped_cases(Path(args.configs)), "planted": planted_cases()}
    counts = {g: [0, 0] for g in groups}  # [good verdicts, runs]
    rows = []
    for group, cases in groups.items():
        for case in cases:
            found = with_data(case, args.data_root)
            if found is None:
                print(f"not run: {case.label}: its data is not on disk (see --data-root)", flush=True)
                continue
            for seed in range(args.seeds):
                t0 = time.perf_counter()
                good, results = run_case(found, seed)  # seed: offset from the config's own
                counts[group][0] += good
                counts[group][1] += 1
                bad = "; ".join(f"{r.name} {r.status}: {r.detail}" for r in results if r.status != "pass")
                verdict = ("pass" if good else "FALSE ALARM") if group == "healthy" else ("caught" if good else "MISSED")
                print(f"{verdict:<11} {case.label} seed {seed} ({time.perf_counter() - t0:.1f} s){': ' + bad if bad else ''}", flush=True)
                rows.append({"group": group, "case": case.label, "seed": seed, "good": good,
                             "guards": {r.name: r.status for r in results}})
    (ok, n), (caught, m) = counts["healthy"], counts["planted"]
    print(f"false alarms: {n - ok} of {n} healthy runs ({100 * (n - ok) / max(n, 1):.1f}%); "
          f"caught: {caught} of {m} planted faults ({100 * caught / max(m, 1):.1f}%)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if ok == n and caught == m else EXIT_FAILED


def cli(argv: Sequence[str] | None = None) -> int:
    return run_cli(main, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(cli())
