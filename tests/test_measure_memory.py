"""What a configuration needs in memory: the process tree's PSS sampled with the workers apart, and the split
of what torch holds on a model whose sizes are known by hand (an MLP: parameters, gradients and Adam's state
exact; activations within a factor stated below), adding up to the measured increase."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch
from conftest import tiny_overrides

from bench.cells.contract import CellSpec, GuardsConfig, MeasureConfig
from bench.measure.cell import measure_cell
from bench.measure.memory import (
    TreeSampler,
    anon_bytes,
    children,
    pss_bytes,
    rss_bytes,
    standalone_now,
    step_split,
    tensor_bytes,
    uss_bytes,
)
from trainer_core.factory import build_run
from trainer_core.loading import load_config

WIDTH, BATCH = 1024, 512
MLP = {"model.kwargs": {"input_dim": 2, "hidden_dims": [WIDTH, WIDTH], "output_dim": 2, "dropout": 0.0},
       "data.n_samples": 4 * BATCH, "data.batch_size": BATCH, "optim.name": "adam"}  # fmt: skip
PARAMS = 4 * (2 * WIDTH + WIDTH + WIDTH * WIDTH + WIDTH + WIDTH * 2 + 2)  # fp32 weights and biases, by hand
# Saved for backward, by hand: each hidden layer's ReLU output (B x WIDTH fp32; the next Linear saves the same
# tensor). At the forward's end the last Linear's output and the loss are live beside them: stated factor 2.
ACTIVATIONS = 2 * BATCH * WIDTH * 4
MB = 2**20


def test_the_split_of_an_mlp_is_exact_where_it_can_be_and_close_where_it_is_measured() -> None:
    run = build_run(load_config(None, tiny_overrides(**MLP)))
    x, y = next(iter(run.data.train_loader))
    trainer = run.trainer
    trainer.train_step(x, y)  # Adam's state exists from the first step
    split = step_split(trainer, x, y)
    assert split["params"] == pytest.approx(PARAMS / MB, rel=1e-9)
    assert split["grads"] in (pytest.approx(PARAMS / MB, rel=1e-9), 0.0)  # set_to_none frees them at the step's start
    # exp_avg and exp_avg_sq per parameter, plus a 4-byte step counter for each of the six parameter tensors
    assert split["optimizer"] == pytest.approx((2 * PARAMS + 6 * 4) / MB, rel=1e-9)
    assert ACTIVATIONS / MB <= split["activations"] <= 2 * ACTIVATIONS / MB, split
    # Adam's step (foreach) holds temporaries about the size of the parameters, several at a time
    assert PARAMS / MB <= split["temporaries"] <= 4 * PARAMS / MB, split


def test_tied_tensors_count_once() -> None:
    w = torch.zeros(1000)
    assert tensor_bytes([w, w, w[:10], torch.zeros(10)]) == 4000 + 40


@pytest.mark.slow
def test_the_sampler_sees_workers_apart_from_the_process() -> None:
    code = "import time; b = bytearray(64 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(3)"
    with TreeSampler(every_s=0.02) as sampler:
        child = subprocess.Popen([sys.executable, "-c", code])
        time.sleep(1.5)
        assert child.pid in children(os.getpid())
        child.wait()
    assert sampler.peak_workers >= 60 * MB and sampler.samples > 10
    assert sampler.peak_total >= sampler.peak_self + 60 * MB - 1 and pss_bytes(os.getpid())


def test_standalone_counts_what_a_forked_child_shares_with_its_parent_in_full() -> None:
    """bench.fit's measure: a probe forked from a server reads the pages it shares with the server in full
    (PSS would count them at half), and a worker adds only its own pages (not those it shares with the probe)."""
    shared = bytearray(64 * MB)
    shared[::4096] = b"x" * len(shared[::4096])  # resident before the fork: shared with the child afterwards
    elders = frozenset(children(os.getpid()))
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: 16 MiB of its own beside the 64 shared, then wait to be read
        try:
            own = bytearray(16 * MB)
            own[::4096] = b"y" * len(own[::4096])
            os.write(ready_w, b"1")
            time.sleep(30)
        finally:
            os._exit(0)
    try:
        assert os.read(ready_r, 1) == b"1"
        rss, pss, uss = rss_bytes(pid), pss_bytes(pid), uss_bytes(pid)
        assert rss is not None and pss is not None and uss is not None
        assert rss - pss >= 24 * MB  # half of the shared 64 MiB is missing from the child's PSS, not its RSS
        assert 15 * MB <= uss < 40 * MB  # its own 16 MiB (and pages copied on write), not the shared ones
        own, workers = standalone_now(os.getpid(), elders)
        assert own == pytest.approx(anon_bytes(os.getpid()), rel=0.05) and 15 * MB <= workers < 40 * MB
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        os.close(ready_r)
        os.close(ready_w)


@pytest.mark.slow
def test_a_child_alive_before_the_sampler_is_not_counted_as_a_worker() -> None:
    """A cell measured inside a process that already has children (a compile pool an earlier cell left behind)
    reports only the descendants born during the cell."""
    code = "import time; b = bytearray(64 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(3)"
    elder = subprocess.Popen([sys.executable, "-c", code])
    try:
        time.sleep(1.0)
        with TreeSampler(every_s=0.02) as sampler:
            time.sleep(0.5)
        assert elder.pid in sampler.elders and sampler.peak_workers == 0 and sampler.samples > 5
    finally:
        elder.wait()


@pytest.mark.slow
def test_a_cell_records_its_tree_and_the_split_adds_up_to_the_measured_increase() -> None:
    wide = {**MLP, "model.kwargs": {**MLP["model.kwargs"], "hidden_dims": [4096, 4096]}}
    config = load_config(None, tiny_overrides(**wide))
    measure = MeasureConfig(warmup_steps=2, max_warmup_steps=3, settle_window=2, min_steps=3, min_time_s=0,
                            max_time_s=1, repeats=1)  # fmt: skip
    spec = CellSpec(cell_id="mlp", config=config.to_dict(), threads=1, measure=measure,
                    guards=GuardsConfig(enabled=["finite"]))  # fmt: skip
    rec = measure_cell(spec)
    assert rec.mem_baseline_mb and rec.mem_peak_mb and rec.mem_peak_mb >= rec.mem_baseline_mb
    assert rec.mem_workers_mb == 0.0 and rec.mem_split_mb is not None and rec.mem_added_mb
    assert rec.mem_split_mb["params"] == pytest.approx(4 * (2 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 2 + 2) / MB)
    # Parameters, gradients, Adam's state and the larger of activations and the step's temporaries come to
    # ~400 MiB here; the measured increase also holds first-use costs (oneDNN's kernels, autograd's and the
    # FLOP counter's buffers: ~35 MiB) and what glibc keeps of freed blocks, so the split explains less:
    # measured at -24% (docs/measurements.md). Stated bound: within 35%, and never more than was measured.
    assert -35 <= rec.mem_split_gap_pct <= 0, (rec.mem_split_mb, rec.mem_added_mb)
