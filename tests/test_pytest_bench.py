"""pytest-benchmark JSON as cell records: timings become steps, throughput is calls/s, provenance is
carried, groups filter, and unreadable files are one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.launch import pytest_bench as pytest_bench
from trainer_core.errors import ConfigError

DATA = {
    "machine_info": {"node": "box", "cpu": {"brand_raw": "Xeon"}, "python_version": "3.11.7"},
    "commit_info": {"id": "abc123", "dirty": True},
    "datetime": "2026-11-23T10:00:00",
    "version": "5.3.1",
    "benchmarks": [
        {"group": "train_step SimpleMLP", "name": "test_train_step[fp32]", "fullname": "t.py::test_train_step[fp32]",
         "params": {"precision": "fp32"}, "stats": {"data": [0.010, 0.012, 0.011]}, "extra_info": {"threads": 2}},
        {"group": "loader", "name": "test_loader", "fullname": "t.py::test_loader", "params": None,
         "stats": {"data": [0.5, 0.5]}},
        {"group": "loader", "name": "no_data", "fullname": "t.py::no_data", "stats": {}},
    ],
}  # fmt: skip


def test_benchmarks_become_records_with_their_timings() -> None:
    recs = pytest_bench.records(DATA)
    assert [r.cell_id for r in recs] == ["t.py::test_train_step[fp32]", "t.py::test_loader"]  # no timings: left out
    first = recs[0]
    assert first.step_s == [0.010, 0.012, 0.011] and first.step_ms_median == pytest.approx(11.0)
    assert first.throughput == pytest.approx(1 / 0.011) and first.unit == "calls/s"
    assert first.axes["precision"] == "fp32" and first.machine == {"hostname": "box", "cpu": "Xeon"}
    assert [r.cell_id for r in pytest_bench.records(DATA, group="loader")] == ["t.py::test_loader"]
    env = pytest_bench.env(DATA)
    assert env["git_commit"] == "abc123-dirty" and env["cpu"] == "Xeon"


def test_unreadable_files_are_one_line_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ConfigError, match="bad.json: not a readable JSON file"):
        pytest_bench.read_json(bad)
    bad.write_text(json.dumps({"results": []}))
    with pytest.raises(ConfigError, match="not a pytest-benchmark JSON file"):
        pytest_bench.read_json(bad)


def test_a_reading_that_hangs_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    def hang(cmd: list[str], **kwargs: object) -> None:
        raise subprocess.TimeoutExpired(cmd, 5.0)

    monkeypatch.setattr(subprocess, "run", hang)
    with pytest.raises(ConfigError, match="still running after 5 s"):
        pytest_bench.run(tmp_path, "tests/benchmarks", None, 5.0)


def test_a_reading_leaves_out_the_benchmarks_it_is_told_are_decided(tmp_path: Path) -> None:
    (tmp_path / "test_two.py").write_text(
        "def test_quiet(benchmark):\n    benchmark.pedantic(sum, args=([1, 2],), rounds=3)\n\n"
        "def test_noisy(benchmark):\n    benchmark.pedantic(sum, args=([3],), rounds=3)\n"
    )
    both = pytest_bench.run(tmp_path, "test_two.py", None, 120.0)
    assert sorted(r.cell_id for r in both.records) == ["test_two.py::test_noisy", "test_two.py::test_quiet"]
    assert both.others == []
    left = pytest_bench.run(tmp_path, "test_two.py", None, 120.0, skip=["test_two.py::test_quiet"])
    assert [r.cell_id for r in left.records] == ["test_two.py::test_noisy"]  # the full name is the node id


def test_a_reading_of_one_group_names_the_benchmarks_outside_it(tmp_path: Path) -> None:
    # bench.ab --group deselects them from later readings: they ran once, and no interval needs them
    (tmp_path / "test_groups.py").write_text(
        "import pytest\n\n"
        "@pytest.mark.benchmark(group='fast')\ndef test_in(benchmark):\n"
        "    benchmark.pedantic(sum, args=([1],), rounds=3)\n\n"
        "@pytest.mark.benchmark(group='slow')\ndef test_out(benchmark):\n"
        "    benchmark.pedantic(sum, args=([2],), rounds=3)\n"
    )
    got = pytest_bench.run(tmp_path, "test_groups.py", "fast", 120.0)
    assert [r.cell_id for r in got.records] == ["test_groups.py::test_in"]
    assert got.others == ["test_groups.py::test_out"]
    again = pytest_bench.run(tmp_path, "test_groups.py", "fast", 120.0, skip=got.others)
    assert [r.cell_id for r in again.records] == ["test_groups.py::test_in"] and again.others == []
