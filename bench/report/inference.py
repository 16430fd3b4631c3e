"""What an inference matrix answers, first (summary.md, the terminal's last lines, report.html): per model and
batch size the fastest runtime whose outputs passed parity, relative to eager fp32 with an interval from both
cells' repeats, and why every other runtime lost; then the latency table (no torch)."""

from __future__ import annotations

from bench.cells.contract import OK, CellRecord
from bench.cells.inference import PARITY_GUARD
from bench.stats import bootstrap_ratio_readings


def inference_records(records: list[CellRecord]) -> list[CellRecord]:
    return [r for r in records if r.status == OK and r.inference is not None]


def model_of(r: CellRecord) -> str:
    """The model a cell ran: its matrix variant, else its model axis."""
    return str(r.axes.get("variant") or r.axes.get("model.name") or "model")


def groups(records: list[CellRecord]) -> dict[tuple[str, int], list[CellRecord]]:
    """Measured inference cells by (model, batch), in the order they ran."""
    out: dict[tuple[str, int], list[CellRecord]] = {}
    for r in inference_records(records):
        out.setdefault((model_of(r), int(r.batch_size or 0)), []).append(r)
    return out


def eager_fp32(cells: list[CellRecord]) -> CellRecord | None:
    """The reference of a group: its eager fp32 cell."""
    return next((r for r in cells if r.inference and r.inference.runtime == "eager" and r.precision == "fp32"), None)


def label(r: CellRecord) -> str:
    assert r.inference is not None
    return f"{r.inference.runtime} {r.precision}" + (f", {r.threads} threads" if "train.threads" in r.axes else "")


def vs_reference(r: CellRecord, ref: CellRecord | None) -> tuple[float, float, float] | None:
    """Items/s of ``r`` over the reference's, with a 95% interval from both cells' repeats (unpaired)."""
    if ref is None or not (r.readings() and ref.readings()):
        return None
    return bootstrap_ratio_readings(ref.readings(), r.readings())


def vs_line(best: CellRecord, ref: CellRecord | None) -> str:
    if best is ref:
        return " (the eager fp32 reference itself)"
    ratio = vs_reference(best, ref)
    if ratio is None:
        return ""
    return f", {ratio[0]:.2f}x eager fp32 (95% interval {ratio[1]:.2f}-{ratio[2]:.2f}, repeats resampled)"


def why_lost(r: CellRecord, best: CellRecord) -> str:
    if not r.guards_ok:
        g = r.guards.get(PARITY_GUARD)
        return f"outputs drift (parity: {g.detail if g else 'failed'})"
    return f"slower: {r.rate:,.0f} {r.unit}, {r.rate / best.rate:.2f}x the fastest"


def inference_answer(records: list[CellRecord]) -> list[str]:
    lines = ["## Fastest runtime per model and batch (outputs checked against fp64)", ""]
    found = groups(records)
    if not found:
        return [*lines, "No inference cell was measured."]
    for (model, batch), cells in found.items():
        usable = [r for r in cells if r.usable]
        if not usable:
            lines.append(f"- **{model}, batch {batch}**: no runtime passed parity")
            continue
        best, ref = max(usable, key=lambda r: r.rate or 0), eager_fp32(cells)
        inf = best.inference
        assert inf is not None
        vs = vs_line(best, ref)
        lines.append(f"- **{model}, batch {batch}**: {label(best)}: {best.rate:,.0f} {best.unit}, latency p50 "
                     f"{inf.latency_ms_p50:.2f} ms, p99 {inf.latency_ms_p99:.2f} ms{vs}")  # fmt: skip
        lines += [
            f"  - {label(r)}: {why_lost(r, best)}" for r in sorted(cells, key=lambda r: -(r.rate or 0)) if r is not best
        ]
    return lines


def inference_table(records: list[CellRecord]) -> list[str]:
    lines = ["", "| model | batch | runtime | precision | p50 ms | p90 ms | p99 ms | items/s | vs eager fp32 | "
             "export s | parity |", "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---|"]  # fmt: skip
    for (model, batch), cells in groups(records).items():
        ref = eager_fp32(cells)
        for r in cells:
            inf = r.inference
            assert inf is not None
            ratio = vs_reference(r, ref)
            parity = "ok" if r.guards_ok else "DRIFT"
            export = f"{inf.export_s:.1f}" if inf.export_s is not None else ""
            lines.append(f"| {model} | {batch} | {inf.runtime} | {r.precision} | {inf.latency_ms_p50:.2f} | "
                         f"{inf.latency_ms_p90:.2f} | {inf.latency_ms_p99:.2f} | {r.rate:,.0f} {r.unit} | "
                         f"{f'{ratio[0]:.2f}x' if ratio else ''} | {export} | {parity} |")  # fmt: skip
    return lines
