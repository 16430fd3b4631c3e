import json
from pathlib import Path

from conftest import REPO

from bench import recipe_race


def test_race_end_to_end_on_synthetic_data(tmp_path: Path) -> None:
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
    (out,) = tmp_path.glob("recipe_race-*.json")
    result = json.loads(out.read_text())
    for side in ("baseline", "candidate"):
        assert len(result[side]["points"]) == 2
        assert result[side]["time_to_target_s"] is not None
    assert result["time_ratio"] > 0
    assert result["env"]["torch"]


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
