import random

import numpy as np
import torch

from trainer_core.reproducibility import capture_rng_state, restore_rng_state, seed_everything


def test_rng_state_round_trip_covers_python_numpy_torch() -> None:
    seed_everything(3)
    state = capture_rng_state()
    first = (random.random(), float(np.random.rand()), torch.rand(3))
    seed_everything(99)
    restore_rng_state(state)
    second = (random.random(), float(np.random.rand()), torch.rand(3))
    assert first[0] == second[0] and first[1] == second[1] and torch.equal(first[2], second[2])


def test_rng_state_is_plain_data() -> None:
    state = capture_rng_state()
    assert isinstance(state["torch"], torch.Tensor)
    assert isinstance(state["python"][1], list) and isinstance(state["numpy"][1], torch.Tensor)
