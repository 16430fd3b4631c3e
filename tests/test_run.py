"""bench.run end to end: the smoke matrix, failing cells, validation exit codes, kill and resume."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from bench.guards.checks import GUARD_APPLIES, GUARDS
from bench.history import db as history_db
from bench.report.tables import METRIC_COLUMNS
from bench.run import __main__ as run_cli
from trainer_core.phases import PHASES

SMOKE = str(REPO / "configs" / "smoke_matrix.yaml")
TESTS = str(Path(__file__).resolve().parent)


# the guards a one-process cell runs (ddp_equivalence applies to multi-rank cells only)
ONE_PROCESS_GUARDS = [g for g in GUARDS if g not in GUARD_APPLIES]


def _run_dir(out: Path) -> Path:
    (d,) = [p for p in out.iterdir() if p.is_dir()]
    return d


@pytest.mark.slow
def test_smoke_matrix_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert (
        run_cli.cli(["--matrix", SMOKE, "--out", str(tmp_path / "results"), "--profiles", str(tmp_path / "profiles")])
        == 0
    )
    out = capsys.readouterr().out.strip().splitlines()
    d = _run_dir(tmp_path / "results")
    assert out[-1] == f"results: {d}"
    for name in (
        "cells.jsonl",
        "results.csv",
        "results.md",
        "summary.md",
        "env.json",
        "throughput_vs_batch.png",
        "data_wait.png",
        "phase_breakdown.png",
        "report.html",
    ):
        assert (d / name).is_file(), name
    records = [json.loads(x) for x in (d / "cells.jsonl").read_text().splitlines()]
    assert len(records) == 12  # 2x2x2x2 minus the two excluded (bf16, bs16) x 2 x 2 = 12
    db = history_db.connect(tmp_path / "results" / "history.sqlite")  # the run is in the results history
    assert [(r["run_id"], r["cells"]) for r in history_db.runs(db)] == [(d.name, 12)]
    db.close()
    measured = [r for r in records if r["status"] == "ok"]
    skipped = [r for r in records if r["status"] == "skipped"]
    assert len(measured) + len(skipped) == 12 and measured
    assert all(r["reason"] for r in skipped)
    for r in measured:
        assert r["samples_per_s"] > 0 and r["step_ms_p10"] <= r["step_ms_median"] <= r["step_ms_p90"]
        assert 0 <= r["data_wait_pct"] <= 100 and r["peak_mem_mb"] > 0 and r["flops_per_step"] > 0
        assert r["pct_of_peak"] is not None and r["pct_of_peak"] > 0
        assert len(r["samples_per_s_repeats"]) in (2, 4)  # 4: its repeats disagreed, timed again, still unstable
        assert r["guards_ok"], r["guards"]
        assert ("; ".join(r["notes"]) or None) == r.get("reason")  # the policy's notes, whole, and the one-line form
        # profile: on in the smoke matrix: one trace per cell folder, its breakdown merged into the row
        trace_dir = tmp_path / "profiles" / d.name / r["cell_id"]
        assert r["trace_dir"] == str(trace_dir) and len(list(trace_dir.iterdir())) == 1
        assert set(r["prof_phase_pct"]) == {*PHASES, "other"} and sum(r["prof_phase_pct"].values()) == pytest.approx(
            100, rel=0.05
        )
        assert r["profiler_slowdown"] > 0 and r["top_ops"]
        assert (tmp_path / "profiles" / d.name / "scalars" / r["cell_id"]).is_dir()
    rows = list(csv.DictReader((d / "results.csv").read_text().splitlines()))
    assert [r["cell_id"] for r in rows] == [r["cell_id"] for r in records]
    expected_columns = [
        "cell_id",
        "precision",
        "data.batch_size",
        "data.pin_memory",
        "device",
        *METRIC_COLUMNS,
        *(f"guard_{g}" for g in ONE_PROCESS_GUARDS),
        "guards_ok",
    ]
    assert list(rows[0]) == expected_columns
    for row in rows:
        if row["status"] == "ok":
            assert all(
                row[c] != ""
                for c in (
                    "samples_per_s",
                    "step_ms_median",
                    "step_ms_p10",
                    "step_ms_p90",
                    "data_wait_pct",
                    "peak_mem_mb",
                    "tflops",
                    "pct_of_peak",
                    *(f"guard_{g}" for g in ONE_PROCESS_GUARDS),
                    "prof_forward_pct",
                    "profiler_slowdown",
                    "reduced_precision_pct",
                )
            )
        else:
            assert row["reason"] and row["samples_per_s"] == ""
    md = (d / "results.md").read_text()
    assert md.count("\n") == len(records) + 2 and "% peak" in md
    env = json.loads((d / "env.json").read_text())
    for key in (
        "torch",
        "cpu",
        "torch_threads",
        "git_commit",
        "matrix",
        "command",
        "timestamp",
        "peaks",
        "cuda",
        "cudnn",
    ):
        assert key in env, key
    assert env["peaks"]["cpu"]["fp32"]["flops_per_s"] > 0
    assert "Fastest configuration per device" in (d / "summary.md").read_text()


def test_dry_run_lists_cells_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert run_cli.cli(["--matrix", SMOKE, "--out", str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "12 cells:" in out and "skip: " in out
    assert list(tmp_path.iterdir()) == []


def _matrix(tmp_path: Path, models: list[str]) -> Path:
    doc = {
        "name": "faults",
        "base": {
            "device": "cpu",
            "data": {"name": "synthetic_blobs", "n_samples": 128, "batch_size": 16},
            "model": {"name": "SimpleMLP", "kwargs": {}},
        },
        "axes": {"model.name": models},
        "measure": {
            "warmup_steps": 2,
            "settle_window": 2,
            "max_warmup_steps": 4,
            "min_steps": 3,
            "min_time_s": 0,
            "repeats": 1,
        },
        "guards": {"overfit_steps": 20, "short_run_steps": 1, "enabled": ["finite", "determinism"]},
    }
    p = tmp_path / "faults.yaml"
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    return p


@pytest.mark.slow
def test_a_cell_that_raises_is_recorded_and_the_run_goes_on(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    m = _matrix(tmp_path, ["bench.guards.planted:raises", "SimpleMLP", "bench.guards.planted:emits_nan"])
    argv = ["--matrix", str(m), "--out", str(tmp_path / "out"), "--profiles", str(tmp_path / "p")]
    assert run_cli.cli([*argv, "--executor", "forked"]) == 0  # forked children: a raise still fails one cell alone
    assert "1 of 3 measured cells failed (reasons in summary.md)" in capsys.readouterr().out
    d = _run_dir(tmp_path / "out")
    records = {r["cell_id"]: r for r in map(json.loads, (d / "cells.jsonl").read_text().splitlines())}
    assert records["bench_guards_planted_raises"]["status"] == "failed"
    assert "planted failure in forward" in records["bench_guards_planted_raises"]["reason"]
    # each cell's own output goes to cells/<cell>.log: the failed one holds its traceback
    for cid in records:
        assert (d / "cells" / f"{cid}.log").is_file(), cid
    log = (d / "cells" / "bench_guards_planted_raises.log").read_text()
    assert "Traceback" in log and "RuntimeError: planted failure in forward" in log
    assert records["SimpleMLP"]["status"] == "ok" and records["SimpleMLP"]["guards_ok"]
    nan = records["bench_guards_planted_emits_nan"]
    assert nan["status"] == "ok" and nan["guards"]["finite"]["status"] == "fail" and not nan["guards_ok"]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ({"axes": {"optim.lrr": [1]}}, "axes.optim.lrr: unknown config key"),
        ({"axes": {"precision": ["fp8"]}}, "unknown precision 'fp8'"),
        ({"axes": {"data.batch_size": ["x"]}}, "data.batch_size: Input should be a valid integer"),
    ],
)
def test_bad_matrix_stops_before_any_cell_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture, edit: dict, expected: str
) -> None:
    doc = yaml.safe_load(Path(SMOKE).read_text()) | {"exclude": []} | edit
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert run_cli.cli(["--matrix", str(p), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(p) in err and expected in err
    assert not (tmp_path / "out").exists()


def test_filter_that_matches_nothing_and_unknown_resume(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert run_cli.cli(["--matrix", SMOKE, "--out", str(tmp_path), "--filter", "precision=fp16"]) == 2
    assert run_cli.cli(["--matrix", SMOKE, "--out", str(tmp_path), "--resume", "nope"]) == 2
    err = capsys.readouterr().err
    assert "matches no cell" in err and "no run at" in err


def _runner_cmd(tmp_path: Path, *filters: str) -> list[str]:
    """bench.run on the smoke matrix as its own process, results in tmp_path/out."""
    cmd = [sys.executable, "-m", "bench.run", "--matrix", SMOKE, "--out", str(tmp_path / "out")]
    return cmd + ["--profiles", str(tmp_path / "p")] + [arg for f in filters for arg in ("--filter", f)]


def _history_rows(path: Path) -> dict[str, list[tuple]]:
    db = history_db.connect(path, create=False)
    try:
        return {t: db.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in ("runs", "cells")}
    finally:
        db.close()


@pytest.mark.slow
def test_killed_run_resumes_without_rerunning_finished_cells(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    history = out / "history.sqlite"  # bench.run's default: beside the run folders
    earlier = tmp_path / "earlier-run"
    earlier.mkdir()
    (earlier / "cells.jsonl").write_text(json.dumps({"cell_id": "x", "status": "ok", "samples_per_s": 1.0}) + "\n")
    history_db.record_in_history(history, earlier)  # a history with a run in it already
    before = _history_rows(history)
    cmd = _runner_cmd(tmp_path, "device=cpu", "data.pin_memory=false")
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        _measured_then_running(out, proc)  # one cell recorded, the next one running: then the kill
        os.killpg(proc.pid, signal.SIGKILL)  # the runner and its cell process, mid-run
    finally:
        proc.wait()
    d = _run_dir(out)
    first = (d / "cells.jsonl").read_text().splitlines()
    assert 1 <= len(first) < 3, first  # the running cell left no record
    assert _history_rows(history) == before  # a killed run is not in the history, and nothing there changed
    done = [json.loads(x)["cell_id"] for x in first]
    resumed = subprocess.run([*cmd, "--resume", d.name], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    lines = (d / "cells.jsonl").read_text().splitlines()
    assert lines[: len(first)] == first  # finished cells untouched
    ids = [json.loads(x)["cell_id"] for x in lines]
    assert sorted(ids) == sorted({"fp32-bs16-pinF-cpu", "fp32-bs32-pinF-cpu", "bf16-bs32-pinF-cpu"})
    assert len(ids) == len(set(ids))  # nothing ran twice
    progress = [ln for ln in resumed.stdout.splitlines() if ln.startswith("[")]
    assert len(progress) == 3 - len(first)  # only the missing cells were launched
    assert not any(f"] {c}:" in ln for ln in progress for c in done)
    assert resumed.stdout.strip().splitlines()[-1] == f"results: {d}"
    after = _history_rows(history)
    assert [r[0] for r in after["runs"]] == sorted(["earlier-run", d.name])  # the resumed run, recorded once
    assert [c for c in after["cells"] if c[0] == "earlier-run"] == before["cells"]
    assert len([c for c in after["cells"] if c[0] == d.name]) == len(lines)


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state first, then ppid); None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _live_cell_children(parent: int) -> list[int]:
    """Pids of running ``bench.cell`` processes whose parent is ``parent``."""
    pids = []
    for entry in Path("/proc").glob("[0-9]*"):
        fields = _proc_stat(int(entry.name))
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # ended while we looked
        if fields and int(fields[1]) == parent and fields[0] != "Z" and b"bench.cell" in cmdline:
            pids.append(int(entry.name))
    return pids


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc (Linux)")
@pytest.mark.parametrize(
    ("sig", "code", "said"),
    [(signal.SIGTERM, 143, "bench.run: terminated (SIGTERM)"), (signal.SIGINT, 130, "bench.run: interrupted")],
)
@pytest.mark.slow
def test_a_signal_stops_the_cell_in_progress_with_the_shells_exit_code(
    tmp_path: Path, sig: signal.Signals, code: int, said: str
) -> None:
    # A CI timeout or `kill` sends SIGTERM (Ctrl-C: SIGINT) to the runner only: its cell process must not
    # live on, still burning the CPU that the next job measures on.
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = _runner_cmd(tmp_path, "device=cpu")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        # The signal's moment is an event: a cell has been measured and recorded, and the next one is running.
        children, recorded = _measured_then_running(out, proc)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, err
    assert err.strip().splitlines()[-1] == said
    still_running = [pid for pid in children if (_proc_stat(pid) or ["Z"])[0] != "Z"]
    assert not still_running
    after = (_run_dir(out) / "cells.jsonl").read_text()
    assert after.startswith(recorded)  # what was recorded before the signal is intact, byte for byte
    assert all(json.loads(line)["cell_id"] for line in after.splitlines())  # and every line a whole record


def _measured_then_running(out: Path, proc: subprocess.Popen) -> tuple[list[int], str]:
    """Wait until bench.run (``proc``) has recorded a measured cell and runs the next one: (the running
    cell processes, cells.jsonl's text then). Fails if the run ends first."""
    while proc.poll() is None:
        cells = next(out.glob("*/cells.jsonl"), None) if out.exists() else None
        text = cells.read_text() if cells is not None else ""
        measured = [x for x in text.splitlines() if json.loads(x)["status"] == "ok"]
        children = _live_cell_children(proc.pid) if measured else []
        if children:
            return children, text
        time.sleep(0.05)
    raise AssertionError(f"bench.run ended (exit {proc.returncode}) before a second cell ran")


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ({"model": {"name": "NoSuchNet"}}, "model.name: unknown model 'NoSuchNet'"),
        ({"model": {"name": "no_such_pkg.models:net"}}, "model.name: cannot import module 'no_such_pkg.models'"),
        (
            {"model": {"name": "SimpleMLP", "kwargs": {"widht": 3}}},
            "model.kwargs.widht: unknown argument for SimpleMLP",
        ),
        (
            {"data": {"name": "mnist", "root": "no/such/folder"}},
            "data.name=mnist: IDX files not found (looked in: no/such/folder",
        ),
    ],
)
def test_a_matrix_that_cannot_run_is_refused_before_any_cell(
    tmp_path: Path, capsys: pytest.CaptureFixture, base: dict, expected: str
) -> None:
    doc = yaml.safe_load(Path(SMOKE).read_text())
    doc["base"] = {**doc["base"], **base}
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    for extra in ([], ["--dry-run"]):
        assert run_cli.cli(["--matrix", str(p), "--out", str(tmp_path / "out"), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith(f"bench.run: error: {p}: ") and expected in err, err
    assert not (tmp_path / "out").exists()


def test_a_run_where_every_measured_cell_failed_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    m = _matrix(tmp_path, ["bench.guards.planted:raises"])
    assert run_cli.cli(["--matrix", str(m), "--out", str(tmp_path / "out"), "--profiles", str(tmp_path / "p")]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-4:-2] == [
        "1 of 1 measured cells failed (reasons in summary.md)",
        "no cell was measured successfully: exit code 1",
    ]
    assert lines[-2].startswith("history: ") and lines[-1].startswith("results: ")


@pytest.mark.slow
def test_cells_dispatched_as_submitit_jobs_give_the_same_records(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # submitit's local executor here; on a cluster the same code submits Slurm jobs (README)
    argv = ["--matrix", SMOKE, "--filter", "device=cpu", "--filter", "data.pin_memory=false",
            "--profiles", str(tmp_path / "profiles"), "--executor", "submitit"]  # fmt: skip
    assert run_cli.cli([*argv, "--out", str(tmp_path / "results")]) == 0
    d = _run_dir(tmp_path / "results")
    records = [json.loads(x) for x in (d / "cells.jsonl").read_text().splitlines()]
    assert [r["cell_id"] for r in records] == ["fp32-bs16-pinF-cpu", "fp32-bs32-pinF-cpu", "bf16-bs32-pinF-cpu"]
    assert all(r["status"] == "ok" and r["guards_ok"] and r["machine"]["hostname"] for r in records)
    assert list((d / "submitit").iterdir())  # submitit's job folders (logs, pickled results)
    # a bad option is one line before anything runs
    capsys.readouterr()
    assert run_cli.cli([*argv, "--executor-opt", "nodes=2", "--out", str(tmp_path / "bad")]) == 2
    assert "--executor-opt nodes: unknown; expected one of cluster, partition" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_a_time_to_target_matrix_opens_with_the_fastest_cell_to_the_target(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    matrix = {
        "name": "tta",
        "base": {"device": "cpu", "seed": 0, "data": {"name": "synthetic_blobs", "n_samples": 256, "n_test_samples": 64,
                 "val_fraction": 0.25}, "model": {"name": "SimpleMLP", "kwargs": {"input_dim": 2, "hidden_dims": [16]}},
                 "optim": {"lr": 0.01, "lr_scaling": "linear", "reference_batch_size": 16}, "train": {"epochs": 4}},
        "axes": {"data.batch_size": [16, 64]},
        "measure": {"mode": "time_to_target", "target": {"metric": "val_accuracy", "value": 0.8}, "runs": 3},
        "guards": {"overfit_samples": 8, "overfit_steps": 60, "short_run_steps": 2},
    }  # fmt: skip
    path = tmp_path / "tta.yaml"
    path.write_text(yaml.safe_dump(matrix))
    rc = run_cli.cli(["--matrix", str(path), "--out", str(tmp_path / "r"), "--profiles", str(tmp_path / "p"),
                      "--executor", "forked"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0, out
    d = _run_dir(tmp_path / "r")
    records = [json.loads(x) for x in (d / "cells.jsonl").read_text().splitlines()]
    assert [r["cell_id"] for r in records] == ["bs16", "bs64"]
    assert [r["optim"]["lr"] for r in records] == pytest.approx([0.01, 0.04])  # linear scaling from batch 16
    for r in records:
        t = r["time_to_target"]
        assert r["status"] == "ok" and r["guards_ok"] and len(t["runs"]) == 3 and t["target"]["value"] == 0.8
    summary = (d / "summary.md").read_text().splitlines()
    assert summary[4].startswith("## Fastest to val_accuracy >= 0.8 (all guards passed; MLPerf scoring)")
    reached = sorted(
        (r for r in records if r["time_to_target"]["reached"]), key=lambda r: r["time_to_target"]["score_s"]
    )
    assert reached and summary[6].startswith(f"**`{reached[0]['cell_id']}`**: ")
    assert "## Time to target, every cell" in summary and "| cell | score s |" in "\n".join(summary)
    assert "Why the others lost:" in out and out.strip().splitlines()[-1] == f"results: {d}"
    page = (d / "report.html").read_text()
    assert page.index("Fastest to val_accuracy &gt;= 0.8") < page.index("<h2>Cells</h2>") and "score s" in page
    assert (d / "time_to_target.png").is_file()
    for cell in ("bs16", "bs64"):  # each seed's run is kept for --resume
        assert sorted(p.name for p in (d / "cells" / f"{cell}.target").iterdir()) == ["seed-0", "seed-1", "seed-2"]
