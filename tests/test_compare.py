"""bench.compare on two synthetic results dirs: a planted 20% slowdown in one cell, noise elsewhere."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.compare import __main__ as compare_cli
from bench.compare.comparison import SAME, SLOWER, compare, load_results
from bench.stats import bootstrap_ratio_readings

CELLS = [{"precision": p, "data.batch_size": bs} for p in ("fp32", "bf16") for bs in (64, 256)]
PASS = {g: {"name": g, "status": "pass", "detail": ""} for g in ("overfit", "finite", "determinism", "resume")}


def _write(
    d: Path,
    seed: int,
    slow: dict[str, float] | None = None,
    torch_version: str = "2.14.1",
    guards: dict[str, dict] | None = None,
    drop: int | None = None,
) -> Path:
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True)
    lines = []
    for i, axes in enumerate(CELLS):
        if i == drop:
            continue
        cid = f"{axes['precision']}-bs{axes['data.batch_size']}"
        base = 0.02 * (1 + i)  # seconds per step
        factor = (slow or {}).get(cid, 1.0)
        steps = (base * factor * (1 + 0.03 * rng.standard_normal(90))).tolist()  # ~3% step-to-step noise
        bs = axes["data.batch_size"]
        lines.append(
            json.dumps(
                {
                    "cell_id": cid,
                    "axes": axes,
                    "status": "ok",
                    "step_s": steps,
                    "samples_per_s": bs / float(np.median(steps)),
                    "repeat_spread_pct": 2.0,
                    "guards": (guards or {}).get(cid, PASS),
                }
            )
        )
    (d / "cells.jsonl").write_text("\n".join(lines) + "\n")
    (d / "env.json").write_text(json.dumps({"torch": torch_version, "cpu": "X", "torch_threads": 2}))
    return d


@pytest.fixture
def runs(tmp_path: Path) -> tuple[Path, Path]:
    a = _write(tmp_path / "a", seed=1)
    b = _write(tmp_path / "b", seed=2, slow={"bf16-bs64": 1.25})  # 1/1.25 = 20% fewer samples/s
    return a, b


def test_planted_slowdown_is_flagged_and_noise_is_not(runs: tuple[Path, Path]) -> None:
    result = compare(*runs)
    verdicts = {r["cell_id"]: r["verdict"] for r in result["rows"]}
    assert verdicts == {"fp32-bs64": SAME, "fp32-bs256": SAME, "bf16-bs64": SLOWER, "bf16-bs256": SAME}
    slow = next(r for r in result["rows"] if r["cell_id"] == "bf16-bs64")
    assert slow["ratio"] == pytest.approx(0.8, abs=0.03)
    assert slow["ci_low"] < slow["ratio"] < slow["ci_high"] < 1.0
    assert result["warnings"] == []


@pytest.mark.parametrize(("threshold", "code"), [(None, 0), ("10", 1), ("30", 0)])
def test_exit_code_follows_fail_threshold(
    runs: tuple[Path, Path], threshold: str | None, code: int, capsys: pytest.CaptureFixture
) -> None:
    argv = [str(runs[0]), str(runs[1])] + (["--fail-threshold", threshold] if threshold else [])
    assert compare_cli.cli(argv) == code
    out = capsys.readouterr().out
    assert "bf16-bs64" in out and "slower" in out
    assert ("FAIL: bf16-bs64: " in out) == (code == 1)


def test_guard_regression_missing_cells_and_env_change(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a = _write(tmp_path / "a", seed=1)
    broken = {"fp32-bs256": {**PASS, "resume": {"name": "resume", "status": "fail", "detail": "weights differ"}}}
    b = _write(tmp_path / "b", seed=2, torch_version="2.15.0", guards=broken, drop=0)
    result = compare(a, b)
    assert result["only_in_a"] == ["data.batch_size=64, precision=fp32"] and result["only_in_b"] == []
    assert result["warnings"] == ["environment changed: torch: '2.14.1' -> '2.15.0'"]
    assert next(r for r in result["rows"] if r["cell_id"] == "fp32-bs256")["guard_regressions"] == ["resume"]
    assert compare_cli.cli([str(a), str(b), "--markdown"]) == 1  # a guard regression always fails
    out = capsys.readouterr().out
    assert out.splitlines()[2].startswith("WARNING: environment changed: torch")
    assert "| cell | A samples/s |" in out and "only in A: data.batch_size=64, precision=fp32" in out


def test_json_output_and_bad_path(runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert compare_cli.cli([str(runs[0]), str(runs[1]), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["rows"]) == 4 and data["failures"] == []
    assert compare_cli.cli([str(runs[0]), str(tmp_path / "nope")]) == 2
    assert "no cells.jsonl" in capsys.readouterr().err


def _write_readings(
    d: Path, seed: int, drifts: list[float], step: float, guard_status: list[str] | None = None
) -> Path:
    """One configuration read len(drifts) times (as bench.tune does), each reading at its own machine speed."""
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True)
    axes = {"precision": "bf16", "data.batch_size": 128}
    lines = []
    for i, drift in enumerate(drifts):
        steps = (step * drift * (1 + 0.01 * rng.standard_normal(60))).tolist()
        guards = {
            **PASS,
            "overfit": {"name": "overfit", "status": (guard_status or ["pass"] * len(drifts))[i], "detail": ""},
        }
        lines.append(
            json.dumps(
                {
                    "cell_id": f"t{i + 1:02d}-x",
                    "axes": axes,
                    "status": "ok",
                    "step_s": steps,
                    "samples_per_s": 128 / float(np.median(steps)),
                    "repeat_spread_pct": 1.0,
                    "guards": guards,
                }
            )
        )
    (d / "cells.jsonl").write_text("\n".join(lines) + "\n")
    return d


def test_repeated_readings_are_pooled_and_their_drift_widens_the_interval(tmp_path: Path) -> None:
    a = _write_readings(tmp_path / "a", 1, [1.0, 1.15, 0.9, 1.05], step=0.030)
    b = _write_readings(
        tmp_path / "b", 2, [1.1, 0.95, 1.0, 0.85], step=0.030, guard_status=["pass", "fail", "pass", "pass"]
    )
    _, cells = load_results(b)
    (rec,) = cells.values()
    assert len(rec.measured) == 4 and sum(len(r.step_s) for r in rec.measured) == 240
    assert rec.guards["overfit"].status == "fail"  # one failing reading is a failing configuration
    assert all(r.schema_version == 1 for r in rec.records)  # records written before the contract had a version
    row = compare(a, b)["rows"][0]
    assert row["readings_a"] == row["readings_b"] == 4 and row["guard_regressions"] == ["overfit"]

    # the same steps pooled as if each run had one reading: a much tighter, over-confident interval
    def all_steps(d: Path) -> list[float]:
        return [x for line in (d / "cells.jsonl").read_text().splitlines() for x in json.loads(line)["step_s"]]

    _, lo, hi = bootstrap_ratio_readings([all_steps(a)], [all_steps(b)])
    assert row["ci_high"] - row["ci_low"] > 2 * (hi - lo)
    assert row["verdict"] == SAME  # same true speed, drift only


def test_cells_measured_on_different_hardware_are_flagged(tmp_path: Path) -> None:
    from bench.cells.contract import CellRecord
    from bench.compare.comparison import Readings, hardware_warnings

    def rec(cpu: str) -> Readings:
        machine = {"hostname": "node1", "cpu": cpu, "gpus": [], "driver": None}
        return Readings([CellRecord(cell_id="c", status="ok", step_s=[0.1], machine=machine)])

    (line,) = hardware_warnings([(rec("Xeon"), rec("EPYC")), (rec("Xeon"), rec("Xeon"))])
    assert line.startswith("different hardware: 1 compared cell(s) ran on 'Xeon; no GPU' in A and 'EPYC; no GPU'")


def test_a_comparison_of_no_common_measured_cell_fails(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a = _write(tmp_path / "a", seed=1)
    failed = tmp_path / "b"
    failed.mkdir()
    rows = [json.dumps({"cell_id": "fp32-bs64", "axes": CELLS[0], "status": "failed", "reason": "boom"})]
    (failed / "cells.jsonl").write_text("\n".join(rows) + "\n")
    assert compare_cli.cli([str(a), str(failed)]) == 1  # one cell matched, measured on one side only
    out = capsys.readouterr().out
    assert "FAIL: no cell was compared: 1 matched by their axes, none measured on both sides (3 only in A" in out
    other = tmp_path / "c"
    other.mkdir()
    (other / "cells.jsonl").write_text(json.dumps({"cell_id": "x", "axes": {"precision": "fp64"}, "status": "ok",
                                                   "step_s": [0.1, 0.1], "samples_per_s": 10.0}) + "\n")  # fmt: skip
    assert compare_cli.cli([str(a), str(other), "--fail-threshold", "5"]) == 1
    assert "no cell was compared: 0 matched" in capsys.readouterr().out


def _target_cells(d: Path, seconds: list[float | None], samples_per_s: float) -> Path:
    from bench.cells.contract import CellRecord
    from bench.cells.target import Target, TargetRun
    from bench.target.scoring import score_runs

    target = Target(metric="val_accuracy", value=0.89)
    runs = [TargetRun(seed=i, reached=s is not None, seconds=s or 500.0, setup_s=1.0, epochs=3.0, steps=300,
                      samples=19200, final=0.9 if s else 0.8) for i, s in enumerate(seconds)]  # fmt: skip
    record = CellRecord(cell_id="bs512", axes={"data.batch_size": 512}, status="ok", samples_per_s=samples_per_s,
                        throughput=samples_per_s, guards=PASS, guards_ok=True,
                        time_to_target=score_runs(target, runs))  # fmt: skip
    d.mkdir()
    (d / "cells.jsonl").write_text(record.to_json() + "\n")
    return d


def test_time_to_target_cells_are_compared_by_time_not_samples_per_s(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    a = _target_cells(tmp_path / "a", [48.0, 50.0, 52.0, 49.0, 51.0], samples_per_s=2000.0)
    # B steps 50% faster but needs more epochs: 90 s to the target against 50
    b = _target_cells(tmp_path / "b", [88.0, 90.0, 92.0, 89.0, 91.0], samples_per_s=3000.0)
    (row,) = compare(a, b)["rows"]
    assert row["unit"] == "s to target" and row["verdict"] == SLOWER
    assert row["ratio"] == pytest.approx(50.0 / 90.0) and row["ci_low"] <= row["ratio"] <= row["ci_high"] < 1.0
    assert compare_cli.cli([str(a), str(b), "--fail-threshold", "10"]) == 1
    assert "bs512: 44.4% slower (limit 10%)" in capsys.readouterr().out
    # two runs of five short of the target: B no longer reaches it, which fails whatever the threshold
    lost = _target_cells(tmp_path / "lost", [48.0, None, 52.0, None, 51.0], samples_per_s=3000.0)
    assert compare_cli.cli([str(a), str(lost)]) == 1
    assert "FAIL: bs512: reached val_accuracy >= 0.89 in A, not in B" in capsys.readouterr().out


def test_memory_is_compared_like_throughput_and_more_of_it_beyond_the_limit_fails() -> None:
    from bench.cells.contract import CellRecord
    from bench.compare.comparison import Readings, compare_memory, failures

    def side(*added: float) -> Readings:
        return Readings([CellRecord(cell_id="c", status="ok", step_s=[0.01] * 5, mem_baseline_mb=500.0,
                                    mem_peak_mb=500.0 + m, mem_workers_mb=0.0) for m in added])  # fmt: skip

    assert compare_memory(side(200.0), side(205.0))["mem_verdict"] == "no change"  # under 16 MiB and 10%
    grew = compare_memory(side(200.0, 204.0), side(300.0))
    assert grew["mem_verdict"] == "more" and grew["mem_change_pct"] == pytest.approx(48.51, abs=0.01)
    assert compare_memory(side(300.0), side(200.0))["mem_verdict"] == "less"
    assert compare_memory(side(200.0, 290.0), side(300.0))["mem_verdict"] == "no change"  # within A's own spread
    assert compare_memory(side(200.0), Readings([CellRecord(cell_id="c", status="ok", step_s=[0.01])])) == {}
    row = {"cell_id": "c", "verdict": "no change", "guard_regressions": [], **grew}
    result = {"rows": [row], "only_in_a": [], "only_in_b": []}
    assert failures(result, 10.0) == ["c: needs 48.5% more memory (202 -> 300 MiB added; limit 10%)"]
    assert failures(result, 50.0) == [] and failures(result, None) == []
