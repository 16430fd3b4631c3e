"""A user model factory, loaded by import path in tests (``user_models:make_tiny``)."""

from torch import nn


def make_tiny(in_features: int = 2, classes: int = 2) -> nn.Module:
    return nn.Sequential(nn.Linear(in_features, 8), nn.ReLU(), nn.Linear(8, classes))
