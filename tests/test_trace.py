from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from test_profiling import capture

from bench.trace import __main__ as trace_cli
from bench.trace.analysis import TraceError, breakdown, load_trace


def _ev(name: str, ts: float, dur: float, cat: str = "cpu_op", tid: int = 1, **args) -> dict:
    return {"ph": "X", "name": name, "ts": ts, "dur": dur, "cat": cat, "pid": 1, "tid": tid, "args": args}


KNOWN = {
    "traceEvents": [
        _ev("ProfilerStep#1", 0, 1000, cat="user_annotation"),
        _ev("data", 0, 100, cat="user_annotation"),
        _ev("h2d", 100, 50, cat="user_annotation"),
        _ev("forward", 150, 400, cat="user_annotation"),
        _ev("aten::linear", 160, 300, **{"Input type": ["c10::BFloat16", "c10::BFloat16"]}),
        _ev("aten::addmm", 170, 200, **{"Input type": ["c10::BFloat16"]}),
        _ev("backward", 550, 300, cat="user_annotation"),
        _ev("aten::mm", 560, 100, **{"Input type": ["float", "float"]}),
        _ev("optimizer", 850, 100, cat="user_annotation"),
        _ev("ProfilerStep#2", 1000, 500, cat="user_annotation"),
        _ev("forward", 1000, 500, cat="user_annotation"),
    ]
}


def test_breakdown_of_a_known_trace() -> None:
    b = breakdown(KNOWN)
    assert b["steps"] == 2
    first = b["per_step"][0]
    assert (first["data_ms"], first["h2d_ms"], first["forward_ms"], first["backward_ms"], first["optimizer_ms"]) == (
        0.1,
        0.05,
        0.4,
        0.3,
        0.1,
    )
    assert first["other_ms"] == pytest.approx(0.05)
    self_ms = {o["name"]: o["self_ms"] * b["steps"] for o in b["top_ops"]}
    assert self_ms == pytest.approx({"aten::linear": 0.1, "aten::addmm": 0.2, "aten::mm": 0.1})
    assert b["reduced_precision_share"] == pytest.approx(2 / 3)


def test_phase_shares_of_a_real_trace_sum_to_the_step(tmp_path: Path) -> None:
    capture(tmp_path / "cell", "bf16")
    (path,) = list((tmp_path / "cell").iterdir())
    b = breakdown(load_trace(path))
    assert b["steps"] == 3
    for row in b["per_step"]:
        phases = sum(row[f"{p}_ms"] for p in ("data", "h2d", "forward", "backward", "optimizer"))
        assert row["forward_ms"] > 0 and row["backward_ms"] > 0 and row["optimizer_ms"] > 0
        assert phases <= row["step_ms"] * 1.0001
        assert phases + row["other_ms"] == pytest.approx(row["step_ms"], rel=0.05)
    assert sum(b["phase_pct"].values()) == pytest.approx(100, rel=0.05)
    assert b["reduced_precision_share"] > 0.5  # bf16 autocast really ran matmuls in bf16


def test_cli_on_gz_file_and_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    gz = tmp_path / "d" / "x.pt.trace.json.gz"
    gz.parent.mkdir()
    with gzip.open(gz, "wt") as f:
        json.dump(KNOWN, f)
    assert trace_cli.cli([str(gz)]) == 0
    assert "| forward | 0.450 |" in capsys.readouterr().out
    assert trace_cli.cli([str(tmp_path / "d"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data[str(gz)]["steps"] == 2


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert trace_cli.cli([str(bad)]) == 2
    (tmp_path / "nosteps.json").write_text(json.dumps({"traceEvents": [_ev("aten::mm", 0, 1)]}))
    assert trace_cli.cli([str(tmp_path / "nosteps.json")]) == 2
    assert trace_cli.cli([str(tmp_path / "empty_dir_missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 3
        and "not a readable trace" in err[0]
        and "no ProfilerStep" in err[1]
        and "no trace files" in err[2]
    )
    with pytest.raises(TraceError):
        load_trace(bad)


def test_kernel_busy_and_idle_time_on_accelerator_traces() -> None:
    """GPU traces carry 'kernel' events on their own stream; overlapping kernels count once."""
    doc = {
        "traceEvents": [
            _ev("ProfilerStep#1", 0, 1000, cat="user_annotation"),
            _ev("forward", 0, 600, cat="user_annotation"),
            _ev("gemm_a", 100, 300, cat="kernel", tid=7),
            _ev("gemm_b", 300, 200, cat="kernel", tid=8),  # overlaps gemm_a: busy 100-500
            _ev("memcpy", 900, 200, cat="gpu_memcpy", tid=7),  # runs past the step end: only 900-1000 counts
        ]
    }
    b = breakdown(doc)
    row = b["per_step"][0]
    assert b["has_device_kernels"]
    assert row["kernel_ms"] == pytest.approx(0.5) and row["idle_ms"] == pytest.approx(0.5)
