"""pytest-benchmark results as cell records: what ``bench.history ingest FILE.json`` records and what
``bench.ab --pytest ...`` re-measures.

A benchmark becomes a record whose ``step_s`` are pytest-benchmark's per-round timings (its JSON
always carries them as ``stats.data``), one call per "step", so throughput is calls/s. The cell id is
the benchmark's full name, so the same benchmark lines up across files, runs and commits.
No torch import.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from bench.cells.contract import OK, CellRecord
from bench.launch.revisions import code_env
from bench.stats import summarize
from trainer_core.errors import ConfigError


def read_json(path: Path) -> dict[str, Any]:
    """A pytest-benchmark JSON file (``--benchmark-json`` or ``--benchmark-autosave``), checked."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: not a readable JSON file ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise ConfigError(f"{path}: not a pytest-benchmark JSON file (no 'benchmarks' list)")
    return data


def records(data: dict[str, Any], group: str | None = None, prefix: str = "") -> list[CellRecord]:
    """One record per benchmark (of ``group`` only, when given) that kept its timings."""
    machine = data.get("machine_info") or {}
    out = []
    for b in data["benchmarks"]:
        times = [float(t) for t in (b.get("stats") or {}).get("data") or []]
        if not times or (group is not None and b.get("group") != group):
            continue
        st = summarize(times)
        out.append(
            CellRecord(
                status=OK,
                cell_id=prefix + str(b.get("fullname") or b["name"]),
                axes={"group": b.get("group"), "name": b.get("name"), **(b.get("params") or {})},
                role="pytest-benchmark",
                steps_timed=len(times),
                step_s=times,
                step_ms_median=st["median"] * 1e3,
                step_ms_p10=st["p10"] * 1e3,
                step_ms_p90=st["p90"] * 1e3,
                step_ms_iqr=st["iqr"] * 1e3,
                items_per_step=1.0,
                throughput=1.0 / st["median"],
                throughput_unit="calls/s",
                guards_ok=True,  # pytest-benchmark has no guards; a failing test records no benchmark
                machine={"hostname": machine.get("node"), "cpu": (machine.get("cpu") or {}).get("brand_raw")},
                extra_info=b.get("extra_info") or {},
            )
        )
    return out


def env(data: dict[str, Any]) -> dict[str, Any]:
    """The run's provenance in the history's terms (git commit with -dirty, machine, time)."""
    commit = data.get("commit_info") or {}
    machine = data.get("machine_info") or {}
    sha = commit.get("id")
    return {
        "git_commit": (f"{sha}-dirty" if commit.get("dirty") else sha) if sha else None,
        "timestamp": data.get("datetime"),
        "hostname": machine.get("node"),
        "cpu": (machine.get("cpu") or {}).get("brand_raw"),
        "python": machine.get("python_version"),
        "pytest_benchmark": data.get("version"),
        "source": "pytest-benchmark",
    }


def own_session_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` for a pytest session of its own: without the variables of a pytest-xdist worker it may be
    started from (a test of bench.ab), which pytest-benchmark reads as "parallel workers share this machine"
    and then does not time."""
    return {k: v for k, v in env.items() if not k.startswith("PYTEST_XDIST_")}


def other_groups(data: dict[str, Any], group: str | None) -> list[str]:
    """Full names (pytest node ids) of the benchmarks outside ``group`` (none when no group is given)."""
    if group is None:
        return []
    return [str(b.get("fullname") or b["name"]) for b in data["benchmarks"] if b.get("group") != group]


class PytestReading(NamedTuple):
    """One pytest-benchmark session: the records of the group read, and the benchmarks of other groups it
    also ran (a paired run deselects them from its next readings)."""

    records: list[CellRecord]
    others: list[str]


def run(
    code_root: Path, pytest_args: str, group: str | None, timeout_s: float, skip: Sequence[str] = ()
) -> PytestReading:
    """One reading: ``pytest PYTEST_ARGS --benchmark-only`` in a fresh process with the code under
    ``code_root`` (its own tests folder), read back from its JSON. ``skip``: benchmarks (full names, which
    are pytest node ids) to deselect."""
    with tempfile.TemporaryDirectory(prefix="trainbench-pb-") as tmp:
        out = Path(tmp) / "benchmark.json"
        cmd = [sys.executable, "-m", "pytest", *shlex.split(pytest_args), "--benchmark-only", "-q",
               "-p", "no:cacheprovider", f"--benchmark-json={out}", *(f"--deselect={k}" for k in skip)]  # fmt: skip
        env = own_session_env(code_env(code_root))
        try:
            proc = subprocess.run(cmd, cwd=code_root, env=env, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            where = f"--pytest {pytest_args!r} at {code_root}"
            raise ConfigError(f"{where}: still running after {timeout_s:.0f} s") from None
        if not out.exists():
            last = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
            raise ConfigError(f"--pytest {pytest_args!r} at {code_root}: no benchmark ran ({last[0]})")
        data = read_json(out)
    found = records(data, group)
    if not found:
        raise ConfigError(f"--pytest {pytest_args!r}: no benchmark" + (f" in group {group!r}" if group else ""))
    return PytestReading(found, other_groups(data, group))
