"""Executors: the registry (names, options, a user's module), the forked executor's servers, and a new
executor, one file (tests/recording_executor.py), reaching bench.run, bench.tune and bench.ab."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO

from bench.ab import __main__ as ab_cli
from bench.ab.subjects import CellSubject, Side
from bench.cells.contract import CellRecord, CellSpec
from bench.launch import forked
from bench.launch.executors import EXECUTORS, build_executor, check_options, checked_options
from bench.launch.forked import SERVER_ROUNDS, ForkedExecutor
from bench.run import __main__ as run_cli
from bench.tune import __main__ as tune_cli
from trainer_core.errors import ConfigError

TABULAR = str(REPO / "configs" / "tabular_mlp.yaml")
SMOKE = str(REPO / "configs" / "smoke_matrix.yaml")
USER = "recording_executor:recording"


def test_the_built_in_executors_and_bad_names_or_options() -> None:
    assert {"local", "forked", "submitit"} <= set(EXECUTORS)
    with pytest.raises(ConfigError, match="--executor 'slurmz': unknown executor; expected one of"):
        check_options("slurmz", {})
    with pytest.raises(ConfigError, match="--executor-opt x: unknown; the local executor takes none"):
        check_options("local", {"x": "1"})
    with pytest.raises(ConfigError, match="--executor no_such_module:x: cannot import no_such_module"):
        check_options("no_such_module:x", {})
    assert type(build_executor(USER, {}, Path("."))).__name__ == "RecordingExecutor"  # imported, then registered
    # --executor-opt: read and checked against --executor before anything runs, the same in every command
    assert checked_options("submitit", ["partition=gpu", "timeout_min = 30"]) == {
        "partition": "gpu",
        "timeout_min": "30",
    }
    with pytest.raises(ConfigError, match="--executor-opt 'partition': expected key=value"):
        checked_options("submitit", ["partition"])
    with pytest.raises(ConfigError, match="--executor-opt partition=gpu: needs --executor"):
        checked_options(None, ["partition=gpu"])  # bench.ab without --executor: its --readings start cells
    assert checked_options(None, []) == {}


def test_forked_readings_share_a_server_per_code_and_renew_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[Path] = []
    closed: list[object] = []
    used: list[tuple[str, object]] = []

    class FakeServer:
        def __init__(self, code_root: Path) -> None:
            started.append(code_root)
            self.ready = False

        def wait_ready(self) -> None:
            self.ready = True

        @staticmethod
        def available(code_root: Path) -> bool:
            return True

        def close(self) -> None:
            closed.append(self)

    def fake_launch(spec: CellSpec, cell_dir: Path, code_root: Path, server: FakeServer) -> CellRecord:
        used.append((spec.cell_id, server))
        renewed = len(started) > 2  # a renewed server: started and ready before its round's first reading
        assert server.ready or not renewed
        return CellRecord(cell_id=spec.cell_id, status="ok", step_s=[0.01])

    monkeypatch.setattr(forked, "CellServer", FakeServer)
    monkeypatch.setattr(forked, "launch_cell", fake_launch)
    spec = CellSpec(cell_id="x", config={}, threads=1)
    sides = {"A": Side("A", "a", Path(".")), "B": Side("B", "b", Path(".")), "C": Side("C", "rev", tmp_path)}
    subject = CellSubject(sides, {"A": spec, "B": spec, "C": spec}, tmp_path, ForkedExecutor(), SERVER_ROUNDS)
    for r in range(2 * SERVER_ROUNDS + 1):
        subject.start_round(r)
        for arm in sides:  # C: another revision's code, a server of its own
            subject.read(arm, f"r{r:02d}", first=r == 0)
    subject.close()
    assert started == [Path("."), tmp_path] * 3  # renewed every SERVER_ROUNDS rounds, one per code root
    assert len(closed) == 6  # and every one of them closed
    for r in range(2 * SERVER_ROUNDS + 1):
        a, b, c = (server for cell_id, server in used if cell_id.endswith(f"r{r:02d}"))
        assert a is b and c is not a  # A and B run the same code: one server for both
    a_servers = [server for cell_id, server in used if cell_id.startswith("A-")]  # rounds 0, 1, ...
    assert a_servers[0] is a_servers[SERVER_ROUNDS - 1] and a_servers[0] is not a_servers[SERVER_ROUNDS]
    assert len((tmp_path / "cells.jsonl").read_text().splitlines()) == 3 * (2 * SERVER_ROUNDS + 1)


def recorded(run_dir: Path) -> list[str]:
    return (run_dir / "recorded.txt").read_text().splitlines()


@pytest.mark.slow
def test_a_new_executor_reaches_run_tune_and_ab(tmp_path: Path) -> None:
    # bench.run: every measured cell through it, the same records as the local executor gives
    argv = ["--matrix", SMOKE, "--filter", "device=cpu", "--filter", "data.pin_memory=false", "--filter",
            "precision=fp32", "--profiles", str(tmp_path / "p"), "--out", str(tmp_path / "run")]  # fmt: skip
    assert run_cli.cli([*argv, "--executor", USER]) == 0
    (run_dir,) = (tmp_path / "run").glob("*/")
    records = [json.loads(x) for x in (run_dir / "cells.jsonl").read_text().splitlines()]
    assert [ln.split()[0] for ln in recorded(run_dir)] == [r["cell_id"] for r in records] + ["closed"]
    assert all(r["status"] == "ok" and r["guards_ok"] for r in records)
    # bench.tune: the search's cells (a budget that only measures the start)
    tune = ["--config", TABULAR, "--axes", "data.batch_size=32,64", "--set", "data.n_samples=512", "--budget-s", "1"]
    assert tune_cli.cli([*tune, "--out", str(tmp_path / "tune"), "--executor", USER]) == 0
    (tune_dir,) = (tmp_path / "tune").glob("tune-*")
    assert recorded(tune_dir)[0].startswith("t01-start ") and recorded(tune_dir)[-1] == "closed"
    # bench.ab: every reading of both sides, with each side's code root
    ab = ["--a", TABULAR, "--b", TABULAR, "--min-rounds", "1", "--max-rounds", "1", "--reading-s", "0.2"]
    assert ab_cli.cli([*ab, "--out", str(tmp_path / "ab"), "--executor", USER]) == 0
    (ab_dir,) = (tmp_path / "ab").glob("ab-*")
    lines = recorded(ab_dir)
    assert [ln.split()[0] for ln in lines[:2]] == ["A-warmup", "B-warmup"] and f" {REPO}" in lines[0]
    assert len([ln for ln in lines if ln != "closed"]) >= 4  # warm-up and one round, both sides
    readings = json.loads((ab_dir / "ab.json").read_text())["readings"]
    assert readings.startswith(f"started by the {USER} executor; one side's reading after the other's")
