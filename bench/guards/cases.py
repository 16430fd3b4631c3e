"""The guards' report card: configurations on which every guard must pass, and planted faults that
each guard must catch.

A guard that fires on a healthy configuration is as much a defect as one that misses a fault, so
both rates are measured on the same footing: the false-alarm rate over every shipped run config and
every model x precision of the shipped matrices, the catch rate over the models of
:mod:`bench.guards.planted`, each over several seeds (``python -m bench.guard_audit``).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from bench.cells.contract import FAIL, GuardResult, GuardsConfig, guards_ok
from bench.guards.checks import QUICK_GUARDS, check_guards
from bench.matrix import expand, load_matrix
from bench.measure.ranks import is_multi_rank
from trainer_core import distributed
from trainer_core.config import RunConfig, apply_overrides
from trainer_core.datasets import preflight_data
from trainer_core.errors import ConfigError, DataError
from trainer_core.loading import load_config, validate_config
from trainer_core.precision import resolve_device
from trainer_core.text import write_sample_text

# The planted fault -> the guard it must fail (see bench/planted.py). The one-process faults are planted
# on every host of planted_cases; the data-parallel one on two ranks (RANK_PLANTS).
PLANTED: dict[str, str] = {
    "never_learns": "overfit",
    "emits_nan": "finite",
    "nan_gradients": "finite",
    "nondeterministic": "determinism",
    "hidden_state": "resume",
    "rank_dependent": "ddp_equivalence",
}
RANK_FAULTS = ("rank_dependent",)

# Two-rank settings the ddp_equivalence guard is audited under, healthy and planted: DDP in fp32, FSDP's
# shards, and bf16 (whose tolerance is 50x fp32's: the plant must still be caught there).
RANK_SETTINGS: dict[str, dict[str, Any]] = {
    "ddp fp32": {"train.strategy": "ddp", "train.world_size": 2, "precision": "fp32"},
    "fsdp fp32": {"train.strategy": "fsdp", "train.world_size": 2, "precision": "fp32"},
    "ddp bf16": {"train.strategy": "ddp", "train.world_size": 2, "precision": "bf16"},
}


@dataclass
class GuardCase:
    label: str
    config: RunConfig
    guards: GuardsConfig
    expect_fail: str | None = None  # the guard a planted fault must fail; None: every guard must pass


def cheap(config: RunConfig, shrink: bool = False) -> RunConfig:
    """The same model, precision, optimizer and batch size on fewer samples: guards only need a few batches.
    ``shrink`` (the test suite's quick check): images also at most 64 pixels a side, and fp16 on a CPU
    (emulated there, over an order of magnitude slower than fp32) in batches of at most 16."""
    d = config.data
    over: dict[str, Any] = {"data.n_samples": max(256, 4 * d.batch_size), "data.n_test_samples": 64}
    if d.name in ("mnist", "fashion_mnist"):
        over["data.limit_train_samples"] = max(512, 4 * d.batch_size)
    if d.name == "synthetic_jpegs":
        over.update({"data.n_samples": max(64, 2 * d.batch_size), "data.n_test_samples": 16})
    if shrink and d.image_shape is not None:
        over["data.image_shape"] = [d.image_shape[0], min(64, d.image_shape[1]), min(64, d.image_shape[2])]
    if shrink and config.precision == "fp16" and resolve_device(config.device).type == "cpu":
        over["data.batch_size"] = min(16, d.batch_size)
    return validate_config(apply_overrides(config.to_dict(), over), source=f"{config.name} (cheap)")


def is_matrix(path: Path) -> bool:
    doc = yaml.safe_load(path.read_text()) or {}
    return isinstance(doc, dict) and "axes" in doc


def matrix_cases(path: Path, shrink: bool = False) -> list[GuardCase]:
    """One case per model x precision among the cells this machine can run, with the matrix's guard settings."""
    spec = load_matrix(path)
    if spec.measure.mode == "inference":  # nothing trains: its cells' guard is parity, checked in each cell
        return []
    seen: dict[tuple[str, str, str], GuardCase] = {}
    for cell in expand(spec, source=str(path)):
        c = cell.config
        ranks = f" {c.train.strategy} x{c.train.world_size}" if is_multi_rank(c) else ""
        key = (c.model.name, repr(sorted(c.model.kwargs.items())), c.precision, ranks)
        if cell.skip_reason is None and key not in seen:
            label = f"{path.name}: {c.model.name} {c.precision}{ranks}"
            seen[key] = GuardCase(label, cheap(c, shrink), spec.guards)
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
        if fault in RANK_FAULTS:
            continue
        for host, over in hosts.items():
            name = f"bench.guards.planted:{'lm_' if host == 'tokens' else ''}{fault}"
            config = validate_config(apply_overrides({"device": "cpu"}, {**over, "model.name": name}))
            for label, gcfg in (("matrix guards", GuardsConfig()), ("tune guards", QUICK_GUARDS)):
                cases.append(GuardCase(f"{fault} on {host} ({label})", config, gcfg, expect_fail=guard))
    return cases + rank_cases(planted=True)


def rank_cases(planted: bool) -> list[GuardCase]:
    """Two-rank cases of the ddp_equivalence guard on blobs, one per RANK_SETTINGS: a healthy MLP (every
    guard must pass), or (``planted``) each RANK_FAULTS model, whose ddp_equivalence must fail."""
    base = {"data.name": "synthetic_blobs", "data.n_samples": 256, "data.batch_size": 16, "optim.lr": 0.02}
    models = {f: {"model.name": f"bench.guards.planted:{f}", "model.kwargs": {"in_features": 2, "classes": 2}}
              for f in RANK_FAULTS} if planted else {"healthy": {"model.name": "SimpleMLP", "model.kwargs": {
                  "input_dim": 2, "hidden_dims": [16], "output_dim": 2, "dropout": 0.0}}}  # fmt: skip
    cases = []
    for what, model in models.items():
        for setting, over in RANK_SETTINGS.items():
            config = validate_config(apply_overrides({"device": "cpu"}, {**base, **model, **over}))
            label = f"{what} on blobs, 2 ranks ({setting})"
            cases.append(GuardCase(label, config, QUICK_GUARDS, expect_fail=PLANTED.get(what)))
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
        if data_root is None and d.name != "text":
            return None
    if d.name == "text":  # a generated text stands in for a corpus that is not on disk (the guards need words)
        folder = Path(data_root) if data_root is not None else Path(tempfile.gettempdir()) / "trainbench-guard-audit"
        over = {"data.path": str(write_sample_text(folder / "sample.txt"))}
    else:
        over = {"data.root": data_root}
    config = validate_config(apply_overrides(case.config.to_dict(), over))
    preflight_data(config.data)
    return replace(case, config=config)


def run_case(case: GuardCase, seed_offset: int = 0) -> tuple[bool, list[GuardResult]]:
    """(verdict, results) with the config's own seed plus ``seed_offset``: for a healthy case True when
    every guard passed; for a planted fault True when its guard failed (it was caught)."""
    config = validate_config(apply_overrides(case.config.to_dict(), {"seed": case.config.seed + seed_offset}))
    if is_multi_rank(config):
        try:
            results = check_guards_on_ranks(config, case.guards)
        except distributed.RanksFailed as e:  # the case's verdict, not the audit's end
            results = [
                GuardResult(name="ranks", status="error", detail=f"{e.describe()}: {' | '.join(e.last_lines[-2:])}")
            ]
    else:
        results = check_guards(config, case.guards)
    if case.expect_fail is None:
        return guards_ok(results), results
    return any(r.name == case.expect_fail and r.status == FAIL for r in results), results


def check_guards_on_ranks(config: RunConfig, settings: GuardsConfig) -> list[GuardResult]:
    """:func:`check_guards` on every rank of a data-parallel launch of ``config`` (as a data-parallel cell
    runs them); per guard, the first rank's verdict that is not a pass, else rank 0's."""
    per_rank = distributed.launch(config, guard_rank, json.dumps(config.to_dict()), settings.model_dump_json())
    verdicts = [[GuardResult.model_validate(g) for g in per_rank[r]] for r in sorted(per_rank)]
    merged = []
    for i, first in enumerate(verdicts[0]):
        merged.append(next((v[i] for v in verdicts if v[i].status != "pass"), first))
    return merged


def guard_rank(config_json: str, settings_json: str) -> list[dict[str, Any]]:
    """One rank of :func:`check_guards_on_ranks` (run by the launcher in its own process)."""
    config = validate_config(json.loads(config_json), source="guard audit rank")
    distributed.init(config, resolve_device(config.device))
    try:
        results = check_guards(config, GuardsConfig.model_validate_json(settings_json))
        distributed.barrier()  # no rank tears the group down while another is still in a collective
        return [r.model_dump(mode="json") for r in results]
    finally:
        distributed.destroy()


@dataclass
class AuditResult:
    """What an audit measured: one row per verdict, the cases it could not run (label, why), and per
    guard how many planted runs it caught of how many, and how many healthy runs it failed of how many."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    not_run: list[tuple[str, str]] = field(default_factory=list)
    caught: dict[str, list[int]] = field(default_factory=dict)  # guard -> [caught, planted runs]
    alarms: dict[str, list[int]] = field(default_factory=dict)  # guard -> [false alarms, healthy runs]

    def add(self, case: GuardCase, seed: int, good: bool, results: list[GuardResult]) -> None:
        self.rows.append({"group": "healthy" if case.expect_fail is None else "planted", "case": case.label,
                          "seed": seed, "good": good, "guards": {r.name: r.status for r in results}})  # fmt: skip
        if case.expect_fail is not None:
            tally = self.caught.setdefault(case.expect_fail, [0, 0])
            tally[0] += good
            tally[1] += 1
            return
        for r in results:
            tally = self.alarms.setdefault(r.name, [0, 0])
            tally[0] += not guards_ok([r])
            tally[1] += 1

    def unmeasured_guards(self) -> list[str]:
        """Guards with a planted fault of their own (PLANTED) that no run of this audit measured."""
        return sorted(g for g in set(PLANTED.values()) if self.caught.get(g, [0, 0])[1] == 0)

    def gaps(self, allowed: list[str]) -> list[str]:
        """What the audit could not vouch for, less what ``allowed`` names (a guard, 'healthy', or text of
        a case label): one line each."""
        lines = [
            f"guard {g}: no planted fault of it was measured" for g in self.unmeasured_guards() if g not in allowed
        ]
        if not self.alarms and "healthy" not in allowed:
            lines.append("no healthy configuration was measured, so the false-alarm rate is unknown")
        lines += [f"not run: {label}: {why}" for label, why in self.not_run if not any(a in label for a in allowed)]
        return lines


def audit_cases(configs: Path, seeds: int, only: list[str]) -> list[GuardCase]:
    """bench.guard_audit's cases: every shipped config and matrix of ``configs``, the healthy two-rank
    cases, every planted fault; with ``only``, the cases whose label contains one of its texts. Bad input
    is a ConfigError, so nothing runs."""
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: at least 1 (an audit of no runs measures nothing)")
    if not configs.is_dir() or not any(configs.glob("*.yaml")):
        raise ConfigError(f"--configs {configs}: not a folder of YAML configs")
    cases = shipped_cases(configs) + rank_cases(planted=False) + planted_cases()
    if only:
        cases = [c for c in cases if any(t in c.label for t in only)]
        if not cases:
            raise ConfigError(f"--only {' / '.join(only)}: no case label contains that")
    return cases


def audit(cases: list[GuardCase], seeds: int, data_root: str | None, say: Callable[[str], None] = print) -> AuditResult:
    """Every case (healthy: every guard must pass; planted: its guard must fail) with ``seeds`` seeds;
    ``say`` gets a line per verdict and per case that could not run."""
    out = AuditResult()
    for case in cases:
        found = with_data(case, data_root)
        if found is None:
            out.not_run.append((case.label, "its data is not on disk (see --data-root)"))
            say(f"not run: {case.label}: its data is not on disk (see --data-root)")
            continue
        for seed in range(seeds):  # offsets from the config's own seed
            t0 = time.perf_counter()
            good, results = run_case(found, seed)
            out.add(case, seed, good, results)
            bad = "; ".join(f"{r.name} {r.status}: {r.detail}" for r in results if r.status != "pass")
            healthy = case.expect_fail is None
            verdict = ("pass" if good else "FALSE ALARM") if healthy else ("caught" if good else "MISSED")
            say(
                f"{verdict:<11} {case.label} seed {seed} ({time.perf_counter() - t0:.1f} s)"
                + (f": {bad}" if bad else "")
            )
    return out
