"""bench.fit end to end: each probe trains in its own process under the cap, a probe over it is killed (the
search goes on), and a batch that fits a few steps but not an epoch (planted growing state) is not chosen."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import tiny_overrides

from bench.cells.store import read_records
from bench.fit import __main__ as fit_cli
from bench.fit.fitting import Prober
from bench.launch.executors import build_executor
from trainer_core.loading import load_config

GROWS = {"model.name": "bench.guards.planted:grows_state", "model.kwargs": {}, "data.n_samples": 2048,
         "data.val_fraction": 0.0, "data.batch_size": 32, "train.epochs": 1}  # fmt: skip


def prober(tmp_path: Path, cap_mb: float, **over: object) -> Prober:
    config = load_config(None, tiny_overrides(**over))
    return Prober(config, cap_mb, tmp_path, build_executor("forked", {}, tmp_path), threads=1)


@pytest.mark.slow
def test_a_probe_over_the_cap_is_killed_and_the_search_goes_on(tmp_path: Path) -> None:
    roomy = prober(tmp_path / "roomy", 16_000, **GROWS)
    try:
        ok = roomy.probe(32)
        assert ok.fits and ok.peak_mb and ok.peak_mb > 100
        tight = prober(tmp_path / "tight", ok.peak_mb + 60, **GROWS)
        try:
            over = tight.probe(1024)  # keeps 3 x 64 MiB: over the cap
            assert not over.fits and "killed by signal 9" in (over.reason or "")
            assert tight.probe(32).fits  # this process, the search's, is alive and probes again
        finally:
            tight.executor.close()
    finally:
        roomy.executor.close()


@pytest.mark.slow
def test_a_probe_needs_the_same_memory_however_it_was_started(tmp_path: Path) -> None:
    # A forked probe shares torch's pages with its server: counted as PSS they read at half, and the forked
    # executor let a larger batch "fit" than a probe in a new interpreter did; counted as RSS, the library
    # pages a new interpreter touches while importing (and a forked one never maps) made them differ the
    # other way. Read as the tree's anonymous memory, each page in full, the two agree.
    config = load_config(None, tiny_overrides(**GROWS))
    peaks = {}
    for name in ("forked", "local"):
        probing = Prober(config, 16_000, tmp_path / name, build_executor(name, {}, tmp_path / name), threads=1)
        try:
            peaks[name] = probing.probe(32).peak_mb
        finally:
            probing.executor.close()
    assert peaks["forked"] and peaks["local"] and peaks["forked"] == pytest.approx(peaks["local"], rel=0.05), peaks
    records = read_records(tmp_path / "local" / "cells.jsonl")
    assert [r.mem_kind for r in records] == ["standalone_anon"]


@pytest.mark.slow
def test_the_chosen_batch_trains_an_epoch_under_the_cap(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "grows.yaml"
    over = tiny_overrides(**GROWS)
    doc: dict = {}
    for key, value in over.items():  # dotted overrides as a YAML config
        node = doc
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    config.write_text(yaml.safe_dump(doc))
    roomy = prober(tmp_path / "roomy", 16_000, **GROWS)
    try:
        base = roomy.probe(32).peak_mb
    finally:
        roomy.executor.close()
    assert base is not None
    cap = base + 100  # 3 steps of batch 256 keep 48 MiB, an epoch of it 128 MiB; batch 128: 12 and 64 MiB
    argv = ["--config", str(config), "--max-memory-mb", str(cap), "--threads", "1", "--executor", "forked",
            "--out", str(tmp_path / "out")]  # fmt: skip
    assert fit_cli.cli(argv) == 0
    (run_dir,) = (tmp_path / "out").glob("fit-*")
    report = json.loads((run_dir / "fit.json").read_text())
    short = max(p["batch"] for p in report["probes"] if p["fits"] and not p["confirm"])
    chosen = report["chosen_batch"]
    assert chosen is not None and chosen < short  # the largest short fit failed its epoch
    assert any(p["batch"] == short and p["confirm"] and not p["fits"] for p in report["probes"])
    assert 0 < report["headroom_mb"] < 100 and report["confirmed_peak_mb"] <= cap
    assert f"**Batch {chosen}** trains a full epoch under" in capsys.readouterr().out
