"""fit.md: the answer first (the batch chosen, its headroom under the cap), then every probe (no torch)."""

from __future__ import annotations

from typing import Any

# What a probe's peak counts (CellRecord.mem_kind of a fit cell).
PEAK_KINDS = {
    "standalone_anon": "the process's anonymous resident memory and its loader workers' own pages",
    "cuda_max_allocated": "the CUDA allocator's peak",
}


def format_fit(report: dict[str, Any]) -> str:
    cap, chosen = report["cap_mb"], report["chosen_batch"]
    kind = PEAK_KINDS.get(report.get("peak_kind") or "", "process and loader workers")
    if chosen is None:
        head = f"**No batch size fits under {cap:,.0f} MiB**, not even batch 1 for an epoch."
    else:
        head = (f"**Batch {chosen}** trains a full epoch under {cap:,.0f} MiB: peak {report['confirmed_peak_mb']:,.0f} "
                f"MiB ({kind}), headroom {report['headroom_mb']:,.0f} MiB.")  # fmt: skip
    lines = [f"# bench.fit: {report['config']}", "", head, "",
             "| batch | run | fits | peak MiB | why not |", "|---:|---|---|---:|---|"]  # fmt: skip
    for p in report["probes"]:
        peak = f"{p['peak_mb']:,.0f}" if p.get("peak_mb") else ""
        run = "an epoch (confirmation)" if p["confirm"] else "a few steps + evaluation"
        lines.append(f"| {p['batch']} | {run} | {'yes' if p['fits'] else 'no'} | {peak} | {p.get('reason') or ''} |")
    return "\n".join(lines)
