"""The results history: runs recorded once and transactionally, listed and followed per cell, and the
change check that flags a planted regression but stays quiet on A/A noise."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from bench.cells.contract import CellRecord, GuardResult
from bench.cells.store import append_record
from bench.history import __main__ as history_cli
from bench.history import db as history_db

MACHINE = {"hostname": "h", "cpu": "Xeon", "gpus": [], "driver": None}


def _run(root: Path, name: str, rate: float, commit: str = "abc", mem_added: float | None = None) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "env.json").write_text(json.dumps({"git_commit": commit, "torch": "2.15.0", "threads": 2}))
    guard = {"finite": GuardResult(name="finite", status="pass", detail="")}
    for cid, r in (("fast", rate), ("slow", rate / 10)):
        append_record(
            d / "cells.jsonl",
            CellRecord(
                cell_id=cid,
                status="ok",
                samples_per_s=r,
                step_s=[0.1],
                guards=guard,
                guards_ok=True,
                machine=MACHINE,
                axes={"data.batch_size": 64},
                mem_baseline_mb=None if mem_added is None else 500.0,
                mem_peak_mb=None if mem_added is None else 500.0 + mem_added,
            ),  # fmt: skip
        )
    return d


def test_runs_are_recorded_once_listed_and_followed(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    db_path = tmp_path / "h.sqlite"
    a, b = _run(tmp_path, "run-a", 100.0), _run(tmp_path, "run-b", 110.0, commit="def-dirty")
    assert history_cli.cli(["--history", str(db_path), "ingest", str(a), str(b)]) == 0
    assert history_cli.cli(["--history", str(db_path), "ingest", str(a)]) == 0  # a finished run is never changed
    out = capsys.readouterr().out
    assert "run-a: recorded" in out and "run-a: already recorded, left as it is" in out
    db = history_db.connect(db_path)
    assert [r["run_id"] for r in history_db.runs(db)] == ["run-a", "run-b"]
    assert history_db.runs(db)[1]["git_dirty"] == 1 and history_db.runs(db)[1]["git_commit"] == "def"
    assert db.execute("PRAGMA user_version").fetchone()[0] == history_db.SCHEMA_VERSION
    db.close()
    assert history_cli.cli(["--history", str(db_path), "show", "fast"]) == 0
    shown = capsys.readouterr().out
    assert "fast on Xeon / []:" in shown and "100.0 samples/s" in shown and "110.0 samples/s" in shown


def test_a_failed_write_leaves_the_database_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = history_db.connect(tmp_path / "h.sqlite")

    def broken(run_id: str, records: list) -> list:  # the run's row is in, its cells fail
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(history_db, "_cell_rows", broken)
    with pytest.raises(sqlite3.OperationalError):
        history_db.ingest_dir(db, _run(tmp_path, "run-a", 100.0))
    assert db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0


@pytest.mark.parametrize("planted", [None, 0.85])
def test_check_flags_a_planted_regression_and_is_quiet_on_noise(tmp_path: Path, planted: float | None) -> None:
    rng = np.random.default_rng(0)
    db_path = tmp_path / "h.sqlite"
    rates = list(100.0 * (1 + 0.02 * rng.standard_normal(8)))  # A/A: 2% noise run to run
    if planted:
        rates[-1] = 100.0 * planted
    for i, r in enumerate(rates):
        history_cli.cli(["--history", str(db_path), "ingest", str(_run(tmp_path, f"run-{i}", r))])
    assert history_cli.cli(["--history", str(db_path), "check"]) == (1 if planted else 0)


@pytest.mark.parametrize("grown", [None, 1.3])
def test_check_flags_a_configuration_that_needs_more_memory(
    tmp_path: Path, capsys: pytest.CaptureFixture, grown: float | None
) -> None:
    rng = np.random.default_rng(1)
    db_path = tmp_path / "h.sqlite"
    added = list(200.0 * (1 + 0.01 * rng.standard_normal(6)))  # same speed, memory steady to 1%
    if grown:
        added[-1] = 200.0 * grown
    for i, m in enumerate(added):
        history_cli.cli(["--history", str(db_path), "ingest", str(_run(tmp_path, f"run-{i}", 100.0, mem_added=m))])
    assert history_cli.cli(["--history", str(db_path), "check"]) == (1 if grown else 0)
    out = capsys.readouterr().out
    assert ("REGRESSION: fast (" in out and "MiB added (memory) (+" in out) if grown else "REGRESSION" not in out


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    sqlite3.connect(path).execute("PRAGMA user_version = 99").connection.close()
    with pytest.raises(history_db.HistoryError, match="newer than this trainbench"):
        history_db.connect(path)


def test_a_version_1_database_is_migrated_with_its_runs_kept(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    old = sqlite3.connect(path)
    old.executescript(history_db.MIGRATIONS[1])
    old.execute("PRAGMA user_version = 1")
    old.execute("INSERT INTO runs (run_id, kind, recorded_at, env_json) VALUES ('old-run', 'run', 't', '{}')")
    old.commit()
    old.close()
    db = history_db.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == history_db.SCHEMA_VERSION == 2
    assert [r["run_id"] for r in history_db.runs(db)] == ["old-run"] and history_db.verdicts(db) == []
    db.close()


def test_pytest_benchmark_json_is_recorded_once(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = {
        "machine_info": {"node": "box", "cpu": {"brand_raw": "Xeon"}},
        "commit_info": {"id": "abc", "dirty": False},
        "benchmarks": [{"group": "g", "name": "t", "fullname": "f.py::t", "stats": {"data": [0.01, 0.02, 0.01]}}],
    }
    path = tmp_path / "0001_abc.json"
    path.write_text(json.dumps(data))
    db_path = tmp_path / "h.sqlite"
    assert history_cli.cli(["--history", str(db_path), "ingest", str(path)]) == 0
    assert history_cli.cli(["--history", str(db_path), "ingest", str(path)]) == 0
    assert "already recorded" in capsys.readouterr().out
    db = history_db.connect(db_path)
    (run,) = history_db.runs(db)
    assert run["kind"] == "pytest-benchmark" and run["git_commit"] == "abc" and run["measured"] == 1
    (points,) = history_db.series(db, "f.py::t").values()
    assert points[0]["throughput"] == pytest.approx(100.0) and points[0]["unit"] == "calls/s"
    db.close()


def test_list_shows_ab_verdicts_and_report_writes_the_page(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = _run(tmp_path, "ab-1", 100.0)
    ab = {"sides": {"A": {"given": "HEAD~1"}, "B": {"given": "HEAD"}}, "rounds": 7, "min_effect_pct": 3.0,
          "results": {"cell": {"ratio": 0.9, "ci_low": 0.88, "ci_high": 0.92, "verdict": "slower"}}}  # fmt: skip
    (run / "ab.json").write_text(json.dumps(ab))
    db_path = tmp_path / "h.sqlite"
    assert history_cli.cli(["--history", str(db_path), "ingest", str(run)]) == 0
    assert history_cli.cli(["--history", str(db_path), "list"]) == 0
    assert "ab-1  cell: slower (B/A 0.900, 95% CI 0.880-0.920, 7 rounds)" in capsys.readouterr().out
    assert history_cli.cli(["--history", str(db_path), "report"]) == 0
    page = (tmp_path / "history.html").read_text()
    assert "A/B verdicts" in page and "HEAD~1" in page and "fast" in page


def test_cells_of_two_matrices_are_two_series_and_ab_readings_stay_out(tmp_path: Path) -> None:
    db = history_db.connect(tmp_path / "h.sqlite")
    for i, matrix in enumerate(["amp", "other", "amp"]):
        run = _run(tmp_path, f"run-{i}", 100.0 + i)
        (run / "env.json").write_text(json.dumps({"matrix_name": matrix, "git_commit": "abc"}))
        history_db.ingest_dir(db, run)
    ab = tmp_path / "ab-1"
    ab.mkdir()
    append_record(ab / "cells.jsonl", CellRecord(cell_id="fast", status="ok", samples_per_s=5.0, guards_ok=True,
                                                 role="ab-A", machine=MACHINE))  # fmt: skip
    history_db.ingest_dir(db, ab)
    found = history_db.series(db, "fast")
    assert sorted(name for name, _ in found) == ["amp/fast", "other/fast"]
    assert [p["throughput"] for p in found[("amp/fast", "Xeon / []")]] == [100.0, 102.0]
    assert list(history_db.series(db, "other/fast")) == [("other/fast", "Xeon / []")]
    db.close()


@pytest.mark.parametrize("command", [["list"], ["show", "fast"], ["check"], ["report"]])
def test_a_read_only_command_on_a_missing_database_is_an_error_that_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture, command: list[str]
) -> None:
    db_path = tmp_path / "nonexist" / "h.sqlite"  # a mistyped path must not read as an empty, green history
    assert history_cli.cli(["--history", str(db_path), *command]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(db_path) in err and "no history database" in err
    assert not (tmp_path / "nonexist").exists()


def test_check_that_judged_no_cell_fails(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    db_path = tmp_path / "h.sqlite"
    for i in range(3):  # three readings: one short of a judgement
        assert history_cli.cli(["--history", str(db_path), "ingest", str(_run(tmp_path, f"run-{i}", 100.0))]) == 0
    capsys.readouterr()
    assert history_cli.cli(["--history", str(db_path), "check"]) == 1
    assert "nothing was judged" in capsys.readouterr().out
    assert history_cli.cli(["--history", str(db_path), "ingest", str(_run(tmp_path, "run-3", 100.0))]) == 0
    assert history_cli.cli(["--history", str(db_path), "check"]) == 0  # now judged, and not a regression


def test_reingesting_a_changed_folder_changes_nothing_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    db_path = tmp_path / "h.sqlite"
    run = _run(tmp_path, "run-a", 100.0)
    assert history_cli.cli(["--history", str(db_path), "ingest", str(run)]) == 0
    db = history_db.connect(db_path)
    before = db.execute("SELECT * FROM cells ORDER BY seq").fetchall()
    db.close()
    append_record(run / "cells.jsonl", CellRecord(cell_id="late", status="ok", samples_per_s=1.0, machine=MACHINE))
    capsys.readouterr()
    assert history_cli.cli(["--history", str(db_path), "ingest", str(run)]) == 0
    out = capsys.readouterr().out
    assert "run-a: already recorded, left as it is; the folder changed since it was recorded" in out
    assert "2 cells recorded, 3 in the folder now" in out
    lines = (run / "cells.jsonl").read_text().splitlines()
    edited = json.loads(lines[0]) | {"samples_per_s": 1.0}  # the same cells, one of them rewritten in place
    (run / "cells.jsonl").write_text("\n".join([json.dumps(edited), lines[1]]) + "\n")
    assert history_cli.cli(["--history", str(db_path), "ingest", str(run)]) == 0
    assert "the folder changed since it was recorded (cells fast differ)" in capsys.readouterr().out
    db = history_db.connect(db_path)
    assert db.execute("SELECT * FROM cells ORDER BY seq").fetchall() == before
    db.close()


def test_a_time_to_target_cell_is_followed_by_targets_per_hour_so_a_slower_one_regresses(tmp_path: Path) -> None:
    from bench.cells.target import Target, TargetRun
    from bench.target.scoring import score_runs

    target = Target(metric="val_accuracy", value=0.89)
    db_path = tmp_path / "h.sqlite"
    # the same samples/s every run; the last needs 30% longer to reach the target
    for i, seconds in enumerate([50.0, 51.0, 49.0, 50.5, 49.5, 50.0, 65.0]):
        d = tmp_path / f"run-{i}"
        d.mkdir()
        (d / "env.json").write_text(json.dumps({"git_commit": "abc", "torch": "2.15.0", "threads": 2}))
        runs = [TargetRun(seed=s, reached=True, seconds=seconds + s * 0.1, setup_s=1.0, epochs=3.0, steps=300,
                          samples=19200, final=0.9) for s in range(3)]  # fmt: skip
        record = CellRecord(cell_id="tta", status="ok", samples_per_s=2000.0, guards_ok=True, machine=MACHINE,
                            time_to_target=score_runs(target, runs))  # fmt: skip
        append_record(d / "cells.jsonl", record)
        assert history_cli.cli(["--history", str(db_path), "ingest", str(d)]) == 0
    db = history_db.connect(db_path)
    ((_, points),) = history_db.series(db).items()
    assert points[0]["unit"] == "targets/h" and points[0]["throughput"] == pytest.approx(3600 / 50.1)
    db.close()
    assert history_cli.cli(["--history", str(db_path), "check"]) == 1  # judged by time to target, not samples/s
