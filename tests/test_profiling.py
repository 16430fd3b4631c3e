"""Trace capture: layout, labels, metadata; and the traces open in TensorBoard's profiler plugin and HTA."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import tiny_overrides

from bench.cells.contract import CellRecord
from bench.measure.profiling import WORKER_NAME, ProfilerHook, maybe_profile, schedule_steps, trace_files
from bench.run.runner import write_cell_scalars
from trainer_core.factory import build_run
from trainer_core.loading import load_config
from trainer_core.trainer import PHASES

CELLS = {"cellA-fp32": "fp32", "cellB-bf16": "bf16"}


def capture(trace_dir: Path, precision: str = "fp32", active: int = 3) -> None:
    hook = ProfilerHook()
    cfg = load_config(None, tiny_overrides(precision=precision, **{"data.n_samples": 512}))
    run = build_run(cfg, hooks=[hook])
    with maybe_profile(True, trace_dir, run.device, wait=1, warmup=1, active=active, hook=hook) as prof:
        assert prof is not None
        run.trainer.fit(run.data.train_loader, None, stop_after_steps=schedule_steps(1, 1, active))


@pytest.fixture(scope="module")
def profile_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("profiles") / "run-1"
    for cell, precision in CELLS.items():
        capture(root / cell, precision)
        write_cell_scalars(
            root / "scalars",
            CellRecord(
                status="ok",
                cell_id=cell,
                samples_per_s_repeats=[100.0, 110.0],
                step_s=[0.01, 0.011, 0.012],
                data_wait_pct=3.0,
            ),
        )
    return root


def test_profiling_off_yields_none(tmp_path: Path) -> None:
    with maybe_profile(False, tmp_path / "t", torch.device("cpu")) as prof:
        assert prof is None
    assert not (tmp_path / "t").exists()


def test_one_trace_per_cell_folder_with_plugin_compatible_name(profile_dir: Path) -> None:
    import re

    pattern = re.compile(r"^(.*?)(\.\d+)?\.pt\.trace\.json(\.gz)?$")  # torch-tb-profiler's WORKER_PATTERN
    for cell in CELLS:
        files = list((profile_dir / cell).iterdir())
        assert len(files) == 1 and files == trace_files(profile_dir / cell)
        assert pattern.match(files[0].name).group(1) == WORKER_NAME


def test_trace_has_steps_phase_labels_and_rank(profile_dir: Path) -> None:
    doc = json.loads(trace_files(profile_dir / "cellA-fp32")[0].read_text())
    names = {e.get("name") for e in doc["traceEvents"]}
    steps = sorted(n for n in names if str(n).startswith("ProfilerStep#"))
    assert len(steps) == 3
    assert set(PHASES) <= names
    assert doc["distributedInfo"]["rank"] == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.loads(resp.read())


def test_tensorboard_lists_every_cell_and_serves_overviews_and_scalars(profile_dir: Path, tmp_path: Path) -> None:
    port = _free_port()
    log = open(tmp_path / "tb.log", "w")  # noqa: SIM115  (the server writes it until the finally block closes it)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir",
            str(profile_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}/data/plugin"
    try:
        runs: list[str] = []
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                runs = _get(f"{base}/pytorch_profiler/runs")["runs"]
                if set(CELLS) <= set(runs):
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert set(CELLS) <= set(runs), (tmp_path / "tb.log").read_text()[-2000:]
        for cell in CELLS:
            q = urllib.parse.quote
            workers = _get(f"{base}/pytorch_profiler/workers?run={q(cell)}&view=Overview")
            assert workers == [WORKER_NAME]
            spans = _get(f"{base}/pytorch_profiler/spans?run={q(cell)}&worker={WORKER_NAME}")
            assert spans
            overview = _get(
                f"{base}/pytorch_profiler/overview?run={q(cell)}&worker={WORKER_NAME}&span={q(str(spans[0]))}"
            )
            assert overview["steps"]["rows"], overview
        tags = _get(f"{base}/scalars/tags")
        for cell in CELLS:
            assert "cell/samples_per_s" in tags[f"scalars/{cell}"]
        values = _get(f"{base}/scalars/scalars?run={urllib.parse.quote('scalars/cellA-fp32')}&tag=cell%2Fsamples_per_s")
        assert [v[2] for v in values] == [100.0, 110.0]
    finally:
        proc.terminate()  # stopped by its own PID, whatever happened above
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_hta_loads_a_cell_folder_and_finds_the_steps(profile_dir: Path) -> None:
    from hta.trace_analysis import TraceAnalysis

    analysis = TraceAnalysis(trace_dir=str(profile_dir / "cellB-bf16"))
    assert analysis.t.get_ranks() == [0]
    df = analysis.t.get_trace(0)
    symbols = analysis.t.symbol_table.get_sym_table()
    steps = {symbols[i] for i in df["name"].unique() if symbols[i].startswith("ProfilerStep#")}
    assert steps, "HTA found no ProfilerStep events"


def test_a_memory_snapshot_is_cuda_only_and_a_cpu_cell_says_why(tmp_path: Path) -> None:
    from bench.measure.cell import memory_history

    with memory_history(True, torch.device("cpu"), tmp_path / "t") as out:
        pass
    assert "CUDA caching allocator; this cell ran on cpu" in out["memory_snapshot_skipped"]
    with memory_history(False, torch.device("cpu"), tmp_path / "t") as out:
        pass
    assert out == {} and not (tmp_path / "t").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_memory_snapshot_of_cuda_steps_opens_as_the_allocator_history(tmp_path: Path) -> None:
    import pickle

    from bench.measure.cell import memory_history

    with memory_history(True, torch.device("cuda"), tmp_path / "t") as out:
        x = torch.randn(1024, 1024, device="cuda", requires_grad=True)
        (x @ x).sum().backward()
    snapshot = pickle.loads(Path(out["memory_snapshot"]).read_bytes())
    assert snapshot["segments"] and any(t for t in snapshot["device_traces"])
