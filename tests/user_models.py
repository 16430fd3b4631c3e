"""Your own model, workload, dataset and loss, loaded by import path in tests (``user_models:make_tiny``, ...)."""

import os
import signal
import sys
import time

import torch
from torch import nn
from torch.utils.data import TensorDataset

from trainer_core.workloads import Classification


def make_tiny(in_features: int = 2, classes: int = 2) -> nn.Module:
    return nn.Sequential(nn.Linear(in_features, 8), nn.ReLU(), nn.Linear(8, classes))


class HalfLossWorkload(Classification):
    """A user workload by import path: classification with half the loss."""

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return 0.5 * super().loss(outputs, targets)


def xor_datasets(n: int = 512) -> tuple[TensorDataset, TensorDataset, None]:
    """A user dataset factory: XOR of two bits plus noise; (train, val, test=None)."""
    g = torch.Generator().manual_seed(0)
    bits = torch.randint(0, 2, (n, 2), generator=g)
    x = bits.float() + 0.1 * torch.randn(n, 2, generator=g)
    y = (bits[:, 0] ^ bits[:, 1]).long()
    cut = n * 3 // 4
    return TensorDataset(x[:cut], y[:cut]), TensorDataset(x[cut:], y[cut:]), None


def smoothed_ce(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """A user loss by import path: cross-entropy with label smoothing."""
    return torch.nn.functional.cross_entropy(outputs.float(), targets, label_smoothing=0.1)


_BUILT = 0  # models built by this process


def process_probe(path: str, in_features: int = 2, classes: int = 2) -> nn.Module:
    """A tiny model that notes, in ``path``, the process that built it: its pid, its parent's pid, how
    many models this process has built, and where its ``bench`` package came from."""
    import bench

    global _BUILT
    _BUILT += 1
    with open(path, "a") as f:
        f.write(f"{os.getpid()} {os.getppid()} {_BUILT} {bench.__file__}\n")
    return make_tiny(in_features, classes)


def dies(in_features: int = 2, classes: int = 2) -> nn.Module:
    """A model whose building kills its process (SIGKILL: what the kernel's OOM killer sends)."""
    os.kill(os.getpid(), signal.SIGKILL)
    return make_tiny(in_features, classes)


def sleeps(seconds: float = 60.0, in_features: int = 2, classes: int = 2) -> nn.Module:
    """A model that takes ``seconds`` to build: a cell that overruns its timeout."""
    time.sleep(seconds)
    return make_tiny(in_features, classes)


def aborts_on_rank_1(in_features: int = 2, classes: int = 2) -> nn.Module:
    """A model whose building aborts rank 1 of a data-parallel run (SIGABRT, as a C++ std::terminate
    does) after a line on stderr; other ranks build it as usual."""
    if os.environ.get("RANK") == "1":
        print("rank 1 is about to abort (planted)", file=sys.stderr, flush=True)
        os.abort()
    return make_tiny(in_features, classes)
