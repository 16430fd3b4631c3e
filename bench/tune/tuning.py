"""bench.tune's work (``python -m bench.tune`` is its CLI): the levers to search for a config on this
machine, each configuration measured as an ordinary cell (own process, same measurement and guards,
appended to ``cells.jsonl``), the time budget as a plan, the coordinate search (:mod:`bench.tune.search`),
then the start and the finalists re-measured side by side in rotating rounds, each lever on its own,
and the winner written as a config bench.train runs as is.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from bench.cells.contract import OK, CellRecord, CellSpec, MeasureConfig, ProfileConfig
from bench.cells.store import append_record, read_records
from bench.cells.target import TARGET_UNIT
from bench.guards.checks import QUICK_GUARDS
from bench.launch.executor import Executor
from bench.launch.forked import SERVER_ROUNDS
from bench.launch.local import LocalExecutor
from bench.matrix import cell_id_for, lever_skip_reason, preflight_config, resolve_device_name, static_skip_reason
from bench.measure.timing import STEP_DRIVEN_OVERRIDES
from bench.paired.engine import Reading, ReadingError, Rounds, RoundsPlan, run_rounds
from bench.stats import geometric_mean
from bench.tune.levers import judged_by_finals, lever_row, levers_of, pruned_by, settle_together, without
from bench.tune.search import (
    RECHECK,
    Searcher,
    SearchResult,
    contributions,
    coordinate_search,
    finalists,
    ranked,
    values_key,
)
from bench.tune.to_target import (
    SCHEDULE_LEVER,
    Objective,
    epochs_to_reach,
    prune_target_levers,
    target_finals,
    target_space,
)
from trainer_core.config import PRECISIONS, RunConfig, apply_overrides, parse_override, read_yaml
from trainer_core.datasets import dataset_info
from trainer_core.errors import ConfigError
from trainer_core.factory import build_run
from trainer_core.loading import validate_config
from trainer_core.precision import COMPUTE_DTYPES, check_support, resolve_device
from trainer_core.provenance import environment_info

# Order matters: each lever is judged with the levers before it already set, and the budget may end
# the search before its second pass. Precision first; then the input pipeline, once compute is fast
# enough for it to show (from an fp32 start its gain can read as noise, and a lost coin flip leaves
# every later cell data-bound); memory format and batch size behind the faster pipeline (behind a slow
# one they read as noise); the malloc policy after the batch size (its gain grows with the buffers).
# Measured figures behind this order: docs/measurements.md.
AXIS_ORDER = (
    "precision",
    "data.pipeline",
    "model.memory_format",
    "data.batch_size",
    "train.malloc",
    "data.num_workers",
    "optim.fused",
    "train.compile",
)
# Judged once, on the configuration the other axes settled on (a later pass would try every other lever
# compiled); a compiled cell costs about two search trials with a cold inductor cache.
LATE_AXES = ("train.compile",)
LATE_TRIAL_COST = 2.0
TUNE_MEASURE = MeasureConfig(
    warmup_steps=5,
    max_warmup_s=8,
    settle_window=3,
    min_steps=10,
    min_time_s=1.5,
    max_time_s=4,
    repeats=2,
    cell_timeout_s=600,
)
# The side-by-side rounds decide the winner and its speedup: a little longer than a search trial, not
# much (cells of one configuration minutes apart differ more than a longer stretch would fix).
FINAL_MEASURE = TUNE_MEASURE.model_copy(update={"min_time_s": 2.0, "max_time_s": 5.0})
FINAL_COST = 1.1  # wall time of a final cell relative to a search reading of it
MIN_ROUNDS = 2  # fewer side-by-side rounds than asked when the budget is short, never fewer than this
RECHECK_BAND = 0.15  # readings closer than this are too close to call on one reading each (see bench.tune.search)


# ----------------------------------------------------------------------------------------- the space
def default_space(config: RunConfig, max_batch: int) -> dict[str, list[Any]]:
    """Levers worth trying for this config on this machine (emulated precisions are left out)."""
    device = resolve_device(config.device)
    images = dataset_info(config.data.name).kind == "image"
    space: dict[str, list[Any]] = {"data.pipeline": ["classic", "tensor"]} if images else {}
    space["precision"] = [p for p in PRECISIONS if p == config.precision or _native(p, device)]
    if images:
        space["model.memory_format"] = ["contiguous", "channels_last"]
    sizes = [2**k for k in range(5, 20) if 2**k <= max_batch]
    space["data.batch_size"] = sorted(set(sizes) | {config.data.batch_size})
    space["data.num_workers"] = sorted({0, min(2, os.cpu_count() or 1), config.data.num_workers})

    def applies(key: str, value: Any) -> bool:  # the matrix's own check, so tune and run skip alike
        return lever_skip_reason(validate_config(apply_overrides(config.to_dict(), {key: value})), device) is None

    # None (torch's default) stays the start value; a config that asks for foreach keeps it (exclusive).
    if config.optim.fused is not True and config.optim.foreach is not True and applies("optim.fused", True):
        space["optim.fused"] = [config.optim.fused, True]
    if config.train.malloc == "default" and applies("train.malloc", "retain"):
        space["train.malloc"] = ["default", "retain"]
    if applies("train.compile", "default"):
        space["train.compile"] = ["off", "default"]
    return space


def _native(precision: str, device: torch.device) -> bool:
    supported, emulated, _ = check_support(precision, device)
    return supported and not emulated


# For time to a target the input pipeline goes first: there every trial is a whole training run at its
# configuration's speed, so each lever judged behind a slow per-sample pipeline costs minutes, not seconds
# (and a run's gain from the pipeline is far beyond the noise of a short reading). The model (when the user
# allows it to change) right behind it: it changes both the cost of a step and the steps needed, so the
# schedule and learning rate are best judged on the model that stays. The schedule and the
# learning rate next: they set how many epochs a run needs, so every trial after them is that much shorter
# (judged last, the budget ran out on the throughput levers before it reached them). The scaling rule of
# the learning rate right behind the batch size it scales with.
TARGET_AXIS_ORDER = (
    "data.pipeline",
    "model.name",
    SCHEDULE_LEVER,
    "optim.lr",
    "precision",
    "model.memory_format",
    "data.batch_size",
    "optim.lr_scaling",
    "train.malloc",
    "data.num_workers",
    "optim.fused",
    "train.compile",
)
# A time-to-target trial still running after this many times the fastest run so far cannot win: stopped.
TRIAL_CAP = 2.0
TRIAL_CAP_MIN_S = 60.0


def ordered(space: dict[str, list[Any]], order: tuple[str, ...] = AXIS_ORDER) -> dict[str, list[Any]]:
    """The axes in search order: ``order`` first, any other axis after them in the order given."""
    return {k: space[k] for k in sorted(space, key=lambda k: order.index(k) if k in order else len(order))}


def parse_axes(items: list[str]) -> dict[str, list[Any]]:
    """``--axes key=v1,v2`` -> {key: [v1, v2]}; each value is read as YAML, like --set."""
    space: dict[str, list[Any]] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--axes {item!r}: expected key=value1,value2")
        key, raw = item.split("=", 1)
        space[key.strip()] = [parse_override(f"{key}={v.strip()}")[1] for v in raw.split(",")]
    return space


LINK = "+"  # an axis "a.b+c.d" is one lever setting two keys: its values are [a.b's value, c.d's value]


def overrides_of(values: dict[str, Any]) -> dict[str, Any]:
    """Dotted-key overrides of a configuration's lever values (a linked lever gives one per key)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        keys = key.split(LINK)
        out.update(zip(keys, value, strict=True) if len(keys) > 1 else {key: value})
    return out


def start_values(config: RunConfig, space: dict[str, list[Any]]) -> dict[str, Any]:
    flat = config.to_dict()

    def value_of(key: str) -> Any:
        node: Any = flat
        for part in key.split("."):
            node = node[part]
        return node

    return {key: [value_of(k) for k in key.split(LINK)] if LINK in key else value_of(key) for key in space}


@dataclass
class TuneSetup:
    """The start config and the space to search, every value already validated and pre-flighted."""

    source: str
    base: dict[str, Any]
    config: RunConfig
    space: dict[str, list[Any]]
    start: dict[str, Any]
    objective: Objective = field(default_factory=Objective)


def prepare(
    config_path: str,
    overrides: list[str],
    axes: list[str],
    max_batch: int,
    objective: Objective | None = None,
    allow_model_change: bool = False,
) -> TuneSetup:
    objective = objective or Objective()
    if allow_model_change and (axes or not objective.to_target):
        raise ConfigError(
            "--allow-model-change: only with --objective time_to_target and no --axes (a changed model is "
            "judged by time to the target; with --axes, name the models: model.name=...)"
        )
    base = apply_overrides(read_yaml(config_path), dict(parse_override(o) for o in overrides))
    config = validate_config(base, source=config_path)
    preflight_config(config, config_path)
    space = parse_axes(axes) if axes else default_space(config, max_batch)
    if objective.to_target and not axes:
        base, config, objective = target_start(base, config_path, objective)
        space = target_space(config, space, allow_model_change)
    for key, values in space.items():  # every value must give a valid, loadable config before anything runs
        for v in values:
            where = f"--axes {key}={v}"
            preflight_config(validate_config(apply_overrides(base, overrides_of({key: v})), source=where), where)
    space = ordered(space, TARGET_AXIS_ORDER if objective.to_target and not axes else AXIS_ORDER)
    return TuneSetup(config_path, base, config, space, start_values(config, space), objective)


def target_start(
    base: dict[str, Any], source: str, objective: Objective
) -> tuple[dict[str, Any], RunConfig, Objective]:
    """The start of a time-to-target search: its lr holds at its own batch (optim.reference_batch_size), and
    --max-epochs becomes its train.epochs, so each configuration's epoch budget is its own (the schedule
    lever shortens it)."""
    config = validate_config(base, source=source)
    over: dict[str, Any] = {}
    if config.optim.reference_batch_size is None:  # the start's lr was tuned at the start's batch
        over["optim.reference_batch_size"] = config.data.batch_size
    if objective.max_epochs is not None:
        over["train.epochs"] = objective.max_epochs
    base = apply_overrides(base, over)
    return base, validate_config(base, source=source), replace(objective, max_epochs=None)


# ------------------------------------------------------------------------------------- measurement
class TuneCells:
    """The search's cells: one per configuration, launched by ``executor`` (a new process each, by default),
    recorded in cells.jsonl."""

    def __init__(
        self,
        setup: TuneSetup,
        run_dir: Path,
        threads: int,
        measure: MeasureConfig = TUNE_MEASURE,
        peaks: dict[str, float] | None = None,
        executor: Executor | None = None,
    ) -> None:
        self.setup, self.run_dir, self.threads, self.measure = setup, run_dir, threads, measure
        self.peaks = peaks or {}  # matmul FLOP/s per precision on the tuned device: the MFU reference
        self.executor = executor or LocalExecutor()
        self.fastest_s: float | None = None  # time to target: wall time of the fastest search cell that reached it

    def cell_measure(self, role: str) -> MeasureConfig:
        """A time-to-target search trial is stopped (a failed cell) once it has run TRIAL_CAP times the
        fastest cell that reached the target so far: it could not win. The finals run to the end."""
        if role not in ("search", RECHECK) or self.measure.mode != "time_to_target" or self.fastest_s is None:
            return self.measure
        cap = max(TRIAL_CAP_MIN_S, TRIAL_CAP * self.fastest_s)
        return self.measure.model_copy(update={"cell_timeout_s": min(cap, self.measure.cell_timeout_s)})

    def note_fastest(self, record: CellRecord, role: str) -> None:
        ttt = record.time_to_target
        if role == "search" and ttt is not None and ttt.reached and record.cell_seconds:
            self.fastest_s = min(self.fastest_s or math.inf, record.cell_seconds)

    def resume_from(self, records: Iterable[CellRecord]) -> None:
        """An earlier run's search cells (--resume) set the bar its later trials are stopped at, as this
        run's own would: without it a resumed search's first slow trials ran to their end."""
        for record in records:
            self.note_fastest(record, record.role or "search")

    def config(self, values: dict[str, Any]) -> RunConfig:
        return validate_config(apply_overrides(self.setup.base, overrides_of(values)), source=self.setup.source)

    def cell_id(self, values: dict[str, Any], label: str | None) -> tuple[int, str]:
        """(number, id). Numbered from the file, not a counter: the search and the final rounds measure
        through separate instances (different measurement settings) into one cells.jsonl."""
        number = len(read_records(self.run_dir / "cells.jsonl")) + 1
        changed = {k: v for k, v in values.items() if v != self.setup.start.get(k)}
        what = cell_id_for(changed) if changed else "start"
        return number, f"t{number:02d}-" + (f"{RECHECK}-{what}" if label == RECHECK else (label or what))

    def __call__(self, values: dict[str, Any], label: str | None = None) -> CellRecord:
        (number, cell_id), config, role = self.cell_id(values, label), self.config(values), label or "search"
        skip = static_skip_reason(config)
        if skip:
            record = CellRecord.not_measured(
                "skipped", skip, cell_id, dict(values), precision=config.precision, role=role
            )
        else:
            spec = CellSpec(
                cell_id=cell_id,
                axes=dict(values),
                config=config.to_dict(),
                device=resolve_device_name(config.device),
                threads=self.threads,
                measure=self.cell_measure(role),
                guards=QUICK_GUARDS,
                profile=ProfileConfig(),
                peaks=self.peaks,
                role=role,
            )
            record = self.executor.submit(spec, self.run_dir / "cells")()
            self.note_fastest(record, role)
        append_record(self.run_dir / "cells.jsonl", record)
        sps = f"{record.rate:,.0f} {record.unit}" if record.rate else (record.reason or "")
        ttt = record.time_to_target
        if ttt is not None:
            sps += f", {ttt.score_s:.1f} s to target" if ttt.reached and ttt.score_s else f", {ttt.note}"
        guards = "" if record.status != OK else ("guards ok" if record.guards_ok else "GUARD FAILED")
        print(f"[{number}] {cell_id}: {record.status} {sps} {guards}", flush=True)
        return record


# ------------------------------------------------------------------------------------------ budget
@dataclass
class TunePlan:
    """The whole run's time budget. The search stops early enough to leave time for what follows it: the
    side-by-side rounds (the start and each finalist at what their own cells cost so far, an average
    trial for a finalist not yet known) and the per-lever cells the search has not measured."""

    budget_s: float
    start: dict[str, Any]
    space: dict[str, list[Any]]
    finalists: int
    rounds: int
    # Time to target: no lever is measured alone from the start (each would be a whole run; see conclude).
    to_target: bool = False
    t0: float = field(default_factory=time.monotonic)

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def round_s(self, searcher: Searcher, candidates: list[dict[str, Any]]) -> float:
        missing = max(0, self.finalists - len(candidates))
        return FINAL_COST * (
            searcher.cost(self.start)
            + sum(searcher.cost(c) for c in candidates)
            + missing * (searcher.trial_seconds or 0.0)
        )

    def after_search_s(self, searcher: Searcher, rounds: int) -> float:
        top = ranked(searcher.trials, searcher.score, self.start, self.finalists)
        finals = rounds * self.round_s(searcher, top)
        return finals + self.alone_s(searcher, top) + self.pruning_s(searcher, top, rounds)

    def alone_s(self, searcher: Searcher, top: list[dict[str, Any]]) -> float:
        """The start with each lever of the leader alone, where the search did not measure it (time to
        target measures none: each would be a whole training run of the start)."""
        if self.to_target:
            return 0.0
        if not top:
            return max(0, len(self.space) - 1) * (searcher.trial_seconds or 0.0)
        leader = top[0]
        missing = [a for a in levers_of(self.start, leader) if not searcher.measured({**self.start, a: leader[a]})]
        return len(missing) * (searcher.trial_seconds or 0.0)

    def pruning_s(self, searcher: Searcher, top: list[dict[str, Any]], rounds: int) -> float:
        """The leader beside itself without each of its levers (when it has more than one), then beside
        itself without all those that alone cost nothing. A cell one lever away from the leader is costed as
        the leader's own cells, not the search's average trial: for time to target that average carries the
        slow first trials, and it stopped a search at a quarter of its budget."""
        levers = levers_of(self.start, top[0]) if top else []
        if len(levers) < 2:
            return 0.0
        leader = top[0]
        near = searcher.cost(leader)
        cells = near + sum(_known(searcher.timed({**leader, a: self.start[a]}), near) for a in levers)
        cells += near + (near + searcher.cost(self.start)) / 2  # the leader without several: between it and the start
        return rounds * FINAL_COST * cells

    def reserve_s(self, searcher: Searcher) -> float:
        return self.after_search_s(searcher, self.rounds)

    def rounds_that_fit(self, searcher: Searcher) -> int:
        """Estimates run short (a cell's cost drifts with the machine's load): rather than overrun the
        budget, take fewer rounds, down to MIN_ROUNDS (a speedup needs pairs to have an interval)."""
        return rounds_that_fit(self.rounds, self.elapsed(), self.budget_s, lambda n: self.after_search_s(searcher, n))


def _known(value: float | None, default: float) -> float:
    return default if value is None else value


def rounds_that_fit(asked: int, spent_s: float, budget_s: float, cost_s: Any) -> int:
    """The most rounds, up to ``asked``, whose cost (with what follows them) fits the budget; at least MIN_ROUNDS."""
    rounds = asked
    while rounds > MIN_ROUNDS and spent_s + cost_s(rounds) > budget_s:
        rounds -= 1
    return rounds


# --------------------------------------------------------------------------------- search & finals
def open_tune_dir(out: Path, setup: TuneSetup, resume: str | None) -> tuple[Path, int, dict[str, float]]:
    """(run folder, threads, matmul peaks per precision): a new ``tune-<name>-<time>`` folder, or the one
    ``resume`` names; env.json written (a resumed run keeps the peaks it measured, so MFU stays comparable)."""
    if resume:
        run_dir = out / resume
        if not (run_dir / "cells.jsonl").exists():
            raise ConfigError(f"--resume {resume}: no tune run at {run_dir}")
    else:
        run_dir = out / f"tune-{setup.config.name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
        run_dir.mkdir(parents=True)
    threads = torch.get_num_threads()
    old = json.loads((run_dir / "env.json").read_text()) if (run_dir / "env.json").exists() else {}
    peaks = old.get("peaks") or tune_peaks(setup)
    env = {
        **environment_info(),
        "command": sys.argv,
        "config": setup.source,
        "space": setup.space,
        "threads": threads,
        "peaks": peaks,
    }
    (run_dir / "env.json").write_text(json.dumps(env, indent=2, default=str) + "\n")
    return run_dir, threads, peaks


def tune_peaks(setup: TuneSetup) -> dict[str, float]:
    """Matmul FLOP/s on the tuned device for each precision the search may measure."""
    from bench.measure.timing import matmul_peak_flops

    device = resolve_device(setup.config.device)
    precisions = sorted({setup.config.precision, *setup.space.get("precision", [])})
    return {p: matmul_peak_flops(device, COMPUTE_DTYPES[p])["flops_per_s"] for p in precisions}


def default_mem_cap_mb() -> float:
    """Half the machine's memory: larger batches are not tried once a cell's peak exceeds it."""
    from bench.measure.memory import machine_memory_mb

    return machine_memory_mb() * 0.5


def search(setup: TuneSetup, measure: TuneCells, plan: TunePlan, mem_cap_mb: float) -> tuple[Searcher, SearchResult]:
    """The coordinate search; configurations an earlier run of this folder measured are reused."""
    records = read_records(measure.run_dir / "cells.jsonl")
    known = {values_key(r.axes): r for r in records if (r.role or "search") == "search"}
    rechecks = {values_key(r.axes): r for r in records if r.role == RECHECK}
    measure.resume_from(known.values())
    searcher = Searcher(
        measure,
        plan.budget_s - plan.elapsed(),
        known=known,
        reserve_s=plan.reserve_s,
        known_rechecks=rechecks,
        value=setup.objective.value,
    )
    result = coordinate_search(
        setup.start,
        setup.space,
        searcher,
        mem_cap_mb=mem_cap_mb,
        recheck_band=RECHECK_BAND,
        late_axes=LATE_AXES,
        late_trial_cost=LATE_TRIAL_COST,
        same=lambda a, b: trained_as(measure.config(a)) == trained_as(measure.config(b)),
    )
    if setup.objective.value(result.start_record) is None:
        raise ConfigError(
            f"{setup.source}: the starting configuration {why_unusable(result.start_record)}; "
            "nothing to compare against"
        )
    return searcher, result


def trained_as(config: RunConfig) -> dict[str, Any]:
    """What a run trains: its config with the lr and warm-up its batch scales them to, the scaling rule
    left out (a rule that scales by 1 changes nothing)."""
    scaled, out = config.scaled_optim(), config.to_dict()
    out["optim"].update(lr=scaled.lr, warmup_steps=scaled.warmup_steps, lr_scaling="none", reference_batch_size=None)
    return out


class FinalsSubject:
    """The side-by-side finals as the paired-rounds engine reads them: arm ``start``, ``f1``, ... one cell
    each per round (guards on every reading: a finalist that breaks one is out)."""

    def __init__(self, cells: TuneCells, configs: dict[str, dict[str, Any]]) -> None:
        self.cells, self.configs = cells, configs
        self.flops: dict[str, float] = {}  # analytic FLOPs per step, where the workload has a formula

    def read(self, arm: str, label: str, first: bool) -> dict[str, Reading]:
        rec = self.cells(self.configs[arm], label=f"final-{arm}-{label}")
        if rec.flops_analytic_per_step:
            self.flops[arm] = float(rec.flops_analytic_per_step)
        failed = None if rec.usable else f"{arm}: {why_unusable(rec)}"
        return {"cell": Reading(list(rec.step_s or []), float(rec.items_per_step or 1.0), rec.unit, failed)}

    def start_round(self, r: int) -> None:
        if r > 0 and r % SERVER_ROUNDS == 0:
            self.cells.executor.close()

    def close(self) -> None:
        self.cells.executor.close()


def paired_cells(
    cells: TuneCells, configs: dict[str, dict[str, Any]], rounds: int, what: str
) -> tuple[Rounds, FinalsSubject]:
    """The configurations (first: the one the others are judged against, never dropped) measured side by
    side for ``rounds`` rounds by the paired-rounds engine; any other arm that fails is dropped."""
    names = list(configs)
    subject = FinalsSubject(cells, configs)
    try:
        return run_rounds(subject, names, RoundsPlan.fixed(rounds), droppable=names[1:]), subject
    except ReadingError as e:
        raise ConfigError(f"{what} failed: {e}") from None
    finally:
        subject.close()


def side_by_side(
    cells: TuneCells, start: dict[str, Any], candidates: list[dict[str, Any]], rounds: int
) -> dict[str, Any]:
    """Start and each finalist re-measured in rotating order for ``rounds`` rounds (the paired-rounds engine:
    a stalled round is taken again, a finalist that fails is out); the winner is the finalist with the best
    pooled throughput; its speedup over the start is the engine's paired ratio and 95% interval."""
    names = ["start"] + [f"f{i + 1}" for i in range(len(candidates))]
    configs = dict(zip(names, [start, *candidates]))
    done, subject = paired_cells(cells, configs, rounds, "final re-measurement of the start configuration")

    def throughput(name: str) -> float:  # items (samples or tokens) per second at the pooled median step
        steps = [s for rd in done.taken if name in rd for s in rd[name]["cell"].steps]
        return done.taken[0][name]["cell"].items_per_step / float(np.median(steps)) if steps else 0.0

    def mfu(name: str) -> float | None:  # analytic FLOP/s at the pooled median step, % of the matmul peak
        peak = cells.peaks.get(cells.config(configs[name]).precision)
        rate = throughput(name)
        if not (rate and subject.flops.get(name) and peak):
            return None
        return 100.0 * subject.flops[name] * rate / done.taken[0][name]["cell"].items_per_step / peak

    finals = [{"values": configs[n], "samples_per_s": throughput(n), "mfu_pct": mfu(n)} for n in names]
    start_rounds = [rd["start"]["cell"].rate for rd in done.taken]
    live = [n for n in done.live() if n != "start"]
    common = {"rounds": rounds, "finalists": finals, "start_samples_per_s_per_round": start_rounds}
    common["retaken"] = [{"round": x.round, "why": x.why} for x in done.retaken]
    if not live:
        note = "every finalist failed or broke a guard when re-measured: the start stands"
        return {"winner": start, "speedup": 1.0, "ci_low": 1.0, "ci_high": 1.0, "speedup_per_round": [], **common,
                "note": note}  # fmt: skip
    best = max(live, key=throughput)
    paired = done.compare("start", best, RoundsPlan().min_effect_pct)["cell"]
    return {
        "winner": configs[best],
        "speedup": paired.ratio,
        "ci_low": paired.ci_low,
        "ci_high": paired.ci_high,
        "verdict": paired.verdict.value,
        "speedup_per_round": paired.per_round,
        **common,
    }


def prune_levers(
    cells: TuneCells, start: dict[str, Any], winner: dict[str, Any], rounds: int, final: dict[str, Any] | None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Every lever of the winner must pay (:mod:`bench.tune.levers`): each one taken out on its own (set
    back to the start's value) and measured side by side with the winner in rotating rounds. A lever whose
    removal is not slower (the paired interval of without/with reaches 1) is dropped; one whose removal
    breaks a guard stays. One lever alone: the finals already compared the winner with the start."""
    levers = levers_of(start, winner)
    if len(levers) < 2:
        return judged_by_finals(levers[0], start, winner, final) if levers else (winner, [])
    configs = {"winner": winner, **{f"no-{k}": without(winner, start, k) for k in levers}}
    done, _ = paired_cells(cells, configs, rounds, "re-measuring the winner")
    rows = [lever_row(k, paired_ratio(done, f"no-{k}"), done.dropped.get(f"no-{k}", "")) for k in levers]
    pruned = pruned_by(start, winner, rows)
    if sum(not r["kept"] for r in rows) < 2:
        return pruned, rows
    done, _ = paired_cells(cells, {"winner": winner, "pruned": pruned}, rounds, "re-measuring the winner")
    return settle_together(winner, pruned, rows, paired_ratio(done, "pruned"), done.dropped.get("pruned", ""))


def paired_ratio(done: Rounds, arm: str) -> tuple[float, float, float] | None:
    """``arm``'s throughput over the winner's with its paired interval; None when the arm was dropped."""
    if arm in done.dropped:
        return None
    r = done.compare("winner", arm, RoundsPlan().min_effect_pct)["cell"]
    return (r.ratio, r.ci_low, r.ci_high)


def train_for_seconds(config: RunConfig, seconds: float) -> dict[str, Any]:
    """Train for a fixed wall time (the batch loop's time), then validate: same-time accuracy."""
    config = validate_config(apply_overrides(config.to_dict(), STEP_DRIVEN_OVERRIDES))
    run = build_run(config)
    while run.trainer.counters["train_seconds"] < seconds:
        run.trainer.fit(run.data.train_loader, None, stop_after_steps=20)
    val = run.trainer.evaluate(run.data.val_loader or run.data.test_loader)
    return {
        "train_seconds": run.trainer.counters["train_seconds"],
        "steps": run.trainer.global_step,
        "samples": int(run.trainer.counters["samples_seen"]),
        "val_accuracy": val["accuracy"],
        "val_loss": val["loss"],
    }


def why_unusable(record: CellRecord) -> str:
    """One line: why a cell record cannot be a tune start (failed, which guards did not pass, or the target
    not reached)."""
    if record.status != OK:
        return f"{record.status}: {record.reason}"
    bad = [f"{name}: {record.guards[name].detail}" for name in record.failed_guards()]
    if bad:
        return "did not pass its guards (" + "; ".join(bad) + ")"
    ttt = record.time_to_target
    return f"did not reach the target ({ttt.note})" if ttt is not None and not ttt.reached else "measured no throughput"


def brief(values: dict[str, Any], record: CellRecord) -> dict[str, Any]:
    """What tune.json keeps of one measured cell (the full record is in cells.jsonl)."""
    return {
        "values": values,
        "cell_id": record.cell_id,
        "status": record.status,
        "reason": record.reason,
        "samples_per_s": record.rate,
        "unit": record.unit,
        "mfu_pct": record.mfu_pct,
        "guards_ok": record.guards_ok,
    }


def throughput_finals(
    setup: TuneSetup, measure: TuneCells, candidates: list[dict[str, Any]], rounds: int, asked: int
) -> tuple[dict[str, Any] | None, dict[str, Any], list[dict[str, Any]]]:
    """(finals, winner, pruning rows) by samples/s: the paired rounds, then every lever made to pay."""
    final_measure = TuneCells(setup, measure.run_dir, measure.threads, FINAL_MEASURE, measure.peaks, measure.executor)
    final = side_by_side(final_measure, setup.start, candidates, rounds) if candidates else None
    winner = setup.start
    if final:
        final["rounds_asked"] = asked
        winner = final["winner"] if final["ci_high"] >= 1.0 else setup.start  # every finalist slower: the start stands
    winner, pruning = prune_levers(final_measure, setup.start, winner, rounds, final)
    return final, winner, pruning


def to_target_finals(
    setup: TuneSetup, measure: TuneCells, candidates: list[dict[str, Any]], runs: int
) -> tuple[dict[str, Any] | None, dict[str, Any], list[dict[str, Any]]]:
    """(finals, winner, pruning rows) by time to the target: ``runs`` seeded runs of each, side by side."""
    one_run = setup.objective.measure(TUNE_MEASURE, runs=1)
    cells = TuneCells(setup, measure.run_dir, measure.threads, one_run, measure.peaks, measure.executor)
    objective = replace(setup.objective, runs=runs)
    final = target_finals(cells, objective, setup.start, candidates) if candidates else None
    if final:
        final["runs_asked"] = setup.objective.runs
    winner = final["winner"] if final else setup.start
    winner, pruning = prune_target_levers(cells, objective, setup.start, winner, final or {})
    return final, winner, pruning


def write_winner(setup: TuneSetup, measure: TuneCells, winner: dict[str, Any], final: dict[str, Any] | None) -> Path:
    """winner.yaml, a config bench.train runs as is; tuned for time to target, it trains for the whole
    epochs in which the winner's final runs all reached the target."""
    config = measure.config(winner).to_dict()
    # A schedule sized by the epochs (cosine, one-cycle) keeps its length: cut short, it would anneal sooner.
    if setup.objective.to_target and config["optim"]["scheduler"] not in ("cosine", "onecycle"):
        config["train"]["epochs"] = epochs_to_reach(final, winner) or config["train"]["epochs"]
    path = measure.run_dir / "winner.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def conclude(
    setup: TuneSetup, measure: TuneCells, searcher: Searcher, result: SearchResult, plan: TunePlan
) -> dict[str, Any]:
    """Finals side by side (rounds cut to fit the budget), the winner, each lever on its own against every
    reading of the start, and winner.yaml: the tune result as tune.json keeps it."""
    search_seconds = plan.elapsed()
    candidates = finalists(result, k=plan.finalists)
    rounds = plan.rounds_that_fit(searcher)
    if setup.objective.to_target:
        final, winner, pruning = to_target_finals(setup, measure, candidates, rounds)
        start_samples = searcher.readings(setup.start)
    else:
        final, winner, pruning = throughput_finals(setup, measure, candidates, rounds, plan.rounds)
        # Against every reading of the start (search and final rounds), not its first one: the contribution
        # cells are measured last, minutes after the search's start reading.
        start_samples = searcher.readings(setup.start) + (final["start_samples_per_s_per_round"] if final else [])
    start_sps = geometric_mean(start_samples)
    winner_yaml = write_winner(setup, measure, winner, final)
    return {
        "config": setup.source,
        "objective": setup.objective.name,
        "search_runs": setup.objective.search_runs,
        "target": setup.objective.target.model_dump() if setup.objective.target else None,
        "unit": TARGET_UNIT if setup.objective.to_target else result.start_record.unit,
        "space": setup.space,
        "start": setup.start,
        "winner": winner,
        "search_best": result.winner,
        "trials": [
            {**brief(v, r), "readings": result.readings.get(values_key(v), []), "score": result.score(v)}
            for v, r in result.trials
        ],
        "recheck_band": RECHECK_BAND,
        "rechecks": [brief(v, r) for v, r in result.rechecks],
        "budget_exhausted": result.budget_exhausted,
        "passes": result.passes,
        "search_seconds": search_seconds,
        "contributions": contributions(
            setup.start, winner, searcher, start_sps=start_sps, measure_missing=not setup.objective.to_target
        ),
        "final": final,
        "pruning": pruning,
        "winner_yaml": str(winner_yaml),
        "start_samples_per_s": start_sps,
        "start_readings": len(start_samples),
    }
