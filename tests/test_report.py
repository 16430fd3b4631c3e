import csv
from pathlib import Path

import pytest

from bench.cells.contract import CellRecord
from bench.guards.checks import GUARDS
from bench.report.tables import (
    METRIC_COLUMNS,
    fastest_per_device,
    fastest_section,
    markdown_table,
    scaling_rows,
    speedups_vs_fp32,
    summary_markdown,
    write_csv,
)


def _rec(
    cid: str, precision: str, bs: int, sps: float, ok: bool = True, status: str = "ok", **extra: object
) -> CellRecord:
    guards = {g: {"name": g, "status": "pass" if ok else "fail", "detail": ""} for g in GUARDS}
    return CellRecord.model_validate(
        {
            "cell_id": cid,
            "axes": {"precision": precision, "data.batch_size": bs},
            "status": status,
            "device": "cpu",
            "samples_per_s": sps,
            "step_ms_median": 1.0,
            "step_ms_p10": 0.9,
            "step_ms_p90": 1.1,
            "data_wait_pct": 1.0,
            "guards": guards if status == "ok" else {},
            "guards_ok": ok if status == "ok" else None,
            "reason": None if status == "ok" else "CUDA not available",
            **extra,
        }
    )


RECORDS = [
    _rec("a", "fp32", 64, 100.0),
    _rec("b", "bf16", 64, 250.0),
    _rec("c", "fp16", 64, 900.0, ok=False),
    _rec("d", "fp32", 128, 120.0),
    _rec("e", "bf16", 128, 0.0, status="skipped"),
]


def test_speedup_against_matching_fp32_cell() -> None:
    s = {x["cell_id"]: x for x in speedups_vs_fp32(RECORDS)}
    assert s["b"]["vs"] == "a" and s["b"]["speedup"] == 2.5
    assert s["c"]["speedup"] == 9.0 and s["c"]["guards_ok"] is False
    assert "e" not in s and "a" not in s


def test_a_guard_failure_is_never_recommended() -> None:
    assert fastest_per_device(RECORDS)["cpu"].cell_id == "b"
    summary = summary_markdown(RECORDS, {"matrix_name": "t"})
    answer = summary.split("## Speedup")[0]
    assert "- **cpu**: `b` (precision=bf16, data.batch_size=64): 250 samples/s" in answer
    assert "  - `c`: a guard failed (overfit, finite, determinism, resume, ddp_equivalence)" in answer
    assert "  - `d`: slower: 120 samples/s, 0.48x the fastest" in answer
    assert answer.index("`c`: a guard failed") < answer.index("`d`: slower") < answer.index("`a`: slower")
    assert "1 cells skipped: CUDA not available (1)" in answer and summary.count("CUDA not available") == 1


def test_the_answer_gives_the_speedup_over_the_baseline_cell_with_an_interval() -> None:
    steps = {"steps_per_repeat": 5, "items_per_step": 64}
    base = _rec("a", "fp32", 64, 6400.0, step_s=[0.010] * 15, **steps)
    jittery = [0.004, 0.0041, 0.0039, 0.004, 0.004] + [0.0038, 0.0039, 0.0038, 0.0038, 0.0038] * 2
    fast = _rec("b", "bf16", 64, 16000.0, step_s=jittery, **steps)
    lines = "\n".join(fastest_section([base, fast]))
    # baseline median step 10 ms, the winner's 3.8 ms: 2.63x; the repeats' bootstrap spans 2.50 (4.0 ms) to 2.63
    assert "  2.63x the throughput of the baseline `a` (95% interval 2.50-2.63," in lines
    assert fast.readings() == [jittery[:5], jittery[5:10], jittery[10:]]
    assert base.rate_band == pytest.approx((6400 / 1.1, 6400 / 0.9))  # rate at the p90 and at the p10 step


def test_csv_and_markdown_have_every_row_and_column(tmp_path: Path) -> None:
    write_csv(RECORDS, tmp_path / "r.csv")
    rows = list(csv.DictReader((tmp_path / "r.csv").read_text().splitlines()))
    assert len(rows) == 5
    assert list(rows[0]) == [
        "cell_id",
        "precision",
        "data.batch_size",
        *METRIC_COLUMNS,
        *(f"guard_{g}" for g in GUARDS),
        "guards_ok",
    ]
    assert rows[2]["guard_overfit"] == "fail" and rows[4]["reason"] == "CUDA not available"
    md = markdown_table(RECORDS)
    assert md.count("\n") == 6 and "ove:FAIL" in md


def test_profile_warnings_reach_the_summary() -> None:
    rec = _rec(
        "f",
        "bf16",
        64,
        200.0,
        mixed_precision_warning="bf16 cell but only 0% of matmul/conv ops ran in reduced precision",
        trace_warning="trace is 80 MB (> 50 MB): shorten profile.active or drop with_stack",
    )
    summary = summary_markdown([rec], {"matrix_name": "t"})
    assert "`f`: bf16 cell but only 0%" in summary and "`f`: trace is 80 MB" in summary


def test_policy_notes_are_listed_whole_once() -> None:
    # A note may itself contain "; " (the separator of the one-line reason in the tables).
    note = "bf16-true: no fp32 master weights; check accuracy"
    recs = [_rec(c, "bf16-true", 64, 200.0, reason=note, notes=[note]) for c in ("g", "h")]
    old = _rec("i", "fp16", 64, 10.0, reason="fp16 emulated on this CPU")  # written before "notes" existed
    summary = summary_markdown(recs + [old], {"matrix_name": "t"})
    assert summary.count(f"- {note}\n") == 1 and "- check accuracy" not in summary
    assert "- fp16 emulated on this CPU\n" in summary


def test_scaling_table_gives_speedup_and_efficiency_against_one_process() -> None:
    def cell(cid: str, ranks: int, sps: float, **extra: object) -> CellRecord:
        rec = _rec(cid, "fp32", 64, sps, world_size=ranks, threads=2 // ranks, **extra)
        return rec.model_copy(update={"axes": {"train.world_size": ranks, "precision": "fp32"}})

    records = [cell("one", 1, 1000.0), cell("two", 2, 1500.0, threads_per_rank=1, comm_pct=12.5, straggler_pct=3.0)]
    (row,) = scaling_rows(records)
    assert row["vs"] == "one" and row["speedup"] == 1.5 and row["efficiency"] == 0.75
    summary = summary_markdown(records, {"matrix_name": "t"})
    assert "## Scaling: data-parallel ranks against one process" in summary
    assert "| two | one | 2 | 2 x 1 vs 2 | 1,500 samples/s | 1,000 | 1.50x | 75% | 12.5 | 3.0 | ok |" in summary
    assert "## Scaling" not in summary_markdown(RECORDS, {"matrix_name": "t"})  # no ranks, no table


def test_fastest_is_chosen_per_unit_when_workloads_are_mixed() -> None:
    lm = _rec("lm", "fp32", 12, 10.0, throughput=20_000.0, throughput_unit="tokens/s")
    best = fastest_per_device([*RECORDS, lm])
    assert best["cpu (samples/s)"].cell_id == "b" and best["cpu (tokens/s)"].cell_id == "lm"


def test_an_unstable_cell_is_said_wherever_it_is_used() -> None:
    shaky = _rec("b", "bf16", 64, 250.0, unstable=True, repeat_spread_pct=62.0)
    records = [RECORDS[0], shaky]
    summary = summary_markdown(records, {"matrix_name": "t"})
    assert "| b | a | 2.50x | ok | unstable: b |" in summary  # the speedup says so
    assert "**Unstable**: its repeats spread 62% even when timed again" in summary.split("## Speedup")[0]
    assert "UNSTABLE (repeats spread 62.0%)" in markdown_table(records)


def test_plot_lines_are_labelled_by_the_axes_that_vary() -> None:
    from bench.report.tables import lines_by_other_axes

    recs = [
        CellRecord(cell_id=f"{p}-{b}", status="ok", axes={"precision": p, "data.batch_size": b, "device": "cpu"})
        for p in ("fp32", "bf16")
        for b in (32, 64)
    ]
    lines = lines_by_other_axes(recs, ("data.batch_size",))
    assert {k: [r.cell_id for r in v] for k, v in lines.items()} == {
        "precision=fp32": ["fp32-32", "fp32-64"],
        "precision=bf16": ["bf16-32", "bf16-64"],
    }
    assert list(lines_by_other_axes(recs[:1], ())) == ["all"]  # nothing varies


def test_the_throughput_chart_shows_each_cells_p10_p90_band() -> None:
    from bench.report.figures import throughput_vs_batch

    fig = throughput_vs_batch(RECORDS)
    assert fig is not None
    (fp32,) = [t for t in fig.data if t.name == "precision=fp32"]
    assert list(fp32.x) == [64, 128] and list(fp32.y) == [100.0, 120.0]
    # median 1.0 ms, p10 0.9, p90 1.1: throughput 100/0.9 at the p10 step, 100/1.1 at the p90 step
    assert list(fp32.error_y.array) == pytest.approx([100 / 0.9 - 100, 120 / 0.9 - 120])
    assert list(fp32.error_y.arrayminus) == pytest.approx([100 - 100 / 1.1, 120 - 120 / 1.1])
