"""bench.cell_server and its client (bench.launch.process.CellServer): each cell a process forked from the
preloaded server, nothing carried from one cell to the next, and a cell that overruns, dies or finds
the server gone reads as a failed cell while the others go on."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import tiny_overrides

from bench.cells.contract import FAILED, CellSpec, GuardsConfig, MeasureConfig
from bench.launch.process import launch_cell
from bench.launch.revisions import REPO_ROOT
from bench.launch.server import CellServer, announces_ready
from trainer_core.config import apply_overrides

TESTS = Path(__file__).resolve().parent
QUICK = MeasureConfig(warmup_steps=1, settle_window=2, max_warmup_steps=3, min_steps=3, min_time_s=0.0, repeats=1)


def _spec(cell_id: str, model: str, kwargs: dict, **measure: float) -> CellSpec:
    config = apply_overrides({}, tiny_overrides(**{"model.name": model, "model.kwargs": kwargs}))
    return CellSpec(
        cell_id=cell_id,
        config=config,
        threads=1,
        measure=QUICK.model_copy(update=measure),
        guards=GuardsConfig(enabled=[]),
    )


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> CellServer:
    monkeypatch.setenv("PYTHONPATH", str(TESTS))  # the cells build tests/user_models.py's models
    srv = CellServer(REPO_ROOT)
    yield srv
    srv.close()


@pytest.mark.slow
def test_each_cell_is_a_new_process_forked_by_the_preloaded_server(tmp_path: Path, server: CellServer) -> None:
    probe = tmp_path / "built.txt"
    kwargs = {"path": str(probe)}
    records = [launch_cell(_spec(f"c{i}", "user_models:process_probe", kwargs), tmp_path, server=server)
               for i in range(3)]  # fmt: skip
    assert all(r.status == "ok" and len(r.step_s) >= 3 for r in records), [r.reason for r in records]
    rows = [line.split() for line in probe.read_text().splitlines()]
    assert len({pid for pid, *_ in rows}) == 3  # a process per cell
    assert {pid for pid, *_ in rows}.isdisjoint({str(os.getpid()), str(server.proc.pid)})
    assert {parent for _, parent, _, _ in rows} == {str(server.proc.pid)}  # forked by the server
    assert [built for _, _, built, _ in rows] == ["1", "1", "1"]  # nothing carried over from the cell before
    assert {package for *_, package in rows} == {str(REPO_ROOT / "bench" / "__init__.py")}
    server.close()
    assert server.proc.returncode == 0  # end of input ends it cleanly


@pytest.mark.slow
def test_a_server_runs_the_code_of_its_own_code_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # what bench.ab needs of a git revision's worktree: its modules, never this checkout's (the cwd here)
    root = tmp_path / "rev"
    for package in ("bench", "trainer_core"):
        shutil.copytree(REPO_ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    monkeypatch.chdir(REPO_ROOT)
    probe = tmp_path / "built.txt"
    server = CellServer(root)
    try:
        rec = launch_cell(_spec("rev", "user_models:process_probe", {"path": str(probe)}), tmp_path, root, server)
    finally:
        server.close()
    assert rec.status == "ok", rec.reason
    assert probe.read_text().split()[-1] == str(root / "bench" / "__init__.py")


@pytest.mark.slow
def test_a_cell_that_overruns_or_dies_fails_alone(tmp_path: Path, server: CellServer) -> None:
    slow = launch_cell(_spec("slow", "user_models:sleeps", {}, cell_timeout_s=1.0), tmp_path, server=server)
    assert slow.status == FAILED and slow.reason.startswith("timed out after 1 s")
    dead = launch_cell(_spec("dead", "user_models:dies", {}), tmp_path, server=server)
    assert dead.status == FAILED and dead.reason.startswith("killed by signal 9")
    fine = launch_cell(_spec("fine", "user_models:make_tiny", {}), tmp_path, server=server)
    assert fine.status == "ok" and fine.step_s  # the server serves on


def test_a_cell_ends_with_the_parent_that_asked_for_it(tmp_path: Path, server: CellServer) -> None:
    import json
    import subprocess

    spec = tmp_path / "slow.spec.json"
    spec.write_text(_spec("slow", "user_models:sleeps", {}, cell_timeout_s=600.0).model_dump_json())
    request = {"spec": str(spec), "result": str(tmp_path / "r.json"), "log": str(tmp_path / "l.log"), "timeout_s": 600}
    server.wait_ready()
    assert server.proc.stdin is not None and server.proc.stdout is not None
    server.proc.stdin.write(json.dumps(request) + "\n")
    server.proc.stdin.flush()
    server.proc.stdin.close()  # what a parent stopped by a signal leaves: the end of the server's input
    try:  # the server waits on its cell: it is done only once the 60 s cell was killed
        assert server.proc.wait(timeout=30) == 0
    except subprocess.TimeoutExpired:
        pytest.fail("the cell ran on after its parent was gone")
    assert json.loads(server.proc.stdout.readline()) == {"exitcode": -9, "timed_out": False}


@pytest.mark.slow
def test_a_server_that_died_reads_as_a_failed_cell(tmp_path: Path, server: CellServer) -> None:
    server.proc.kill()
    server.proc.wait()
    rec = launch_cell(_spec("orphan", "user_models:make_tiny", {}), tmp_path, server=server)
    assert rec.status == FAILED and "bench.cell_server exited (code -9) before answering" in rec.reason
    assert CellServer.available(REPO_ROOT) and not CellServer.available(tmp_path)  # an older revision has none


@pytest.mark.slow
def test_a_child_that_cannot_start_its_cell_leaves_the_traceback_in_its_log(tmp_path: Path, server: CellServer) -> None:
    spec, result, log = tmp_path / "bad.spec.json", tmp_path / "bad.result.json", tmp_path / "bad.log"
    spec.write_text("{not json")
    assert server.run(spec, result, log, timeout_s=60) == (1, False)
    assert "Traceback" in log.read_text() and "ValidationError" in log.read_text() and not result.exists()


@pytest.mark.slow
def test_a_server_says_when_its_imports_are_done_and_an_older_one_is_not_waited_on(
    tmp_path: Path, server: CellServer
) -> None:
    assert server.waiting
    server.wait_ready()  # returns once torch is imported: bench.ab renews both sides' servers before a round
    assert not server.waiting and server.proc.poll() is None
    record = launch_cell(_spec("after-ready", "user_models:process_probe", {"path": str(tmp_path / "p.txt")}),
                         tmp_path, server=server)  # fmt: skip
    assert record.status == "ok", record.reason  # the ready line is not taken for the cell's reply
    older = tmp_path / "old" / "bench" / "measure"
    older.mkdir(parents=True)
    (older / "serving.py").write_text("def serve(requests, replies):\n    pass\n")
    assert announces_ready(REPO_ROOT) and not announces_ready(tmp_path / "old")
