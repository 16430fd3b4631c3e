"""Models with planted faults: each one breaks exactly one guard, to prove the guard catches it.

Used by the tests and by ``python -m bench.guard_audit`` (catch rate beside false-alarm rate); give one
as a cell's model (``model.name: bench.planted:emits_nan``) to see a guard fire on your machine.

| factory        | breaks       | how                                                                  |
|----------------|--------------|----------------------------------------------------------------------|
| never_learns   | overfit      | output ignores the input; its only parameter gets zero gradient      |
| emits_nan      | finite       | every output is NaN                                                  |
| nondeterministic | determinism | noise from a generator seeded by the clock, outside the seeded RNGs |
| hidden_state   | resume       | a call counter that changes the output but is not in the state_dict  |
| raises         | (the cell)   | forward raises: the cell fails and the run goes on                   |
"""

from __future__ import annotations

import time

import torch
from torch import nn


class NeverLearns(nn.Module):
    """Output ignores the input and the only parameter gets zero gradient: loss never falls."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))
        self.classes = classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], self.classes) + 0.0 * self.w


class EmitsNaN(nn.Module):
    def __init__(self, in_features: int, classes: int) -> None:
        super().__init__()
        self.lin = nn.Linear(in_features, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.flatten(1)) * float("nan")


class Nondeterministic(nn.Module):
    """Adds noise from a generator seeded by the clock, outside the seeded RNGs."""

    def __init__(self, in_features: int, classes: int) -> None:
        super().__init__()
        self.lin = nn.Linear(in_features, classes)
        self.g = torch.Generator().manual_seed(time.time_ns())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.lin(x.flatten(1))
        return out + 0.1 * torch.randn(out.shape, generator=self.g)


class HiddenState(nn.Module):
    """Keeps a call counter that changes the output but is not in its state_dict: resume cannot restore it."""

    def __init__(self, in_features: int, classes: int) -> None:
        super().__init__()
        self.lin = nn.Linear(in_features, classes)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.lin(x.flatten(1)) * (1.0 + 0.1 * self.calls)


class Raises(nn.Module):
    def __init__(self, in_features: int, classes: int) -> None:
        super().__init__()
        self.lin = nn.Linear(in_features, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("planted failure in forward")


def never_learns(in_features: int = 2, classes: int = 2) -> nn.Module:
    return NeverLearns(classes)


def emits_nan(in_features: int = 2, classes: int = 2) -> nn.Module:
    return EmitsNaN(in_features, classes)


def nondeterministic(in_features: int = 2, classes: int = 2) -> nn.Module:
    return Nondeterministic(in_features, classes)


def hidden_state(in_features: int = 2, classes: int = 2) -> nn.Module:
    return HiddenState(in_features, classes)


def raises(in_features: int = 2, classes: int = 2) -> nn.Module:
    return Raises(in_features, classes)
