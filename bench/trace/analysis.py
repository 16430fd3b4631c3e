"""Step-time breakdown of torch.profiler traces (numbers only; ``python -m bench.trace`` prints them).

Works on any Chrome-trace JSON written by torch.profiler (``.json`` or ``.json.gz``), not only the
harness's own: per ``ProfilerStep#N`` the time inside the phase labels (``trainer_core.phases``) and
the rest; the top operators by self time; on accelerators, kernel busy time against idle time; and how
many matmul/conv operators ran in reduced precision (a bf16 or fp16 run where that share is ~0 did
not really run in mixed precision). No torch import.
"""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from trainer_core.errors import TrainbenchError
from trainer_core.phases import PHASES

MATMUL_CONV_OPS = frozenset(
    {
        "aten::mm",
        "aten::addmm",
        "aten::bmm",
        "aten::baddbmm",
        "aten::matmul",
        "aten::linear",
        "aten::conv1d",
        "aten::conv2d",
        "aten::conv3d",
        "aten::convolution",
        "aten::_convolution",
        "aten::mkldnn_convolution",
        "aten::cudnn_convolution",
        "aten::_scaled_mm",
    }
)
REDUCED_TYPES = ("BFloat16", "Half")


class TraceError(TrainbenchError):
    """A trace file cannot be read or holds no profiler steps."""


def load_trace(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        opener = gzip.open if p.name.endswith(".gz") else open
        with opener(p, "rt", encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TraceError(f"{p}: not a readable trace ({type(e).__name__}: {e})") from None
    if not isinstance(doc, dict) or "traceEvents" not in doc:
        raise TraceError(f"{p}: not a torch.profiler trace (no traceEvents)")
    return doc


def find_traces(path: str | Path) -> list[Path]:
    p = Path(path)
    if p.is_file():
        return [p]
    if p.is_dir():
        found = sorted(x for x in p.rglob("*") if x.is_file() and x.name.endswith((".json", ".json.gz")))
        if found:
            return found
    raise TraceError(f"{p}: no trace files (.json / .json.gz) found")


def _complete_events(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in doc["traceEvents"] if isinstance(e, dict) and e.get("ph") == "X" and "dur" in e and "ts" in e]


def _union_length(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def _self_times(ops: list[dict[str, Any]]) -> dict[str, float]:
    """Self time per operator name: its duration minus that of operators nested in it (same thread)."""
    by_thread: dict[tuple[Any, Any], list[dict[str, Any]]] = defaultdict(list)
    for e in ops:
        by_thread[(e.get("pid"), e.get("tid"))].append(e)
    totals: dict[str, float] = defaultdict(float)
    for events in by_thread.values():
        events.sort(key=lambda e: (e["ts"], -e["dur"]))  # parents before the children they contain
        stack: list[tuple[float, str]] = []  # (end, name) of the enclosing operators
        for e in events:
            while stack and stack[-1][0] <= e["ts"]:
                stack.pop()
            if stack:
                totals[stack[-1][1]] -= e["dur"]  # the direct parent's self time excludes this child
            totals[e["name"]] += e["dur"]
            stack.append((e["ts"] + e["dur"], e["name"]))
    return dict(totals)


def breakdown(doc: dict[str, Any], top: int = 10) -> dict[str, Any]:
    """Per-step phase times (microseconds as in the trace, reported in ms), top ops, kernels, dtypes."""
    events = _complete_events(doc)
    steps = sorted((e for e in events if str(e["name"]).startswith("ProfilerStep#")), key=lambda e: e["ts"])
    if not steps:
        raise TraceError("trace has no ProfilerStep#N events (was it captured with a profiler schedule?)")
    labels = [e for e in events if e["name"] in PHASES and e.get("cat") in ("user_annotation", "python_function", None)]
    kernels = [e for e in events if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]
    per_step = []
    for s in steps:
        start, end = s["ts"], s["ts"] + s["dur"]
        phases = dict.fromkeys(PHASES, 0.0)
        for e in labels:
            if start <= e["ts"] < end:
                phases[e["name"]] += min(e["dur"], end - e["ts"])
        row = {"step": s["name"], "step_ms": s["dur"] / 1e3, **{f"{p}_ms": v / 1e3 for p, v in phases.items()}}
        row["other_ms"] = max(0.0, s["dur"] - sum(phases.values())) / 1e3
        if kernels:
            busy = _union_length(
                [
                    (max(k["ts"], start), min(k["ts"] + k["dur"], end))
                    for k in kernels
                    if k["ts"] < end and k["ts"] + k["dur"] > start
                ]
            )
            row["kernel_ms"] = busy / 1e3
            row["idle_ms"] = (s["dur"] - busy) / 1e3
        per_step.append(row)
    n = len(per_step)
    mean = {k: sum(r[k] for r in per_step) / n for k in per_step[0] if k != "step"}
    step_ms = mean["step_ms"]
    shares = {p: 100.0 * mean[f"{p}_ms"] / step_ms if step_ms else 0.0 for p in (*PHASES, "other")}
    ops = [e for e in events if e.get("cat") == "cpu_op"]
    self_t = _self_times(ops)
    top_ops = sorted(self_t.items(), key=lambda kv: kv[1], reverse=True)[:top]
    mm = [e for e in ops if e["name"] in MATMUL_CONV_OPS]
    typed = [e for e in mm if (e.get("args") or {}).get("Input type")]
    reduced = [e for e in typed if any(any(r in str(t) for r in REDUCED_TYPES) for t in e["args"]["Input type"])]
    return {
        "steps": n,
        "per_step": per_step,
        "mean_ms": mean,
        "phase_pct": shares,
        "top_ops": [{"name": k, "self_ms": v / 1e3 / n} for k, v in top_ops],
        "matmul_conv_ops": len(mm),
        "matmul_conv_ops_with_dtype": len(typed),
        "reduced_precision_share": (len(reduced) / len(typed)) if typed else None,
        "has_device_kernels": bool(kernels),
        "communication": communication(doc, n),
    }


def communication(doc: dict[str, Any], steps: int) -> dict[str, Any] | None:
    """A data-parallel rank's trace: its place in the job (``distributedInfo``) and the time its
    collectives (``gloo:``/``nccl:`` annotations, e.g. DDP's gradient all-reduce) took per profiled step."""
    info = doc.get("distributedInfo") or {}
    if int(info.get("world_size", 1)) <= 1:
        return None
    comm = [e for e in _complete_events(doc) if str(e["name"]).startswith(("gloo:", "nccl:"))]
    return {
        "rank": info.get("rank"),
        "world_size": info.get("world_size"),
        "backend": info.get("backend"),
        "collective_ms_per_step": sum(e["dur"] for e in comm) / 1e3 / max(1, steps),
        "collectives": sorted({str(e["name"]) for e in comm}),
    }


def format_breakdown(path: Path, b: dict[str, Any]) -> str:
    m = b["mean_ms"]
    lines = [
        f"{path}: {b['steps']} profiled steps, mean step {m['step_ms']:.2f} ms",
        "",
        "| phase | ms/step | share |",
        "|---|---:|---:|",
    ]
    for p in (*PHASES, "other"):
        lines.append(f"| {p} | {m[f'{p}_ms']:.3f} | {b['phase_pct'][p]:.1f}% |")
    if b["has_device_kernels"]:
        lines.append(f"| (device kernels busy) | {m['kernel_ms']:.3f} | {100 * m['kernel_ms'] / m['step_ms']:.1f}% |")
        lines.append(f"| (device idle) | {m['idle_ms']:.3f} | {100 * m['idle_ms'] / m['step_ms']:.1f}% |")
    lines += ["", "top operators by self time (ms/step):"]
    lines += [f"  {o['self_ms']:8.3f}  {o['name']}" for o in b["top_ops"]]
    share = b["reduced_precision_share"]
    if share is None:
        lines.append(
            f"\nmatmul/conv ops: {b['matmul_conv_ops']} (no input dtypes recorded: capture with record_shapes=True)"
        )
    else:
        lines.append(
            f"\nmatmul/conv ops in reduced precision (bf16/fp16): {100 * share:.0f}% "
            f"of {b['matmul_conv_ops_with_dtype']}"
        )
    c = b.get("communication")
    if c:
        share = 100 * c["collective_ms_per_step"] / m["step_ms"]
        lines.append(
            f"rank {c['rank']} of {c['world_size']} ({c['backend']}): collectives {c['collective_ms_per_step']:.3f} "
            f"ms/step ({share:.1f}% of the step; {', '.join(c['collectives'])})"
        )
    return "\n".join(lines)
