"""Tables from cell records: results.csv, results.md, summary.md and the terminal table.

Figures come from the cell records (computed in bench.stats / bench.cell); this module only
selects, compares and formats them.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from bench.guards import FAIL, NONDETERMINISTIC, PASS
from bench.matrix import GUARDS

METRIC_COLUMNS = [
    "status", "reason", "samples_per_s", "step_ms_median", "step_ms_p10", "step_ms_p90", "repeat_spread_pct",
    "data_wait_pct", "h2d_ms_median", "peak_mem_mb", "tflops", "pct_of_peak", "emulated", "skipped_fp16_steps", "compile_s",
    # from the cell's torch.profiler trace (blank when profiling is off)
    "prof_data_pct", "prof_h2d_pct", "prof_forward_pct", "prof_backward_pct", "prof_optimizer_pct", "prof_other_pct",
    "profiler_slowdown", "reduced_precision_pct", "trace_dir",
]
GUARD_MARK = {PASS: "ok", FAIL: "FAIL", NONDETERMINISTIC: "nondet", "error": "ERROR"}


def axis_keys(records: list[dict[str, Any]]) -> list[str]:
    keys: list[str] = []
    for r in records:
        for k in r.get("axes") or {}:
            if k not in keys:
                keys.append(k)
    return keys


def guard_status(record: dict[str, Any], name: str) -> str:
    g = (record.get("guards") or {}).get(name)
    return g["status"] if g else ""


def flat_row(record: dict[str, Any], axes: list[str]) -> dict[str, Any]:
    row: dict[str, Any] = {"cell_id": record.get("cell_id")}
    for k in axes:
        row[k] = (record.get("axes") or {}).get(k)
    for k in METRIC_COLUMNS:
        row[k] = record.get(k)
    for g in GUARDS:
        row[f"guard_{g}"] = guard_status(record, g)
    row["guards_ok"] = record.get("guards_ok")
    return row


def write_csv(records: list[dict[str, Any]], path: Path) -> None:
    axes = axis_keys(records)
    rows = [flat_row(r, axes) for r in records]
    fields = ["cell_id", *axes, *METRIC_COLUMNS, *(f"guard_{g}" for g in GUARDS), "guards_ok"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return str(v)


def _guard_marks(record: dict[str, Any]) -> str:
    if record.get("status") != "ok":
        return ""
    return " ".join(f"{g[:3]}:{GUARD_MARK.get(guard_status(record, g), '-')}" for g in GUARDS if guard_status(record, g))


def markdown_table(records: list[dict[str, Any]], compact: bool = False) -> str:
    axes = axis_keys(records)
    head = ["cell", *axes, "status", "samples/s", "step ms (p10-p90)", "data-wait %", "peak MB", "TFLOP/s", "% peak", "guards", "note"]
    if compact:
        head = ["cell", "status", "samples/s", "step ms", "data-wait %", "guards", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in records:
        note = r.get("reason") or ""  # skip/failure reason, or the precision policy's note (e.g. emulated fp16)
        if compact:
            cells = [r.get("cell_id"), r.get("status"), _fmt(r.get("samples_per_s"), 0), _fmt(r.get("step_ms_median"), 2),
                     _fmt(r.get("data_wait_pct")), _guard_marks(r), note[:60]]
        else:
            spread = f"{_fmt(r.get('step_ms_median'), 2)} ({_fmt(r.get('step_ms_p10'), 2)}-{_fmt(r.get('step_ms_p90'), 2)})" if r.get("status") == "ok" else ""
            cells = [r.get("cell_id"), *(_fmt((r.get("axes") or {}).get(k)) for k in axes), r.get("status"),
                     _fmt(r.get("samples_per_s"), 0), spread, _fmt(r.get("data_wait_pct")), _fmt(r.get("peak_mem_mb"), 0),
                     _fmt(r.get("tflops"), 3), _fmt(r.get("pct_of_peak")), _guard_marks(r), note]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def pair_with_reference(records: list[dict[str, Any]], axis: str, reference: Any) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(cell, reference cell) for each measured cell whose ``axis`` is not ``reference``, matched with
    the measured cell that has ``axis == reference`` and the same value on every other axis."""
    ok = [r for r in records if r.get("status") == "ok" and axis in (r.get("axes") or {})]

    def others(r: dict[str, Any]) -> tuple:
        return tuple(sorted((k, str(v)) for k, v in r["axes"].items() if k != axis))

    refs = {others(r): r for r in ok if r["axes"][axis] == reference}
    return [(r, refs[others(r)]) for r in ok if r["axes"][axis] != reference and others(r) in refs]


def speedups_vs_fp32(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each measured cell against the fp32 cell with the same other axis values."""
    return [{"cell_id": r["cell_id"], "vs": ref["cell_id"], "precision": r["axes"]["precision"],
             "speedup": r["samples_per_s"] / ref["samples_per_s"], "guards_ok": r.get("guards_ok")}
            for r, ref in pair_with_reference(records, "precision", "fp32")]


def compile_break_even(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each compiled cell against the same cell uncompiled: steps until compile time pays for itself."""
    out = []
    for r, ref in pair_with_reference(records, "train.compile", "off"):
        if r.get("compile_s") is None:
            continue
        saved_ms = ref["step_ms_median"] - r["step_ms_median"]  # per step, > 0 when compiled is faster
        out.append({"cell_id": r["cell_id"], "vs": ref["cell_id"], "compile_s": r["compile_s"],
                    "speedup": r["samples_per_s"] / ref["samples_per_s"],
                    "break_even_steps": (1e3 * r["compile_s"] / saved_ms) if saved_ms > 0 else None})
    return out


def fastest_per_device(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The fastest cell per device among those whose guards all passed."""
    best: dict[str, dict[str, Any]] = {}
    for r in records:
        if r.get("status") != "ok" or not r.get("guards_ok"):
            continue
        dev = r.get("device", "?")
        if dev not in best or r["samples_per_s"] > best[dev]["samples_per_s"]:
            best[dev] = r
    return best


def summary_markdown(records: list[dict[str, Any]], env: dict[str, Any]) -> str:
    counts = {s: sum(1 for r in records if r.get("status") == s) for s in ("ok", "skipped", "failed")}
    lines = [f"# Summary: {env.get('matrix_name', '')}", "",
             f"{len(records)} cells: {counts['ok']} measured, {counts['skipped']} skipped, {counts['failed']} failed. "
             f"torch {env.get('torch')}, {env.get('cpu')}, {env.get('torch_threads')} threads, commit {env.get('git_commit')}.", ""]
    lines += ["## Fastest configuration per device (all guards passed)", ""]
    best = fastest_per_device(records)
    if not best:
        lines.append("No measured cell passed every guard.")
    for dev, r in best.items():
        axes = ", ".join(f"{k}={v}" for k, v in r["axes"].items())
        lines.append(f"- **{dev}**: `{r['cell_id']}` ({axes}): {r['samples_per_s']:,.0f} samples/s, "
                     f"step {r['step_ms_median']:.2f} ms, data-wait {r['data_wait_pct']:.1f}%")
    failed_guards = [r for r in records if r.get("status") == "ok" and not r.get("guards_ok")]
    if failed_guards:
        lines += ["", "Not recommended (a guard failed): " + ", ".join(f"`{r['cell_id']}`" for r in failed_guards)]
    lines += ["", "## Speedup against fp32 (same other settings)", "", "| cell | vs | speedup | guards |", "|---|---|---:|---|"]
    for s in speedups_vs_fp32(records):
        lines.append(f"| {s['cell_id']} | {s['vs']} | {s['speedup']:.2f}x | {'ok' if s['guards_ok'] else 'FAILED'} |")
    compiled = compile_break_even(records)
    if compiled:
        lines += ["", "## torch.compile (compile time is not part of samples/s)", "",
                  "| cell | vs eager | compile s | speedup | break-even steps |", "|---|---|---:|---:|---:|"]
        for c in compiled:
            be = f"{c['break_even_steps']:,.0f}" if c["break_even_steps"] is not None else "never (not faster)"
            lines.append(f"| {c['cell_id']} | {c['vs']} | {c['compile_s']:.1f} | {c['speedup']:.2f}x | {be} |")
    # Records written before cells kept their notes as a list have only the joined line.
    notes = sorted({n for r in records if r.get("status") == "ok"
                    for n in r.get("notes", [r["reason"]] if r.get("reason") else [])})
    notes += [f"`{r['cell_id']}`: {r[k]}" for r in records for k in ("mixed_precision_warning", "trace_warning", "profile_error") if r.get(k)]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    skipped = sorted({r.get("reason") for r in records if r.get("status") == "skipped"})
    if skipped:
        lines += ["", "Skipped cells, by reason: " + "; ".join(f"{why} ({sum(1 for r in records if r.get('reason') == why and r.get('status') == 'skipped')})" for why in skipped)]
    failed = [r for r in records if r.get("status") == "failed"]
    if failed:
        lines += ["", "## Failed cells", ""] + [f"- `{r['cell_id']}`: {r.get('reason')}" for r in failed]
    return "\n".join(lines) + "\n"
