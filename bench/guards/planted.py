"""Models with planted faults: each one breaks exactly one guard, to prove the guard catches it.

Used by the tests and by ``python -m bench.guard_audit`` (catch rate beside false-alarm rate); give one
as a cell's model (``model.name: bench.guards.planted:emits_nan``) to see a guard fire on your machine.

| factory        | breaks       | how                                                                  |
|----------------|--------------|----------------------------------------------------------------------|
| never_learns   | overfit      | output ignores the input; its only parameter gets zero gradient      |
| emits_nan      | finite       | every output is NaN                                                  |
| nan_gradients  | finite       | the loss stays finite; one parameter's gradient is NaN every step    |
| nondeterministic | determinism | noise from a generator seeded by the clock, outside the seeded RNGs |
| hidden_state   | resume       | a call counter that changes the output but is not in the state_dict  |
| raises         | (the cell)   | forward raises: the cell fails and the run goes on                   |
| rank_dependent | ddp_equivalence | ranks but 0 see their batch reversed against its labels          |
| branch_on_batch | parity (export) | a Python branch on the batch size: a trace freezes the example's branch |
| frozen_batch   | parity (export) | ``int(x.shape[0])``: a trace bakes the example's batch into the graph |
| drifts_when_exported | parity (inference) | the captured graph adds an offset eager does not          |
| grows_state    | bench.fit    | keeps batch x batch x 256 bytes a step: a few steps fit, an epoch may not |

``extra_time`` plants a slowdown instead of a fault: a healthy model (any registered one) whose every
forward also busy-waits, either ``extra_share`` of the step's own time (a step of ``s`` ms takes
``s * (1 + extra_share)``: a fixed ratio however fast the machine runs that minute) or a fixed
``extra_ms`` (``s + extra_ms``): a known change for ``bench.ab`` and ``bench.history check`` to find.
(Extra *work* on a share of the batch would not do: small batches run far less efficiently, so "5% more
samples" costs 15-20% more time.)

``lm_never_learns``, ``lm_emits_nan``, ``lm_nan_gradients``, ``lm_nondeterministic``, ``lm_hidden_state``:
the same faults for the causal_lm workload (token ids in, logits over the vocabulary out).
"""

from __future__ import annotations

import os
import statistics
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


class _NaNGradient(torch.autograd.Function):
    """Zeros whatever the input holds (NaN included) on the way forward, NaN on the way back."""

    @staticmethod
    def forward(ctx: object, p: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(p)

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        return torch.full_like(grad, float("nan"))


class NaNGradients(nn.Module):
    """A healthy linear model with one extra parameter whose gradient is NaN every step. It adds exactly
    zero to the output whatever its value, so the loss stays finite (and the model learns): only the
    gradient norm shows the fault."""

    def __init__(self, in_features: int, classes: int) -> None:
        super().__init__()
        self.lin = nn.Linear(in_features, classes)
        self.trap = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.flatten(1)) + _NaNGradient.apply(self.trap).sum()


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


class RankDependent(nn.Module):
    """Healthy in one process; in a data-parallel run every rank but 0 trains on its batch reversed
    (inputs no longer matched to their labels), so the averaged gradient is not the global batch's."""

    def __init__(self, in_features: int, classes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_features, 16), nn.ReLU(), nn.Linear(16, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        if self.training and dist.is_initialized() and dist.get_rank() > 0:
            x = x.flip(0)
        return self.net(x)


def never_learns(in_features: int = 2, classes: int = 2) -> nn.Module:
    return NeverLearns(classes)


def emits_nan(in_features: int = 2, classes: int = 2) -> nn.Module:
    return EmitsNaN(in_features, classes)


def nan_gradients(in_features: int = 2, classes: int = 2) -> nn.Module:
    return NaNGradients(in_features, classes)


def nondeterministic(in_features: int = 2, classes: int = 2) -> nn.Module:
    return Nondeterministic(in_features, classes)


def hidden_state(in_features: int = 2, classes: int = 2) -> nn.Module:
    return HiddenState(in_features, classes)


def raises(in_features: int = 2, classes: int = 2) -> nn.Module:
    return Raises(in_features, classes)


def rank_dependent(in_features: int = 2, classes: int = 2) -> nn.Module:
    return RankDependent(in_features, classes)


# ------------------------------------------------------------------------ language-model variants
# The same four faults for the causal_lm workload: token ids [B, T] in, logits [B, T, vocab] out.
class _TinyLM(nn.Module):
    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab_size, 16)
        self.head = nn.Linear(16, vocab_size)

    def logits(self, idx: torch.Tensor) -> torch.Tensor:
        return self.head(self.emb(idx))


class LMNeverLearns(_TinyLM):
    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*idx.shape, self.head.out_features) + 0.0 * self.head.bias.sum()


class LMEmitsNaN(_TinyLM):
    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.logits(idx) * float("nan")


class LMNaNGradients(_TinyLM):
    def __init__(self, vocab_size: int) -> None:
        super().__init__(vocab_size)
        self.trap = nn.Parameter(torch.zeros(1))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.logits(idx) + _NaNGradient.apply(self.trap).sum()


class LMNondeterministic(_TinyLM):
    def __init__(self, vocab_size: int) -> None:
        super().__init__(vocab_size)
        self.g = torch.Generator().manual_seed(time.time_ns())

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        out = self.logits(idx)
        return out + 0.1 * torch.randn(out.shape, generator=self.g)


class LMHiddenState(_TinyLM):
    def __init__(self, vocab_size: int) -> None:
        super().__init__(vocab_size)
        self.calls = 0

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.logits(idx) * (1.0 + 0.1 * self.calls)


def lm_never_learns(vocab_size: int = 32) -> nn.Module:
    return LMNeverLearns(vocab_size)


def lm_emits_nan(vocab_size: int = 32) -> nn.Module:
    return LMEmitsNaN(vocab_size)


def lm_nan_gradients(vocab_size: int = 32) -> nn.Module:
    return LMNaNGradients(vocab_size)


def lm_nondeterministic(vocab_size: int = 32) -> nn.Module:
    return LMNondeterministic(vocab_size)


def lm_hidden_state(vocab_size: int = 32) -> nn.Module:
    return LMHiddenState(vocab_size)


# --------------------------------------------------------------------------------- planted slowdown
class ExtraTime(nn.Module):
    """The base model, unchanged, plus busy-waiting (a CPU kept busy, not a sleep) after each forward:
    ``extra_ms`` each time, and ``extra_share`` times the step's own time, so that a step of ``s`` ms takes
    ``s * (1 + extra_share)`` whatever speed the machine runs at that minute. The step's own time is the
    median of the last five intervals from one forward's start to the next, counted in this thread's CPU
    time less what was waited then: a wait the thread spends blocked (the partner's turn when two cells take
    their steps in turns, a loader it waits on) is not the step's work, and in wall time it would make the
    plant a share of both sides' steps. The median keeps a pause between forwards (an evaluation, the gap
    before a forked reading's first step) from becoming a wait of its own; a forked process starts its own
    intervals rather than measuring from its parent's forward."""

    def __init__(self, base: nn.Module, extra_ms: float, extra_share: float = 0.0) -> None:
        super().__init__()
        self.base, self.extra_s, self.share = base, extra_ms / 1e3, extra_share
        # the last forward's (pid, thread CPU time at its start, wait asked for, CPU time the wait took)
        self._last: tuple[int, float, float, float] | None = None
        self._own: list[float] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        start = time.thread_time()
        out = self.base(x)
        wait = self.extra_s
        last, pid = self._last, os.getpid()
        if last is not None and last[0] != pid:  # forked after its parent's forward: nothing measured yet
            last, self._own = None, []
        if self.share and last is not None:
            self._own = [*self._own[-4:], max(0.0, start - last[1] - last[3])]
            wait += self.share * statistics.median(self._own)
        cpu, until = time.thread_time(), time.perf_counter() + wait
        while time.perf_counter() < until:
            pass
        # the wait's own CPU time, not its wall time: on a busy machine the loop gets less CPU than it waits
        self._last = (pid, start, wait, time.thread_time() - cpu)
        return out


def extra_time(base: str = "SimpleCNN", extra_ms: float = 0.0, extra_share: float = 0.0, **kwargs: object) -> nn.Module:
    """``model: {name: bench.guards.planted:extra_time, kwargs: {base: SimpleCNN, extra_share: 0.0526, ...}}``
    (the other kwargs go to the base model's factory): ``extra_share`` s makes throughput 1 / (1 + s) of
    the base model's (0.0526: 5% slower), ``extra_ms`` adds a fixed time to every forward."""
    from trainer_core.config import ModelConfig
    from trainer_core.models import build_model

    if extra_ms < 0 or extra_share < 0:
        raise ValueError(f"extra_ms and extra_share must be >= 0, got {extra_ms} and {extra_share}")
    return ExtraTime(build_model(ModelConfig(name=base, kwargs=dict(kwargs))), extra_ms, extra_share)


class BranchOnBatch(nn.Module):
    """Export fault: a Python branch on the batch size. Tracing freezes the branch the example took, so the
    traced model gives batch 1 the wrong output (torch.export refuses the branch on a dynamic dim)."""

    def __init__(self, in_features: int, classes: int) -> None:
        super().__init__()
        self.net = nn.Linear(in_features, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x.flatten(1))
        if x.shape[0] == 1:  # e.g. a single-request path that skips a batch statistic
            return y - y.mean()
        return y


class FrozenBatch(nn.Module):
    """Export fault: the batch size read as a Python int (``int(x.shape[0])``); a trace bakes the example's
    batch into the graph, so another batch gets an output of the example's size."""

    def __init__(self, in_features: int, classes: int) -> None:
        super().__init__()
        self.net = nn.Linear(in_features, classes)
        self.classes = classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1)) + torch.zeros(int(x.shape[0]), self.classes)


def branch_on_batch(in_features: int = 2, classes: int = 2) -> nn.Module:
    return BranchOnBatch(in_features, classes)


def frozen_batch(in_features: int = 2, classes: int = 2) -> nn.Module:
    return FrozenBatch(in_features, classes)


class DriftsWhenExported(nn.Module):
    """Export fault: the graph a tracer or exporter captures computes something else than eager (here an
    offset, standing for a kernel or fused op whose numerics differ): caught by parity in every runtime but eager."""

    def __init__(self, in_features: int, classes: int) -> None:
        super().__init__()
        self.net = nn.Linear(in_features, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x.flatten(1))
        if torch.jit.is_tracing() or torch.compiler.is_compiling():
            return y + 0.05 * y.abs().mean()
        return y


def drifts_when_exported(in_features: int = 2, classes: int = 2) -> nn.Module:
    return DriftsWhenExported(in_features, classes)


class GrowsState(nn.Module):
    """Memory fault: every training forward keeps a buffer of batch x batch x 256 bytes that is never freed (a
    metric list nobody clears). A few steps fit where an epoch does not, and the larger the batch the sooner."""

    def __init__(self, in_features: int, classes: int) -> None:
        super().__init__()
        self.net = nn.Linear(in_features, classes)
        self.kept: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.kept.append(torch.ones(x.shape[0] * x.shape[0] * 64))
        return self.net(x.flatten(1))


def grows_state(in_features: int = 2, classes: int = 2) -> nn.Module:
    return GrowsState(in_features, classes)
