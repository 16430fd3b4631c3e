import json
from pathlib import Path

import pytest
from conftest import REPO

from bench.recipe_race import __main__ as recipe_race


@pytest.mark.slow
def test_race_end_to_end_on_synthetic_data(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = str(REPO / "configs" / "tabular_mlp.yaml")
    rc = recipe_race.cli(
        [
            "--baseline",
            cfg,
            "--candidate",
            cfg,
            "--target",
            "0.9",
            "--out",
            str(tmp_path),
            "--set",
            "data.n_samples=400",
            "--set",
            "train.epochs=2",
            "--baseline-set",
            "train.epochs=2",
            "--run-all-epochs",
        ]
    )
    assert rc == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum(": epoch " in ln and "test acc" in ln for ln in lines) == 4  # 2 epochs a side, said as they end
    (out,) = tmp_path.glob("recipe_race-*.json")
    result = json.loads(out.read_text())
    base, cand = result["baseline"], result["candidate"]
    # Two identical recipes from one seed train identically on CPU: the same accuracy after every epoch,
    # the target reached at the same epoch; only the clock differs, by the machine's noise.
    accuracies = [[(p["epoch"], p["val_accuracy"], p["test_accuracy"]) for p in r["points"]] for r in (base, cand)]
    assert accuracies[0] == accuracies[1] and len(accuracies[0]) == 2
    assert base["epoch_reached"] == cand["epoch_reached"] is not None
    assert result["time_ratio"] == cand["time_to_target_s"] / base["time_to_target_s"]
    # Not asserted: that the ratio is near 1. Two timings of a second's training each move by 2x on a busy
    # 2-core machine (0.40 was read beside a CPU hog); timing claims are benchmarks, not unit tests.
    assert result["time_ratio"] > 0
    assert result["env"]["torch"]


@pytest.mark.slow
def test_race_stops_each_side_at_the_target(tmp_path: Path) -> None:
    cfg = str(REPO / "configs" / "tabular_mlp.yaml")
    rc = recipe_race.cli(
        [
            "--baseline",
            cfg,
            "--candidate",
            cfg,
            "--target",
            "0.5",
            "--out",
            str(tmp_path),
            "--set",
            "data.n_samples=400",
            "--set",
            "train.epochs=3",
            "--baseline-set",
            "train.epochs=3",
        ]
    )
    assert rc == 0
    result = json.loads(next(tmp_path.glob("recipe_race-*.json")).read_text())
    assert [len(result[s]["points"]) for s in ("baseline", "candidate")] == [1, 1]
    assert result["baseline"]["epoch_reached"] == 1
