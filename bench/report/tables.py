"""Tables from cell records: results.csv, results.md, summary.md, the terminal table, and bench.compare's table.

Figures come from the cell records (computed in bench.stats / bench.measure.cell); this module only
selects, compares and formats them. No torch import: guard columns come from the records themselves,
so a newly registered guard gets its column without a change here.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from bench.cells.contract import (
    FAIL,
    FAILED,
    HOST_SPLIT,
    NONDETERMINISTIC,
    OK,
    PASS,
    SKIPPED,
    CellRecord,
    first_seen,
    guard_names,
)
from bench.cells.target import TARGET_UNIT
from bench.report.target import target_answer, target_table
from trainer_core.phases import PHASES

PROFILE_PHASES = (*PHASES, "other")
MEM_SPLIT = (
    "data",
    "params",
    "grads",
    "optimizer",
    "activations",
    "backward",
    "temporaries",
    *HOST_SPLIT,
)  # the keys of CellRecord.mem_split_mb (HOST_SPLIT's: CPU only, from the host's own books)
METRIC_COLUMNS = [
    "status",
    "reason",
    "samples_per_s",
    "throughput",
    "throughput_unit",
    "step_ms_median",
    "step_ms_p10",
    "step_ms_p90",
    "repeat_spread_pct",
    "data_wait_pct",
    "h2d_ms_median",
    "peak_mem_mb",
    "mem_baseline_mb",
    "mem_peak_mb",
    "mem_added_mb",
    "mem_workers_mb",
    *(f"mem_{k}_mb" for k in MEM_SPLIT),
    "mem_split_peak_mb",
    "mem_split_gap_pct",
    "tflops",
    "pct_of_peak",
    "mfu_pct",
    "emulated",
    "skipped_fp16_steps",
    "compile_s",
    "unstable",
    "world_size",
    "threads",
    "straggler_pct",
    "comm_pct",
    # from the cell's torch.profiler trace (blank when profiling is off)
    *(f"prof_{p}_pct" for p in PROFILE_PHASES),
    "profiler_slowdown",
    "reduced_precision_pct",
    "trace_dir",
]
GUARD_MARK = {PASS: "ok", FAIL: "FAIL", NONDETERMINISTIC: "nondet", "error": "ERROR"}


def lines_by_other_axes(records: list[CellRecord], drop: tuple[str, ...]) -> dict[str, list[CellRecord]]:
    """Records grouped into the lines of a plot against the ``drop`` axes: one line per combination of
    the other axes that vary among them, labelled ``name=value, ...`` (constant axes would only add
    noise to the labels)."""
    keys = [k for k in axis_keys(records) if k not in drop]
    varying = [k for k in keys if len({str(r.axes.get(k)) for r in records}) > 1]
    lines: dict[str, list[CellRecord]] = {}
    for r in records:
        label = ", ".join(f"{k.split('.')[-1]}={r.axes.get(k)}" for k in varying) or "all"
        lines.setdefault(label, []).append(r)
    return lines


def axis_keys(records: list[CellRecord]) -> list[str]:
    return first_seen(r.axes for r in records)


def metric(record: CellRecord, column: str) -> Any:
    """A METRIC_COLUMNS value of a record (profiler shares live in one dict, flattened into columns)."""
    if column.startswith("prof_") and column.endswith("_pct"):
        return record.prof_phase_pct.get(column[len("prof_") : -len("_pct")])
    if column.startswith("mem_") and column[len("mem_") : -len("_mb")] in MEM_SPLIT:
        return (record.mem_split_mb or {}).get(column[len("mem_") : -len("_mb")])
    return getattr(record, column, None)


def flat_row(record: CellRecord, axes: list[str], guards: list[str]) -> dict[str, Any]:
    row: dict[str, Any] = {"cell_id": record.cell_id}
    row.update({k: record.axes.get(k) for k in axes})
    row.update({k: metric(record, k) for k in METRIC_COLUMNS})
    row.update({f"guard_{g}": record.guard_status(g) for g in guards})
    row["guards_ok"] = record.guards_ok
    return row


def write_csv(records: list[CellRecord], path: Path) -> None:
    axes, guards = axis_keys(records), guard_names(records)
    fields = ["cell_id", *axes, *METRIC_COLUMNS, *(f"guard_{g}" for g in guards), "guards_ok"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(flat_row(r, axes, guards) for r in records)


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return str(v)


def _guard_marks(record: CellRecord) -> str:
    if record.status != OK:
        return ""
    return " ".join(f"{name[:3]}:{GUARD_MARK.get(g.status, '-')}" for name, g in record.guards.items())


def _row(r: CellRecord, axes: list[str], compact: bool, rate: str) -> list[Any]:
    note = r.reason or ""  # skip/failure reason, or the precision policy's note (e.g. emulated fp16)
    if r.unstable:
        note = f"UNSTABLE (repeats spread {_fmt(r.repeat_spread_pct)}%)" + (f"; {note}" if note else "")
    guards = _guard_marks(r)
    if compact:
        return [
            r.cell_id,
            r.status,
            _rate(r, rate),
            _fmt(r.step_ms_median, 2),
            _fmt(r.data_wait_pct),
            guards,
            note[:60],
        ]
    ms = f"{_fmt(r.step_ms_median, 2)} ({_fmt(r.step_ms_p10, 2)}-{_fmt(r.step_ms_p90, 2)})" if r.status == OK else ""
    return [
        r.cell_id,
        *(_fmt(r.axes.get(k)) for k in axes),
        r.status,
        _rate(r, rate),
        ms,
        _fmt(r.data_wait_pct),
        _fmt(r.peak_mem_mb, 0),
        _fmt(r.mem_added_mb, 0),
        mem_split_text(r),
        _fmt(r.mem_split_gap_pct, 0),
        _fmt(r.tflops, 3),
        _fmt(r.pct_of_peak),
        _fmt(r.mfu_pct),
        guards,
        note,
    ]


def mem_split_text(r: CellRecord) -> str:
    """The split as one cell, MiB, in MEM_SPLIT's order ('-' for a part not taken)."""
    split = r.mem_split_mb
    return "/".join(_fmt(split.get(k), 0) or "-" for k in MEM_SPLIT) if split else ""


def rate_header(records: list[CellRecord]) -> str:
    """The throughput column's title: its unit when every measured cell has the same one."""
    units = {r.unit for r in records if r.status == OK}
    return units.pop() if len(units) == 1 else "throughput"


def _rate(r: CellRecord, header: str) -> str:
    return _fmt(r.rate, 0) + (f" {r.unit}" if header == "throughput" and r.rate is not None else "")


def markdown_table(records: list[CellRecord], compact: bool = False) -> str:
    axes, rate = axis_keys(records), rate_header(records)
    head = [
        "cell",
        *axes,
        "status",
        rate,
        "step ms (p10-p90)",
        "data-wait %",
        "peak MB",
        "added MB",
        "data/params/grads/opt/act/bwd/temp/lib/runtime/held/py MB",
        "split gap %",
        "TFLOP/s",
        "% peak",
        "MFU %",
        "guards",
        "note",
    ]
    if compact:  # the terminal: skipped cells are one line of the answer below, not rows here
        head = ["cell", "status", rate, "step ms", "data-wait %", "guards", "note"]
        records = [r for r in records if r.status != SKIPPED]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(str(c) for c in _row(r, axes, compact, rate)) + " |" for r in records]
    return "\n".join(lines)


def pair_with_reference(
    records: list[CellRecord], axis: str, reference: Any, ignore: tuple[str, ...] = ()
) -> list[tuple[CellRecord, CellRecord]]:
    """(cell, reference cell) for each measured cell whose ``axis`` is not ``reference``, matched with
    the measured cell that has ``axis == reference`` and the same value on every other axis (but ``ignore``)."""
    ok = [r for r in records if r.status == OK and axis in r.axes]

    def others(r: CellRecord) -> tuple:
        return tuple(sorted((k, str(v)) for k, v in r.axes.items() if k != axis and k not in ignore))

    refs = {others(r): r for r in ok if r.axes[axis] == reference}
    return [(r, refs[others(r)]) for r in ok if r.axes[axis] != reference and others(r) in refs]


def speedups_vs_fp32(records: list[CellRecord]) -> list[dict[str, Any]]:
    """Each measured cell against the fp32 cell with the same other axis values."""
    return [
        {
            "cell_id": r.cell_id,
            "vs": ref.cell_id,
            "precision": r.axes["precision"],
            "speedup": r.rate / ref.rate,
            "guards_ok": r.guards_ok,
            "unstable": [c.cell_id for c in (r, ref) if c.unstable],
        }
        for r, ref in pair_with_reference(records, "precision", "fp32")
    ]


def compile_break_even(records: list[CellRecord]) -> list[dict[str, Any]]:
    """Each compiled cell against the same cell uncompiled: steps until compile time pays for itself."""
    out = []
    for r, ref in pair_with_reference(records, "train.compile", "off"):
        if r.compile_s is None:
            continue
        saved_ms = ref.step_ms_median - r.step_ms_median  # per step, > 0 when compiled is faster
        out.append(
            {
                "cell_id": r.cell_id,
                "vs": ref.cell_id,
                "compile_s": r.compile_s,
                "speedup": r.rate / ref.rate,
                "break_even_steps": (1e3 * r.compile_s / saved_ms) if saved_ms > 0 else None,
            }
        )
    return out


def fastest_per_device(records: list[CellRecord]) -> dict[str, CellRecord]:
    """The fastest cell per device among those whose guards all passed (per device and throughput unit
    when a matrix mixes workloads: samples/s and tokens/s do not compare)."""
    ok = [r for r in records if r.status == OK and r.guards_ok]
    mixed = len({r.unit for r in ok}) > 1
    best: dict[str, CellRecord] = {}
    for r in ok:
        dev = (r.device or "?") + (f" ({r.unit})" if mixed else "")
        if dev not in best or r.rate > best[dev].rate:
            best[dev] = r
    return best


def baseline_of(records: list[CellRecord], best: CellRecord) -> CellRecord | None:
    """The baseline ``best`` is compared with: the first measured cell of the matrix on its device and unit."""
    same = [r for r in records if r.status == OK and r.rate and r.device == best.device and r.unit == best.unit]
    return same[0] if same else None


def speedup_line(best: CellRecord, base: CellRecord) -> str:
    """best / baseline throughput with a 95% interval from their repeats (unpaired: two processes)."""
    from bench.stats import bootstrap_ratio_readings

    items = (best.items_per_step or best.batch_size or 1) / (base.items_per_step or base.batch_size or 1)
    ratio, low, high = bootstrap_ratio_readings(base.readings(), best.readings())
    return (
        f"{ratio * items:.2f}x the throughput of the baseline `{base.cell_id}` (95% interval "
        f"{low * items:.2f}-{high * items:.2f}, its repeats against this cell's; taken in separate processes)."
    )


def why_not(r: CellRecord, best: CellRecord) -> str:
    """One line: why a measured cell is not the answer."""
    if not r.guards_ok:
        return f"a guard failed ({', '.join(r.failed_guards())})"
    why = f"slower: {r.rate:,.0f} {r.unit}, {r.rate / best.rate:.2f}x the fastest" if r.rate else "no throughput"
    return why + (f"; unstable (repeats spread {r.repeat_spread_pct:.0f}%)" if r.unstable else "")


def fastest_section(records: list[CellRecord]) -> list[str]:
    """summary.md's first section (also what bench.run prints at the end): per device, the fastest
    guard-passing cell, its speedup over the baseline cell, and why every other measured cell lost;
    skipped cells folded into one line."""
    lines = ["## Fastest configuration per device (all guards passed)", ""]
    best = fastest_per_device(records)
    if not best:
        lines.append("No measured cell passed every guard.")
    for dev, r in best.items():
        axes = ", ".join(f"{k}={v}" for k, v in r.axes.items())
        unstable = (
            f" **Unstable**: its repeats spread {r.repeat_spread_pct:.0f}% even when timed again; re-run it "
            "(or compare with bench.compare) before trusting this ranking."
            if r.unstable
            else ""
        )
        step = f", step {r.step_ms_median:.2f} ms" if r.step_ms_median is not None else ""
        wait = f", data-wait {r.data_wait_pct:.1f}%" if r.data_wait_pct is not None else ""
        lines.append(f"- **{dev}**: `{r.cell_id}` ({axes}): {r.rate:,.0f} {r.unit}{step}{wait}{unstable}")
        base = baseline_of(records, r)
        if base is not None and base is not r and base.step_s and r.step_s:
            lines.append(f"  {speedup_line(r, base)}")
        others = [x for x in records if x.status == OK and x is not r and x.device == r.device and x.unit == r.unit]
        lines += [f"  - `{x.cell_id}`: {why_not(x, r)}" for x in sorted(others, key=lambda x: -(x.rate or 0))]
    return lines + skipped_line(records)


def skipped_line(records: list[CellRecord]) -> list[str]:
    """Skipped cells folded into one line: how many, and why."""
    skipped = [r for r in records if r.status == SKIPPED]
    if not skipped:
        return []
    reasons: dict[str, int] = {}
    for r in skipped:
        reasons[r.reason or "?"] = reasons.get(r.reason or "?", 0) + 1
    return ["", f"{len(skipped)} cells skipped: " + "; ".join(f"{why} ({n})" for why, n in reasons.items())]


def summary_head(records: list[CellRecord], env: dict[str, Any]) -> list[str]:
    counts = {s: sum(1 for r in records if r.status == s) for s in (OK, SKIPPED, FAILED)}
    return [
        f"# Summary: {env.get('matrix_name', '')}",
        "",
        f"{len(records)} cells: {counts[OK]} measured, {counts[SKIPPED]} skipped, {counts[FAILED]} failed. "
        f"torch {env.get('torch')}, {env.get('cpu')}, {env.get('torch_threads')} threads, "
        f"commit {env.get('git_commit')}.",
        "",
    ]


def speedup_sections(records: list[CellRecord]) -> list[str]:
    lines = [
        "",
        "## Speedup against fp32 (same other settings)",
        "",
        "| cell | vs | speedup | guards | caution |",
        "|---|---|---:|---|---|",
    ]
    for s in speedups_vs_fp32(records):
        caution = f"unstable: {', '.join(s['unstable'])}" if s["unstable"] else ""
        lines.append(
            f"| {s['cell_id']} | {s['vs']} | {s['speedup']:.2f}x | {'ok' if s['guards_ok'] else 'FAILED'} | {caution} |"
        )
    compiled = compile_break_even(records)
    if compiled:
        lines += [
            "",
            "## torch.compile (compile time is not part of samples/s)",
            "",
            "| cell | vs eager | compile s | speedup | break-even steps |",
            "|---|---|---:|---:|---:|",
        ]
        for c in compiled:
            be = f"{c['break_even_steps']:,.0f}" if c["break_even_steps"] is not None else "never (not faster)"
            lines.append(f"| {c['cell_id']} | {c['vs']} | {c['compile_s']:.1f} | {c['speedup']:.2f}x | {be} |")
    return lines


def scaling_rows(records: list[CellRecord]) -> list[dict[str, Any]]:
    """Each data-parallel cell against the one-process cell with the same other axis values (the axis that
    sets the number of ranks is ``train.world_size``): speedup and scaling efficiency T(N) / (N * T(1)).
    One process is one process whatever ``train.strategy`` says, so DDP and FSDP cells share their reference."""
    rows = []
    for r, one in pair_with_reference(records, "train.world_size", 1, ignore=("train.strategy",)):
        if not (r.rate and one.rate):
            continue
        speedup = r.rate / one.rate
        rows.append(
            {
                "cell_id": r.cell_id,
                "vs": one.cell_id,
                "ranks": r.world_size,
                "threads": f"{r.world_size} x {r.threads_per_rank or r.threads}",
                "threads_one": one.threads,
                "rate": r.rate,
                "rate_one": one.rate,
                "unit": r.unit,
                "speedup": speedup,
                "efficiency": speedup / r.world_size,
                "comm_pct": r.comm_pct,
                "straggler_pct": r.straggler_pct,
                "guards_ok": bool(r.guards_ok and one.guards_ok),
            }
        )
    return rows


def scaling_section(records: list[CellRecord]) -> list[str]:
    rows = scaling_rows(records)
    if not rows:
        return []
    lines = [
        "",
        "## Scaling: data-parallel ranks against one process (same per-rank batch)",
        "",
        "Efficiency = T(N) / (N x T(1)), T the throughput. Threads: ranks x threads per rank against the one "
        "process's threads (the same total when the ranks share out the cell's thread budget). Comm: time "
        "collectives were in flight, as a share of the step (DDP's gradient all-reduce, timed; FSDP's "
        "all-gathers and reduce-scatters, from the profiled steps); they overlap compute.",
        "",
        "| cell | vs | ranks | threads | throughput | one process | speedup | efficiency | comm % | "
        "straggler % | guards |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for x in rows:
        lines.append(
            f"| {x['cell_id']} | {x['vs']} | {x['ranks']} | {x['threads']} vs {x['threads_one']} | "
            f"{x['rate']:,.0f} {x['unit']} | {x['rate_one']:,.0f} | {x['speedup']:.2f}x | {x['efficiency']:.0%} | "
            f"{_fmt(x['comm_pct'])} | {_fmt(x['straggler_pct'])} | {'ok' if x['guards_ok'] else 'FAILED'} |"
        )
    return lines


def notes_sections(records: list[CellRecord]) -> list[str]:
    # Records written before cells kept their notes as a list have only the joined line.
    notes = sorted({n for r in records if r.status == OK for n in (r.notes or ([r.reason] if r.reason else []))})
    notes += [
        f"`{r.cell_id}`: {w}"
        for r in records
        for w in (r.mixed_precision_warning, r.trace_warning, r.profile_error, r.flops_warning)
        if w
    ]
    machines = sorted({r.hardware for r in records if r.status == OK and r.hardware})
    if len(machines) > 1:
        notes.append(
            f"cells ran on {len(machines)} kinds of machine ({'; '.join(machines)}): compare cells of one kind only"
        )
    lines = ["", "## Notes", ""] + [f"- {n}" for n in notes] if notes else []
    failed = [r for r in records if r.status == FAILED]
    if failed:
        lines += ["", "## Failed cells", ""] + [f"- `{r.cell_id}`: {r.reason}" for r in failed]
    return lines


def summary_markdown(records: list[CellRecord], env: dict[str, Any]) -> str:
    if any(r.inference is not None for r in records):
        from bench.report.inference import inference_answer, inference_table

        lines = summary_head(records, env) + inference_answer(records) + inference_table(records)
        return "\n".join(lines + skipped_line(records) + notes_sections(records)) + "\n"
    if any(r.time_to_target is not None for r in records):
        lines = summary_head(records, env) + target_answer(records, env) + target_table(records, env)
        return "\n".join(lines + notes_sections(records)) + "\n"
    lines = summary_head(records, env) + fastest_section(records) + speedup_sections(records)
    lines += scaling_section(records) + notes_sections(records)
    return "\n".join(lines) + "\n"


def comparison_table(result: dict[str, Any], markdown: bool = False) -> str:
    """bench.compare's table (plain text, or Markdown for a CI comment)."""
    lines = [f"A: {result['a']}", f"B: {result['b']}"] + [f"WARNING: {w}" for w in result["warnings"]] + [""]
    units = {r["unit"] for r in result["rows"] if "ratio" in r}
    unit = units.pop() if len(units) == 1 else "throughput"
    head = ["cell", f"A {unit}", f"B {unit}", "B/A", "95% CI", "noise", "verdict", "memory added A -> B", "guards"]
    body = [_comparison_row(r) for r in result["rows"]]
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


def _comparison_row(r: dict[str, Any]) -> list[str]:
    regressed = ("REGRESSED: " + ", ".join(r["guard_regressions"])) if r["guard_regressions"] else ""
    memory = f"{r['mem_a_mb']:,.0f} -> {r['mem_b_mb']:,.0f} MiB ({r['mem_verdict']})" if "mem_verdict" in r else ""
    if "ratio" not in r:
        return [r["cell_id"], "", "", "", "", "", f"{r['verdict']} ({r['status_a']} / {r['status_b']})", memory,
                regressed]  # fmt: skip
    n_a, n_b = r.get("readings_a", 1), r.get("readings_b", 1)
    what, fmt = ("runs", ".1f") if r.get("unit") == TARGET_UNIT else ("readings", ",.0f")
    return [
        r["cell_id"],
        f"{r['throughput_a']:{fmt}}" + (f" ({n_a} {what})" if n_a > 1 else ""),
        f"{r['throughput_b']:{fmt}}" + (f" ({n_b} {what})" if n_b > 1 else ""),
        f"{r['ratio']:.3f}",
        f"{r['ci_low']:.3f}-{r['ci_high']:.3f}",
        f"±{r['noise_threshold_pct']:.1f}%",
        r["verdict"],
        memory,
        regressed or "ok",
    ]


def guard_audit_table(caught: dict[str, list[int]], alarms: dict[str, list[int]]) -> str:
    """bench.guard_audit's per-guard table: planted runs caught and healthy runs failed (false alarms)."""

    def share(tally: list[int] | None) -> str:
        return "-" if not tally or not tally[1] else f"{tally[0]} of {tally[1]}"

    names = list(dict.fromkeys([*alarms, *caught]))
    lines = ["| guard | planted faults caught | false alarms on healthy runs |", "|---|---|---|"]
    lines += [f"| {g} | {share(caught.get(g))} | {share(alarms.get(g))} |" for g in names]
    return "\n".join(lines)
