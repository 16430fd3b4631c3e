"""The guards' report card: configurations on which every guard must pass, and planted faults that
each guard must catch.

A guard that fires on a healthy configuration is as much a defect as one that misses a fault, so
both rates are measured on the same footing: the false-alarm rate over every shipped run config and
every model x precision of the shipped matrices, the catch rate over the models of
:mod:`bench.planted`, each over several seeds (``python -m bench.guard_audit``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from bench.contract import FAIL, GuardResult, GuardsConfig, guards_ok
from bench.guards import QUICK_GUARDS, check_guards
from bench.matrix import expand, load_matrix
from trainer_core.config import RunConfig, apply_overrides, load_config, validate_config
from trainer_core.datasets import preflight_data
from trainer_core.errors import ConfigError, DataError
from trainer_core.text import write_sample_text

# The planted fault -> the guard it must fail (see bench/planted.py).
PLANTED: dict[str, str] = {
    "never_learns": "overfit",
    "emits_nan": "finite",
    "nondeterministic": "determinism",
    "hidden_state": "resume",
}


@dataclass
class GuardCase:
    label: str
    config: RunConfig
    guards: GuardsConfig
    expect_fail: str | None = None  # the guard a planted fault must fail; None: every guard must pass


def cheap(config: RunConfig, shrink: bool = False) -> RunConfig:
    """The same model, precision, optimizer and batch size on fewer samples: guards only need a few batches.
    ``shrink`` (the test suite's quick check): images also at most 64 pixels a side."""
    d = config.data
    over: dict[str, Any] = {"data.n_samples": max(256, 4 * d.batch_size), "data.n_test_samples": 64}
    if d.name in ("mnist", "fashion_mnist"):
        over["data.limit_train_samples"] = max(512, 4 * d.batch_size)
    if d.name == "synthetic_jpegs":
        over.update({"data.n_samples": max(64, 2 * d.batch_size), "data.n_test_samples": 16})
    if shrink and d.image_shape is not None:
        over["data.image_shape"] = [d.image_shape[0], min(64, d.image_shape[1]), min(64, d.image_shape[2])]
    return validate_config(apply_overrides(config.to_dict(), over), source=f"{config.name} (cheap)")


def is_matrix(path: Path) -> bool:
    doc = yaml.safe_load(path.read_text()) or {}
    return isinstance(doc, dict) and "axes" in doc


def matrix_cases(path: Path, shrink: bool = False) -> list[GuardCase]:
    """One case per model x precision among the cells this machine can run, with the matrix's guard settings."""
    spec = load_matrix(path)
    seen: dict[tuple[str, str, str], GuardCase] = {}
    for cell in expand(spec, source=str(path)):
        c = cell.config
        key = (c.model.name, repr(sorted(c.model.kwargs.items())), c.precision)
        if cell.skip_reason is None and key not in seen:
            seen[key] = GuardCase(f"{path.name}: {c.model.name} {c.precision}", cheap(c, shrink), spec.guards)
    return list(seen.values())


def shipped_cases(configs_dir: Path, shrink: bool = False) -> list[GuardCase]:
    """Every run config (under a matrix's default guards and under bench.tune's quick ones) and every
    model x precision of every matrix in ``configs_dir``."""
    cases: list[GuardCase] = []
    for path in sorted(Path(configs_dir).glob("*.yaml")):
        if is_matrix(path):
            cases += matrix_cases(path, shrink)
            continue
        config = cheap(load_config(path), shrink)
        cases += [
            GuardCase(f"{path.name} (matrix guards)", config, GuardsConfig()),
            GuardCase(f"{path.name} (tune guards)", config, QUICK_GUARDS),
        ]
    return cases


def planted_cases() -> list[GuardCase]:
    """Each planted fault on flat tabular data and on MNIST-shaped images (under a one-cycle schedule, so a
    guard that holds the schedule fixed is shown still to catch it), under both guard settings."""
    hosts = {
        "blobs": {
            "data.name": "synthetic_blobs",
            "data.n_samples": 256,
            "data.batch_size": 32,
            "optim.lr": 0.02,
            "model.kwargs": {"in_features": 2, "classes": 2},
        },
        "tokens": {
            "data.name": "text",
            "data.n_samples": 256,
            "data.batch_size": 16,
            "data.block_size": 16,
            "optim.lr": 0.02,
            "model.kwargs": {},
        },
        "images+onecycle": {
            "data.name": "synthetic_images",
            "data.n_samples": 256,
            "data.batch_size": 32,
            "optim.lr": 0.005,
            "optim.scheduler": "onecycle",
            "model.kwargs": {"in_features": 784, "classes": 10},
        },
    }
    cases = []
    for fault, guard in PLANTED.items():
        for host, over in hosts.items():
            name = f"bench.planted:{'lm_' if host == 'tokens' else ''}{fault}"
            config = validate_config(apply_overrides({"device": "cpu"}, {**over, "model.name": name}))
            for label, gcfg in (("matrix guards", GuardsConfig()), ("tune guards", QUICK_GUARDS)):
                cases.append(GuardCase(f"{fault} on {host} ({label})", config, gcfg, expect_fail=guard))
    return cases


def with_data(case: GuardCase, data_root: str | None) -> GuardCase | None:
    """The case with its data found: as configured, else under ``data_root`` (IDX files there; a text
    file ``sample.txt`` there, written if missing; generated JPEGs there); None if neither has it."""
    d = case.config.data
    if d.name == "synthetic_jpegs" and data_root is not None:
        return replace(case, config=validate_config(apply_overrides(case.config.to_dict(), {"data.root": data_root})))
    try:
        preflight_data(d)
        return case
    except (DataError, ConfigError):
        if data_root is None:
            return None
    if d.name == "text":
        over = {"data.path": str(write_sample_text(Path(data_root) / "sample.txt"))}
    else:
        over = {"data.root": data_root}
    config = validate_config(apply_overrides(case.config.to_dict(), over))
    preflight_data(config.data)
    return replace(case, config=config)


def run_case(case: GuardCase, seed_offset: int = 0) -> tuple[bool, list[GuardResult]]:
    """(verdict, results) with the config's own seed plus ``seed_offset``: for a healthy case True when
    every guard passed; for a planted fault True when its guard failed (it was caught)."""
    config = validate_config(apply_overrides(case.config.to_dict(), {"seed": case.config.seed + seed_offset}))
    results = check_guards(config, case.guards)
    if case.expect_fail is None:
        return guards_ok(results), results
    return any(r.name == case.expect_fail and r.status == FAIL for r in results), results


def audit(
    groups: dict[str, list[GuardCase]], seeds: int, data_root: str | None, say: Callable[[str], None] = print
) -> tuple[list[dict[str, Any]], dict[str, list[int]]]:
    """Every case of every group (``healthy``: must pass; ``planted``: must be caught) with ``seeds`` seeds.
    Returns (one row per verdict, {group: [good verdicts, runs]}); ``say`` gets a line per verdict."""
    counts = {g: [0, 0] for g in groups}
    rows = []
    for group, cases in groups.items():
        for case in cases:
            found = with_data(case, data_root)
            if found is None:
                say(f"not run: {case.label}: its data is not on disk (see --data-root)")
                continue
            for seed in range(seeds):  # offsets from the config's own seed
                t0 = time.perf_counter()
                good, results = run_case(found, seed)
                counts[group][0] += good
                counts[group][1] += 1
                bad = "; ".join(f"{r.name} {r.status}: {r.detail}" for r in results if r.status != "pass")
                verdict = (
                    ("pass" if good else "FALSE ALARM")
                    if case.expect_fail is None
                    else ("caught" if good else "MISSED")
                )
                say(
                    f"{verdict:<11} {case.label} seed {seed} ({time.perf_counter() - t0:.1f} s)"
                    + (f": {bad}" if bad else "")
                )
                rows.append(
                    {
                        "group": group,
                        "case": case.label,
                        "seed": seed,
                        "good": good,
                        "guards": {r.name: r.status for r in results},
                    }
                )
    return rows, counts
