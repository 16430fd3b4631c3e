"""``python -m bench.compare RESULTS_A RESULTS_B``: did B get slower than A?

Cells are matched by their axis values. For each pair, the throughput ratio B/A (from median step
times) gets a 95% bootstrap confidence interval from the per-step samples in ``cells.jsonl``. A
configuration measured more than once in a run (``bench.tune``: search reading, second reading, final
rounds) is compared on all its readings: pooled steps for the ratio, and a bootstrap that resamples
whole readings before steps, so the drift between readings widens the interval. A change
is significant when the interval excludes 1 *and* the change is larger than the noise threshold: the
larger of ``--min-threshold`` and half the between-repeat spread measured in either run. With
``--fail-threshold PCT``, a significant slowdown of more than PCT% exits with code 1; so does a guard
that passed in A and fails in B.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench._cli import make_parser, run_cli
from bench.matrix import GUARDS
from bench.search import pooled
from trainer_core.errors import TrainbenchError

ENV_KEYS = ("torch", "cuda", "cudnn", "cpu", "gpus", "torch_threads", "threads")
FASTER, SLOWER, SAME = "faster", "slower", "no significant change"


class CompareError(TrainbenchError):
    """A results directory is missing or unreadable."""


def load_results(path: str | Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(env, {axis key: record}) of a results directory (or its cells.jsonl)."""
    p = Path(path)
    cells = p / "cells.jsonl" if p.is_dir() else p
    if not cells.is_file():
        raise CompareError(f"{path}: no cells.jsonl (expected a results/<run-id> directory)")
    env_path = cells.parent / "env.json"
    env = json.loads(env_path.read_text()) if env_path.is_file() else {}
    grouped: dict[str, list[dict[str, Any]]] = {}
    for line in cells.read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a killed run
        grouped.setdefault(axis_key(r.get("axes") or {}), []).append(r)
    return env, {k: rs[0] if len(rs) == 1 else merge_readings(rs) for k, rs in grouped.items()}


_GUARD_RANK = {"pass": 0, "nondeterministic": 1, "fail": 2, "error": 3}


def merge_readings(records: list[dict[str, Any]]) -> dict[str, Any]:
    """One record for several readings of one configuration: measured readings pooled (their step
    times kept apart in ``readings_step_s``), each guard at its worst status over all readings."""
    ok = [r for r in records if r.get("status") == "ok" and r.get("step_s")]
    merged = dict(ok[0] if ok else records[-1])
    guards: dict[str, dict[str, Any]] = {}
    for r in records:
        for name, g in (r.get("guards") or {}).items():
            if _GUARD_RANK.get(g.get("status"), 0) >= _GUARD_RANK.get(guards.get(name, {}).get("status"), 0):
                guards[name] = g
    merged["guards"] = guards
    if ok:
        merged["readings_step_s"] = [r["step_s"] for r in ok]
        merged["step_s"] = [x for r in ok for x in r["step_s"]]
        merged["samples_per_s"] = pooled([r["samples_per_s"] for r in ok])
        merged["repeat_spread_pct"] = max(r.get("repeat_spread_pct") or 0.0 for r in ok)
    merged["readings"] = len(ok)
    return merged


def axis_key(axes: dict[str, Any]) -> str:
    return ", ".join(f"{k}={axes[k]}" for k in sorted(axes)) or "base"


def bootstrap_ratio(a_steps: Sequence[float], b_steps: Sequence[float], n: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Throughput ratio B/A = median step A / median step B, with a 95% percentile-bootstrap interval."""
    a, b = np.asarray(a_steps, dtype=float), np.asarray(b_steps, dtype=float)
    rng = np.random.default_rng(seed)
    ma = np.median(a[rng.integers(0, len(a), size=(n, len(a)))], axis=1)
    mb = np.median(b[rng.integers(0, len(b), size=(n, len(b)))], axis=1)
    ratios = ma / mb
    return float(np.median(a) / np.median(b)), float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))


def bootstrap_ratio_rounds(a_rounds: Sequence[Sequence[float]], b_rounds: Sequence[Sequence[float]], n: int = 2000,
                           seed: int = 0) -> tuple[float, float, float]:
    """Like :func:`bootstrap_ratio` for A and B measured in paired rounds (round i of A next to round i
    of B): a two-level bootstrap that resamples whole rounds (jointly for A and B), then steps within
    each. The interval then includes the machine's drift from one round to the next, which resampling
    pooled steps cannot see (on a shared machine, that drift is most of the uncertainty).
    """
    if len(a_rounds) != len(b_rounds) or not a_rounds:
        raise ValueError("need the same, non-zero number of rounds for A and B")
    return _two_level_bootstrap(a_rounds, b_rounds, n, seed, paired=True)


def bootstrap_ratio_readings(a_readings: Sequence[Sequence[float]], b_readings: Sequence[Sequence[float]], n: int = 2000,
                             seed: int = 0) -> tuple[float, float, float]:
    """:func:`bootstrap_ratio_rounds` for readings that are not paired (two runs, each with one or more
    readings of a configuration): A's and B's readings are resampled independently."""
    if not a_readings or not b_readings:
        raise ValueError("need at least one reading of A and of B")
    return _two_level_bootstrap(a_readings, b_readings, n, seed, paired=False)


def _two_level_bootstrap(a_groups: Sequence[Sequence[float]], b_groups: Sequence[Sequence[float]], n: int, seed: int,
                         paired: bool) -> tuple[float, float, float]:
    a = [np.asarray(r, dtype=float) for r in a_groups]
    b = [np.asarray(r, dtype=float) for r in b_groups]
    rng = np.random.default_rng(seed)
    ratios = np.empty(n)
    for i in range(n):
        pick_a = rng.integers(0, len(a), size=len(a))
        pick_b = pick_a if paired else rng.integers(0, len(b), size=len(b))
        ra = np.concatenate([a[k][rng.integers(0, len(a[k]), size=len(a[k]))] for k in pick_a])
        rb = np.concatenate([b[k][rng.integers(0, len(b[k]), size=len(b[k]))] for k in pick_b])
        ratios[i] = np.median(ra) / np.median(rb)
    point = float(np.median(np.concatenate(a)) / np.median(np.concatenate(b)))
    return point, float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))


def compare_cell(a: dict[str, Any], b: dict[str, Any], min_threshold_pct: float) -> dict[str, Any]:
    out: dict[str, Any] = {"cell_id": b.get("cell_id") or a.get("cell_id"), "status_a": a.get("status"), "status_b": b.get("status")}
    guards = [g for g in GUARDS if (a.get("guards") or {}).get(g, {}).get("status") == "pass"
              and (b.get("guards") or {}).get(g, {}).get("status") in ("fail", "error")]
    out["guard_regressions"] = guards
    if a.get("status") != "ok" or b.get("status") != "ok" or not a.get("step_s") or not b.get("step_s"):
        out["verdict"] = "not compared"
        return out
    if "readings_step_s" in a or "readings_step_s" in b:
        ratio, lo, hi = bootstrap_ratio_readings(a.get("readings_step_s") or [a["step_s"]], b.get("readings_step_s") or [b["step_s"]])
    else:
        ratio, lo, hi = bootstrap_ratio(a["step_s"], b["step_s"])
    noise = max(min_threshold_pct, 0.5 * (a.get("repeat_spread_pct") or 0.0), 0.5 * (b.get("repeat_spread_pct") or 0.0))
    change_pct = 100.0 * (ratio - 1.0)
    if hi < 1.0 and -change_pct > noise:
        verdict = SLOWER
    elif lo > 1.0 and change_pct > noise:
        verdict = FASTER
    else:
        verdict = SAME
    out.update(samples_per_s_a=a.get("samples_per_s"), samples_per_s_b=b.get("samples_per_s"),
               readings_a=a.get("readings", 1), readings_b=b.get("readings", 1), ratio=ratio,
               ci_low=lo, ci_high=hi, change_pct=change_pct, noise_threshold_pct=noise, verdict=verdict)
    return out


def compare(path_a: str | Path, path_b: str | Path, min_threshold_pct: float = 2.0) -> dict[str, Any]:
    env_a, cells_a = load_results(path_a)
    env_b, cells_b = load_results(path_b)
    warnings = [f"environment changed: {k}: {env_a.get(k)!r} -> {env_b.get(k)!r}" for k in ENV_KEYS
                if k in env_a and k in env_b and env_a[k] != env_b[k]]
    rows = [compare_cell(cells_a[k], cells_b[k], min_threshold_pct) | {"axes": k} for k in cells_a if k in cells_b]
    return {
        "a": str(path_a), "b": str(path_b), "warnings": warnings, "rows": rows,
        "only_in_a": sorted(k for k in cells_a if k not in cells_b),
        "only_in_b": sorted(k for k in cells_b if k not in cells_a),
    }


def failures(result: dict[str, Any], fail_threshold_pct: float | None) -> list[str]:
    out = []
    for r in result["rows"]:
        if r["guard_regressions"]:
            out.append(f"{r['cell_id']}: guard(s) passed in A, fail in B: {', '.join(r['guard_regressions'])}")
        if fail_threshold_pct is not None and r.get("verdict") == SLOWER and -r["change_pct"] > fail_threshold_pct:
            out.append(f"{r['cell_id']}: {-r['change_pct']:.1f}% slower (limit {fail_threshold_pct:g}%)")
    return out


def format_table(result: dict[str, Any], markdown: bool = False) -> str:
    lines = [f"A: {result['a']}", f"B: {result['b']}"] + [f"WARNING: {w}" for w in result["warnings"]] + [""]
    head = ["cell", "A samples/s", "B samples/s", "B/A", "95% CI", "noise", "verdict", "guards"]
    body = []
    for r in result["rows"]:
        if "ratio" in r:
            n_a, n_b = r.get("readings_a", 1), r.get("readings_b", 1)
            body.append([r["cell_id"], f"{r['samples_per_s_a']:,.0f}" + (f" ({n_a} readings)" if n_a > 1 else ""),
                         f"{r['samples_per_s_b']:,.0f}" + (f" ({n_b} readings)" if n_b > 1 else ""), f"{r['ratio']:.3f}",
                         f"{r['ci_low']:.3f}-{r['ci_high']:.3f}", f"±{r['noise_threshold_pct']:.1f}%", r["verdict"],
                         ("REGRESSED: " + ", ".join(r["guard_regressions"])) if r["guard_regressions"] else "ok"])
        else:
            body.append([r["cell_id"], "", "", "", "", "", f"{r['verdict']} ({r['status_a']} / {r['status_b']})",
                         ("REGRESSED: " + ", ".join(r["guard_regressions"])) if r["guard_regressions"] else ""])
    if markdown:
        lines += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in body]
    else:
        widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
        lines += ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in [head, *body]]
    for side in ("a", "b"):
        missing = result[f"only_in_{side}"]
        if missing:
            lines.append(f"only in {side.upper()}: " + "; ".join(missing))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("bench.compare", "Compare two bench.run results directories.")
    p.add_argument("a", help="baseline results directory (results/<run-id>)")
    p.add_argument("b", help="new results directory")
    p.add_argument("--fail-threshold", type=float, metavar="PCT", help="exit 1 if a significant slowdown exceeds PCT%%")
    p.add_argument("--min-threshold", type=float, default=2.0, metavar="PCT",
                   help="smallest change ever called significant (default 2%%; the measured noise can raise it)")
    p.add_argument("--markdown", action="store_true", help="Markdown table (for CI comments)")
    p.add_argument("--json", action="store_true", help="JSON output")
    return p


def main(args: argparse.Namespace) -> int:
    result = compare(args.a, args.b, args.min_threshold)
    failed = failures(result, args.fail_threshold)
    result["failures"] = failed
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_table(result, markdown=args.markdown))
        for f in failed:
            print(f"FAIL: {f}")
    return 1 if failed else 0


def cli(argv: Sequence[str] | None = None) -> int:
    return run_cli(main, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(cli())
