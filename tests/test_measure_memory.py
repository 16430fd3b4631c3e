"""What a configuration needs in memory: the process tree's PSS sampled with the workers apart, and the split
of what torch holds on a model whose sizes are known by hand (an MLP: parameters, gradients and Adam's state
exact; activations within a factor stated below), adding up to the measured increase."""

from __future__ import annotations

import mmap
import os
import subprocess
import sys
import time

import pytest
import torch
from conftest import tiny_overrides

from bench.cells.contract import CellRecord, CellSpec, GuardsConfig, MeasureConfig
from bench.measure.cell import measure_cell
from bench.measure.memory import (
    HostMark,
    HostStep,
    MallocBooks,
    TreeSampler,
    anon_bytes,
    children,
    high_water_bytes,
    host_mark,
    host_split,
    malloc_books,
    pss_bytes,
    python_arena_bytes,
    reset_high_water,
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


def _books(in_use_mb: float, held_mb: float) -> MallocBooks:
    return MallocBooks(in_use=int(in_use_mb * MB), held=int(held_mb * MB))


def test_the_hosts_books_place_what_torch_does_not_hold() -> None:
    """library: the file-backed rise; runtime: malloc's blocks in use that are none of the model's tensors;
    malloc_held: the lesser of what glibc held as the peak's phase began and ended (here the optimizer's
    step: gradients and temporaries outweigh activations and the backward), above the start."""
    split = {"data": 10.0, "params": 4.0, "grads": 4.0, "optimizer": 8.0, "activations": 2.0, "backward": 1.0,
             "temporaries": 8.0}  # fmt: skip
    start = HostMark(_books(100, 2), files=50 * MB, high_water=None, python=9 * MB)
    phases = {"forward": _books(140, 5), "backward": _books(136, 30), "optimizer": _books(136, 22)}
    step = HostStep(phases, HostMark(_books(136, 40), files=80 * MB, high_water=None, python=12 * MB), own_peak=False)
    host = host_split(split, start, step)
    assert host == pytest.approx({"library": 30.0, "runtime": 36 - 26, "malloc_held": 22 - 2, "python": 3.0})
    # A peak in the backward (activations outweigh the optimizer's step): held around the backward instead.
    heavy = {**split, "activations": 30.0}
    assert host_split(heavy, start, step)["malloc_held"] == pytest.approx(5 - 2)
    # No glibc books: only what /proc says; no /proc either: nothing.
    bare = HostMark(None, files=None, high_water=None)
    assert host_split(split, HostMark(None, 50 * MB, None), step._replace(end=HostMark(None, 80 * MB, None))) == {
        "library": 30.0
    }
    assert host_split(split, bare, step._replace(end=bare)) == {}


def test_the_gap_compares_the_split_with_the_peak_it_can_explain() -> None:
    """On a CPU the split with the host's parts and the workers against the split step's own peak plus the
    workers (else the cell's added memory); on CUDA the device's tensors (not the host's data) against the
    allocator's peak."""
    split = {"data": 10.0, "params": 4.0, "grads": 4.0, "optimizer": 8.0, "activations": 30.0, "backward": 6.0,
             "temporaries": 8.0, "library": 20.0, "runtime": 5.0, "malloc_held": 7.0, "python": 2.0}  # fmt: skip
    # at the peak: 10 + 4 + 8 + (30 + 6), and the host's 34: 92; with 8 of workers, 100
    base = {"cell_id": "c", "status": "ok", "mem_split_mb": split, "mem_workers_mb": 8.0}
    own = CellRecord(**base, mem_split_peak_mb=117.0, mem_baseline_mb=500.0, mem_peak_mb=700.0)
    assert own.mem_split_gap_pct == pytest.approx(100 * (100 - 125) / 125)
    cell = CellRecord(**base, mem_baseline_mb=500.0, mem_peak_mb=580.0)  # no step peak: the cell's 80 added
    assert cell.mem_split_gap_pct == pytest.approx(100 * (100 - 80) / 80)
    cuda = CellRecord(**{**base, "mem_workers_mb": 0.0}, mem_kind="cuda_max_allocated", peak_mem_mb=60.0)
    assert cuda.mem_split_gap_pct == pytest.approx(100 * ((4 + 8 + 36) - 60) / 60)


@pytest.mark.skipif(malloc_books() is None, reason="glibc's mallinfo2 (glibc 2.33 and later) is not in this libc")
def test_malloc_books_and_the_high_water_mark_follow_an_allocation() -> None:
    before = host_mark()
    block = torch.ones(48 * MB // 4)
    during = host_mark()
    # glibc may serve the block from freed chunks it already holds, so the books' sum of in-use blocks rises
    # by it while the resident set need not: the mark is checked on pages that are new to the process
    assert before.books and during.books and during.books.in_use - before.books.in_use >= 47 * MB
    del block
    assert reset_high_water()  # from here the mark is this test's own, whatever ran in this process before
    start = high_water_bytes(os.getpid())
    pages = mmap.mmap(-1, 48 * MB)  # an anonymous mapping: none of its pages resident until written
    pages.write(b"x" * (48 * MB))
    touched = high_water_bytes(os.getpid())
    assert start and touched and touched >= start + 47 * MB, (start, touched)
    pages.close()
    assert reset_high_water()
    after = high_water_bytes(os.getpid())
    assert after is not None and after <= touched - 40 * MB  # the unmapped pages are out of the new mark


@pytest.mark.skipif(python_arena_bytes() is None, reason="this interpreter reports no small-object arenas")
def test_python_arenas_grow_with_the_interpreters_objects() -> None:
    before = python_arena_bytes()
    objects = [(i, str(i)) for i in range(200_000)]  # small objects: CPython's own allocator, not malloc's
    after = python_arena_bytes()
    assert before is not None and after is not None and after - before >= 10 * MB, (before, after)
    assert len(objects) == 200_000


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
    # ~400 MiB here; beside them the host's books place the library code the first steps paged in, the
    # runtime's own blocks and what glibc kept of freed ones: measured within 1% of the split step's own
    # peak (docs/measurements.md). Stated bound: issue 30's 10%.
    assert {"library", "runtime", "malloc_held", "python"} <= set(rec.mem_split_mb) and rec.mem_split_peak_mb
    assert -10 <= rec.mem_split_gap_pct <= 10, (rec.mem_split_mb, rec.mem_split_peak_mb)
