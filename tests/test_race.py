"""bench.recipe_race.race: time to a target accuracy from the per-epoch points."""

from bench.recipe_race.race import time_to_target


def test_time_to_target_picks_the_first_epoch_reaching_it() -> None:
    points = [
        {"epoch": 1, "train_seconds": 2.0, "test_accuracy": 0.8},
        {"epoch": 2, "train_seconds": 4.0, "test_accuracy": 0.92},
        {"epoch": 3, "train_seconds": 6.0, "test_accuracy": 0.95},
    ]
    assert time_to_target(points, 0.9) == (4.0, 2)
    assert time_to_target(points, 0.99) == (None, None)
