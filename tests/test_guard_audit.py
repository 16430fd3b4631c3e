"""``python -m bench.guard_audit``: its exit codes (0 only when every healthy run passed, every planted
fault was caught and every guard had a planted fault measured), bad input refused, and the data-parallel
guard measured like the others."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from bench.cells.contract import PASS, GuardResult
from bench.guard_audit import __main__ as guard_audit
from bench.guards import checks as guards_module

ONE_PROCESS_GUARDS = ["overfit", "finite", "determinism", "resume"]


@pytest.fixture
def configs(tmp_path: Path) -> Path:
    """A configs folder holding one shipped run config: the tabular MLP."""
    folder = tmp_path / "configs"
    folder.mkdir()
    shutil.copy(REPO / "configs" / "tabular_mlp.yaml", folder)
    return folder


def _audit(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str]:
    rc = guard_audit.cli(["--seeds", "1", *argv])
    captured = capsys.readouterr()
    return rc, captured.out + captured.err


@pytest.mark.parametrize("seeds", ["0", "-1"])
def test_an_audit_of_no_seeds_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture, seeds: str) -> None:
    rc = guard_audit.cli(["--seeds", seeds, "--json", str(tmp_path / "v.json")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and f"--seeds {seeds}" in err
    assert not (tmp_path / "v.json").exists()


@pytest.mark.slow
def test_a_healthy_config_and_a_caught_plant_pass_only_when_the_rest_is_allowed_missing(
    configs: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    only = ["--configs", str(configs), "--only", "tabular_mlp.yaml (tune", "--only", "emits_nan on blobs (tune"]
    rc, out = _audit(capsys, *only)
    assert rc == 1  # overfit, determinism, resume and ddp_equivalence had no planted fault measured
    assert "NOT MEASURED: guard resume: no planted fault of it was measured" in out
    allow = [a for g in ("overfit", "determinism", "resume", "ddp_equivalence") for a in ("--allow-missing", g)]
    rc, out = _audit(capsys, *only, *allow, "--json", str(tmp_path / "v.json"))
    assert rc == 0, out
    assert "| finite | 1 of 1 | 0 of 1 |" in out and "NOT MEASURED" not in out
    rows = json.loads((tmp_path / "v.json").read_text())
    assert [(r["group"], r["good"]) for r in rows] == [("healthy", True), ("planted", True)]


@pytest.mark.slow
def test_a_missed_plant_and_a_false_alarm_each_exit_1(
    configs: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    allow = [a for g in ("overfit", "determinism", "resume", "ddp_equivalence") for a in ("--allow-missing", g)]
    monkeypatch.setitem(guards_module.GUARDS, "finite", lambda ctx: GuardResult(name="finite", status=PASS))
    rc, out = _audit(capsys, "--configs", str(configs), "--only", "nan_gradients on blobs (tune", *allow,
                     "--allow-missing", "healthy")  # fmt: skip
    assert rc == 1 and "MISSED      nan_gradients on blobs (tune guards)" in out and "caught: 0 of 1" in out
    monkeypatch.setitem(guards_module.GUARDS, "finite", lambda ctx: GuardResult(name="finite", status="fail"))
    rc, out = _audit(capsys, "--configs", str(configs), "--only", "tabular_mlp.yaml (tune", "--allow-missing",
                     "finite", *allow)  # fmt: skip
    assert rc == 1 and "FALSE ALARM tabular_mlp.yaml (tune guards)" in out and "false alarms: 1 of 1" in out


@pytest.mark.slow
def test_a_case_whose_data_is_absent_is_not_measured_and_fails_unless_allowed(
    configs: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = yaml.safe_load((REPO / "configs" / "mnist_baseline.yaml").read_text())
    doc["data"]["root"] = str(tmp_path / "no-mnist-here")
    (configs / "mnist_absent.yaml").write_text(yaml.safe_dump(doc))
    monkeypatch.delenv("TRAINBENCH_DATA", raising=False)
    allow = [a for g in [*ONE_PROCESS_GUARDS, "ddp_equivalence", "healthy"] for a in ("--allow-missing", g)]
    rc, out = _audit(capsys, "--configs", str(configs), "--only", "mnist_absent.yaml (tune", *allow)
    assert rc == 1 and "NOT MEASURED: not run: mnist_absent.yaml (tune guards)" in out
    rc, out = _audit(capsys, "--configs", str(configs), "--only", "mnist_absent.yaml (tune", *allow,
                     "--allow-missing", "mnist_absent")  # fmt: skip
    assert rc == 0, out


@pytest.mark.slow
def test_the_data_parallel_guard_is_audited_healthy_and_planted_in_bf16(
    configs: Path, capsys: pytest.CaptureFixture
) -> None:
    allow = [a for g in ONE_PROCESS_GUARDS for a in ("--allow-missing", g)]
    rc, out = _audit(capsys, "--configs", str(configs), "--only", "2 ranks (ddp bf16)", *allow)
    assert rc == 0, out
    assert "caught      rank_dependent on blobs, 2 ranks (ddp bf16)" in out
    assert "pass        healthy on blobs, 2 ranks (ddp bf16)" in out
    assert "| ddp_equivalence | 1 of 1 | 0 of 1 |" in out
