import json
from pathlib import Path

from bench import recipe_race
from conftest import REPO


def test_time_to_target_picks_the_first_epoch_reaching_it() -> None:
    points = [{"epoch": 1, "train_seconds": 2.0, "test_accuracy": 0.8},
              {"epoch": 2, "train_seconds": 4.0, "test_accuracy": 0.92},
              {"epoch": 3, "train_seconds": 6.0, "test_accuracy": 0.95}]
    assert recipe_race.time_to_target(points, 0.9) == (4.0, 2)
    assert recipe_race.time_to_target(points, 0.99) == (None, None)


def test_race_end_to_end_on_synthetic_data(tmp_path: Path) -> None:
    cfg = str(REPO / "configs" / "tabular_mlp.yaml")
    rc = recipe_race.cli(["--baseline", cfg, "--candidate", cfg, "--target", "0.9", "--out", str(tmp_path),
                          "--set", "data.n_samples=400", "--set", "train.epochs=2", "--baseline-set", "train.epochs=2",
                          "--run-all-epochs"])
    assert rc == 0
    (out,) = tmp_path.glob("recipe_race-*.json")
    result = json.loads(out.read_text())
    for side in ("baseline", "candidate"):
        assert len(result[side]["points"]) == 2
        assert result[side]["time_to_target_s"] is not None
    assert result["time_ratio"] > 0
    assert result["env"]["torch"]


def test_race_stops_each_side_at_the_target(tmp_path: Path) -> None:
    cfg = str(REPO / "configs" / "tabular_mlp.yaml")
    rc = recipe_race.cli(["--baseline", cfg, "--candidate", cfg, "--target", "0.5", "--out", str(tmp_path),
                          "--set", "data.n_samples=400", "--set", "train.epochs=3", "--baseline-set", "train.epochs=3"])
    assert rc == 0
    result = json.loads(next(tmp_path.glob("recipe_race-*.json")).read_text())
    assert [len(result[s]["points"]) for s in ("baseline", "candidate")] == [1, 1]
    assert result["baseline"]["epoch_reached"] == 1
