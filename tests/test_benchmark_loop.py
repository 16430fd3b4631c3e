"""The regression loop end to end: save a pytest-benchmark run, compare against it, fail on a slowdown;
and the repository's own suite is a run-once smoke test under plain pytest but times for real on request."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, own_pytest_env

SLEEPY = """
import os, time

def test_sleepy(benchmark):
    benchmark.group = "sleep"
    benchmark.pedantic(time.sleep, args=(float(os.environ["SLEEP_S"]),), rounds=5, warmup_rounds=1, iterations=1)
"""


def _pytest(cwd: Path, *args: str, sleep_s: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "test_sleepy.py", *args],
        cwd=cwd,
        env=own_pytest_env(SLEEP_S=str(sleep_s)),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_save_compare_and_fail_on_a_planted_slowdown(tmp_path: Path) -> None:
    (tmp_path / "test_sleepy.py").write_text(SLEEPY)
    storage = f"--benchmark-storage=file://{tmp_path / 'storage'}"
    base = _pytest(tmp_path, storage, "--benchmark-autosave", sleep_s=0.01)
    assert base.returncode == 0, base.stdout + base.stderr
    saved = list((tmp_path / "storage").rglob("*.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text())["benchmarks"][0]["stats"]["rounds"] == 5

    same = _pytest(tmp_path, storage, "--benchmark-compare", "--benchmark-compare-fail=median:50%", sleep_s=0.01)
    assert same.returncode == 0, same.stdout + same.stderr

    slower = _pytest(tmp_path, storage, "--benchmark-compare", "--benchmark-compare-fail=median:10%", sleep_s=0.03)
    assert slower.returncode != 0
    assert "Performance has regressed" in slower.stdout + slower.stderr


@pytest.mark.slow
def test_repository_suite_times_for_real_when_asked(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/benchmarks",
            "-k",
            "test_checkpoint_io",
            f"--benchmark-json={out}",
        ],
        cwd=REPO,
        env=own_pytest_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert {b["name"] for b in data["benchmarks"]} == {"test_checkpoint_io[save]", "test_checkpoint_io[load]"}
    for b in data["benchmarks"]:
        assert b["stats"]["rounds"] == 10 and b["group"] == "checkpoint SimpleCNN"
        assert {"device", "torch", "threads", "op"} <= set(b["extra_info"])
    assert data["machine_info"]["torch"] and "torch_threads" in data["machine_info"]
