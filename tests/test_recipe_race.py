import json
from pathlib import Path

import pytest
from conftest import REPO

from bench.recipe_race import __main__ as recipe_race

CFG = str(REPO / "configs" / "tabular_mlp.yaml")


@pytest.mark.slow
def test_race_end_to_end_on_synthetic_data(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["--baseline", CFG, "--candidate", CFG, "--target", "0.9", "--runs", "2", "--out", str(tmp_path),
            "--set", "data.n_samples=400", "--set", "train.epochs=3", "--baseline-set", "train.epochs=3"]  # fmt: skip
    assert recipe_race.cli(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    said = [ln.split(":")[0] for ln in lines if " seed " in ln and ln.split(" seed ")[0] in ("baseline", "candidate")]
    # side by side, alternating which goes first: a machine that slows down slows both sides
    assert said == ["baseline seed 42", "candidate seed 42", "candidate seed 43", "baseline seed 43"]
    result = json.loads(next(tmp_path.glob("recipe_race-*.json")).read_text())
    base, cand = result["baseline"], result["candidate"]
    # Two identical recipes from one seed train identically on CPU: the same accuracy at every evaluation,
    # the target met at the same epoch; only the clock differs, by the machine's noise.
    for b, c in zip(base["runs"], cand["runs"], strict=True):
        assert [e["value"] for e in b["evals"]] == [e["value"] for e in c["evals"]] and b["epochs"] == c["epochs"]
        assert b["reached"] and b["evals"][-1]["value"] >= 0.9 > max([0.0] + [e["value"] for e in b["evals"][:-1]])
    assert result["time_ratio"] == cand["score_s"] / base["score_s"]
    low, high = result["speedup_interval"]
    assert low <= base["score_s"] / cand["score_s"] <= high  # the point estimate sits inside its interval
    assert "candidate/baseline time to target:" in "\n".join(lines) and result["env"]["torch"]


@pytest.mark.slow
def test_a_side_that_never_reaches_the_target_is_said(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["--baseline", CFG, "--candidate", CFG, "--target", "0.9", "--runs", "1", "--out", str(tmp_path),
            "--set", "data.n_samples=400", "--set", "train.epochs=2", "--baseline-set", "train.epochs=2",
            "--baseline-set", "optim.lr=1e-9"]  # fmt: skip
    assert recipe_race.cli(argv) == 0
    result = json.loads(next(tmp_path.glob("recipe_race-*.json")).read_text())
    c = result["candidate"]["runs"][0]
    assert c["reached"] and [e["value"] >= 0.9 for e in c["evals"]] == [False] * (len(c["evals"]) - 1) + [True]
    assert result["time_ratio"] is None
    out = capsys.readouterr().out
    assert result["baseline"]["status"] == "not reached"  # an lr of 1e-9 leaves the start's accuracy
    assert "baseline: not reached (1 of 1 runs did not reach test_accuracy >= 0.9)" in out
