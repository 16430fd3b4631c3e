"""Text of an export: the manifest's summary and the parity table (no torch)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def format_parity(parity: Sequence[Any]) -> str:
    """One row per batch checked (Parity models or their dicts)."""
    rows = ["| batch | passed | error vs fp64 | eager's error | k | max abs | max rel | top-1 agreement |",
            "|---:|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for p in parity:
        d = p if isinstance(p, dict) else p.model_dump()
        rows.append(f"| {d['batch']} | {'yes' if d['passed'] else 'NO'} | {d['exported_error']:.3g} | "
                    f"{d['eager_error']:.3g} | {d['k']:g} | {d['max_abs']:.3g} | {d['max_rel']:.3g} | "
                    f"{d['top1_agreement']:.4f} |")  # fmt: skip
    return "\n".join(rows)


def format_manifest(info: dict[str, Any]) -> str:
    src, x = info["source"], info["input"]
    shape = "x".join(str(d) for d in x["shape"])
    lines = [
        f"{info['format']}: {info['file']} ({info['bytes'] / 1e6:.2f} MB, sha256 {info['sha256'][:12]}), "
        f"exported in {info['export_s']:.1f} s by {info['exporter']}"
        + (f", opset {info['opset']}" if info.get("opset") else ""),
        f"from {src['checkpoint']} ({src['model']}, {src['precision']}, epoch {src['epoch']}, "
        f"commit {src['git_commit'] or 'unknown'})",
        f"input: {shape} {x['dtype']}" + (" (dynamic batch)" if x["dynamic_batch"] else ""),
        "parity against fp64 on the run's test split:",
        format_parity(info["parity"]),
    ]
    if info.get("note"):
        lines.append(f"note: {info['note']}")
    return "\n".join(lines)
