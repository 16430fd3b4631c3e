"""``python -m bench.tune --config FILE``: search for the fastest correct configuration on this machine.

Every tried configuration is an ordinary matrix cell (own process, same measurement and guards,
appended to ``results/<run-id>/cells.jsonl``), so a tune run can be compared with ``bench.compare``
and continued with ``--resume``. After the coordinate search (:mod:`bench.search`) the start and the
winner are re-measured side by side in alternating rounds, and the speedup gets a bootstrap 95%
interval. Outputs: ``winner.yaml`` (a config ``bench.train`` runs as is), ``tune.md``, ``tune.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from bench._cli import make_parser, run_cli
from bench.compare import bootstrap_ratio_rounds
from bench.matrix import (Cell, MatrixSpec, MeasureConfig, ProfileConfig, cell_id_for, lever_skip_reason,
                          preflight_config, static_skip_reason)
from bench.guards import QUICK_GUARDS
from bench.measure import STEP_DRIVEN_OVERRIDES
from bench.run import append_record, launch_cell, read_records, skipped_record
from bench.search import (RECHECK, Searcher, contributions, coordinate_search, finalists, pooled, ranked, usable,
                          values_key)
from trainer_core.config import PRECISIONS, RunConfig, apply_overrides, parse_override, read_yaml, validate_config
from trainer_core.errors import ConfigError
from trainer_core.factory import build_run
from trainer_core.precision import check_support, resolve_device
from trainer_core.provenance import environment_info

# Order matters: each lever is judged with the levers before it already set, and the budget may end
# the search before its second pass. Precision first; then the input pipeline, once compute is fast
# enough for it to show: from the fp32 start the tensor pipeline read 0.93-1.06x of the classic one
# (a coin flip that, lost, left every later cell data-bound: a 1.91x winner), after bf16 it read
# 1.4x. Memory format and batch size behind the faster pipeline: behind the classic one they read as
# noise (bf16 channels_last 1,877 vs bf16 1,915 samples/s; batch 512 "best"; a run whose budget left
# no second pass kept contiguous and won 2.40x), behind the tensor pipeline channels_last gave ~1.2x
# and batch 128-256 beat 512 (in-process probe). The malloc policy after the batch size: its gain
# grows with the buffers (see trainer_core.host_memory).
AXIS_ORDER = ("precision", "data.pipeline", "model.memory_format", "data.batch_size", "train.malloc", "data.num_workers",
              "optim.fused", "train.compile")
# Judged once, on the configuration the other axes settled on (bench.search: a later pass would try
# every other lever compiled). A compiled cell cost about two search trials here with a cold inductor
# cache (27 s vs 13 s); ~1.3 once its on-disk cache was warm (13 s vs 10 s).
LATE_AXES = ("train.compile",)
LATE_TRIAL_COST = 2.0
TUNE_MEASURE = MeasureConfig(warmup_steps=5, max_warmup_s=8, settle_window=3, min_steps=10, min_time_s=1.5,
                             max_time_s=4, repeats=2, cell_timeout_s=600)
# The side-by-side rounds decide the winner and its speedup. A little longer than a search trial; not
# much: two cells of one configuration a minute apart differ far more (up to ~20%) than a longer timed
# stretch would fix, so time goes to rounds (pairs close in time) rather than to longer cells.
FINAL_MEASURE = TUNE_MEASURE.model_copy(update={"min_time_s": 2.0, "max_time_s": 5.0})
FINAL_COST = 1.1  # wall time of a final cell relative to a search reading of it (measured here: ~11 s vs ~10 s)
MIN_ROUNDS = 2  # fewer side-by-side rounds than asked when the budget is short, never fewer than this
# Two readings of one configuration differ by up to ~15% here (see bench.search): closer calls get a second reading.
RECHECK_BAND = 0.15


def default_space(config: RunConfig, max_batch: int) -> dict[str, list[Any]]:
    """Levers worth trying for this config on this machine (emulated precisions are left out)."""
    device = resolve_device(config.device)
    space: dict[str, list[Any]] = {}
    images = config.data.name in ("synthetic_images", "mnist", "fashion_mnist")
    if images:
        space["data.pipeline"] = ["classic", "tensor"]
    space["precision"] = []
    for p in PRECISIONS:
        supported, emulated, _ = check_support(p, device)
        if p == config.precision or (supported and not emulated):
            space["precision"].append(p)
    if images:
        space["model.memory_format"] = ["contiguous", "channels_last"]
    sizes, b = [], 32
    while b <= max_batch:
        sizes.append(b)
        b *= 2
    space["data.batch_size"] = sorted(set(sizes) | {config.data.batch_size})
    space["data.num_workers"] = sorted({0, min(2, os.cpu_count() or 1), config.data.num_workers})
    # One kernel for the whole optimizer step instead of a Python loop over parameters: measured 2.2 ->
    # 1.1 ms per Adam step for SimpleCNN here. None (torch's default) stays the start value; a config
    # that asks for foreach keeps it (the two are exclusive).
    def applies(key: str, value: Any) -> bool:  # the matrix's own check, so tune and run skip alike
        return lever_skip_reason(validate_config(apply_overrides(config.to_dict(), {key: value})), device) is None

    if config.optim.fused is not True and config.optim.foreach is not True and applies("optim.fused", True):
        space["optim.fused"] = [config.optim.fused, True]
    if config.train.malloc == "default" and applies("train.malloc", "retain"):
        space["train.malloc"] = ["default", "retain"]
    if applies("train.compile", "default"):
        space["train.compile"] = ["off", "default"]
    return space


def ordered(space: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """The axes in search order: AXIS_ORDER first, any other axis after them in the order given."""
    return {k: space[k] for k in sorted(space, key=lambda k: AXIS_ORDER.index(k) if k in AXIS_ORDER else len(AXIS_ORDER))}


def parse_axes(items: list[str]) -> dict[str, list[Any]]:
    """``--axes key=v1,v2`` -> {key: [v1, v2]}; each value is read as YAML, like --set."""
    space: dict[str, list[Any]] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--axes {item!r}: expected key=value1,value2")
        key, raw = item.split("=", 1)
        space[key.strip()] = [parse_override(f"{key}={v.strip()}")[1] for v in raw.split(",")]
    return space


def start_values(config: RunConfig, space: dict[str, list[Any]]) -> dict[str, Any]:
    flat = config.to_dict()
    out = {}
    for key in space:
        node: Any = flat
        for part in key.split("."):
            node = node[part]
        out[key] = node
    return out


class CellMeasure:
    """The search's measurement: one matrix cell per configuration, recorded in cells.jsonl."""

    def __init__(self, base: dict[str, Any], run_dir: Path, start: dict[str, Any], threads: int, source: str,
                 measure: MeasureConfig = TUNE_MEASURE) -> None:
        self.base = base
        self.run_dir = run_dir
        self.start = start
        self.threads = threads
        self.source = source
        self.spec = MatrixSpec(name="tune", base=base, axes={"precision": ["fp32"]}, measure=measure,
                               guards=QUICK_GUARDS, profile=ProfileConfig(enabled=False))

    def config(self, values: dict[str, Any]) -> RunConfig:
        return validate_config(apply_overrides(self.base, values), source=self.source)

    def __call__(self, values: dict[str, Any], label: str | None = None) -> dict[str, Any]:
        config = self.config(values)
        changed = {k: v for k, v in values.items() if v != self.start.get(k)}
        # Numbered from the file, not a counter: the search and the final rounds measure through
        # separate instances (different measurement settings) into one cells.jsonl.
        number = len(read_records(self.run_dir / "cells.jsonl")) + 1
        what = cell_id_for(changed) if changed else "start"
        name = f"{RECHECK}-{what}" if label == RECHECK else (label or what)
        cell = Cell(f"t{number:02d}-{name}", dict(values), config, static_skip_reason(config))
        record = skipped_record(cell) if cell.skip_reason else launch_cell(
            cell, self.spec, self.run_dir, self.threads, {}, self.run_dir / "traces" / cell.cell_id)
        record["role"] = label or "search"
        append_record(self.run_dir / "cells.jsonl", record)
        sps = f"{record['samples_per_s']:,.0f} samples/s" if record.get("samples_per_s") else (record.get("reason") or "")
        guards = "" if record.get("status") != "ok" else ("guards ok" if record.get("guards_ok") else "GUARD FAILED")
        print(f"[{number}] {cell.cell_id}: {record['status']} {sps} {guards}", flush=True)
        return record


def side_by_side(measure: CellMeasure, start: dict[str, Any], candidates: list[dict[str, Any]], rounds: int) -> dict[str, Any]:
    """Start and each finalist re-measured in rotating order for ``rounds`` rounds; the winner is the
    finalist with the best pooled median step; its speedup over the start gets a 95% CI from a
    bootstrap over rounds and steps (so the machine's drift between rounds widens it)."""
    names = ["start"] + [f"f{i + 1}" for i in range(len(candidates))]
    configs = dict(zip(names, [start, *candidates]))
    steps: dict[str, list[list[float]]] = {n: [] for n in names}  # per round: that cell's step times
    dropped: set[str] = set()  # a finalist that fails or breaks a guard on re-measurement is out
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]  # rotate so no one always goes first
        for name in order:
            if name in dropped:
                continue
            rec = measure(configs[name], label=f"final-{name}-r{r}")
            if rec.get("status") == "ok" and rec.get("guards_ok"):
                steps[name].append(rec["step_s"])
            elif name == "start":
                raise ConfigError(f"final re-measurement of the start configuration failed: {rec.get('reason') or rec.get('guards')}")
            else:
                dropped.add(name)

    def throughput(name: str) -> float:
        if name in dropped or not steps[name]:
            return 0.0
        return configs[name].get("data.batch_size", 1) / float(np.median(np.concatenate(steps[name])))

    finals = [{"values": configs[n], "samples_per_s": throughput(n)} for n in names]
    start_rounds = [start.get("data.batch_size", 1) / float(np.median(s)) for s in steps["start"]]
    best = max(names[1:], key=throughput) if len(names) > 1 else "start"
    if best == "start" or best in dropped:
        return {"winner": start, "speedup": 1.0, "ci_low": 1.0, "ci_high": 1.0, "rounds": rounds, "speedup_per_round": [],
                "finalists": finals, "start_samples_per_s_per_round": start_rounds,
                "note": "every finalist failed or broke a guard when re-measured: the start stands"}
    winner = configs[best]
    bs_ratio = winner.get("data.batch_size", 1) / start.get("data.batch_size", 1)
    ratio, lo, hi = bootstrap_ratio_rounds(steps["start"], steps[best])
    per_round = [float(np.median(a) / np.median(b)) * bs_ratio for a, b in zip(steps["start"], steps[best])]
    return {"winner": winner, "speedup": ratio * bs_ratio, "ci_low": lo * bs_ratio, "ci_high": hi * bs_ratio,
            "rounds": rounds, "speedup_per_round": per_round, "finalists": finals, "start_samples_per_s_per_round": start_rounds}


def rounds_that_fit(asked: int, spent_s: float, budget_s: float, cost_s: Callable[[int], float]) -> int:
    """The most side-by-side rounds, up to ``asked``, whose cost (with what follows them) still fits
    the budget; never fewer than MIN_ROUNDS (a speedup needs pairs to have an interval)."""
    rounds = asked
    while rounds > MIN_ROUNDS and spent_s + cost_s(rounds) > budget_s:
        rounds -= 1
    return rounds


def train_for_seconds(config: RunConfig, seconds: float) -> dict[str, Any]:
    """Train for a fixed wall time (the batch loop's time), then validate: same-time accuracy."""
    config = validate_config(apply_overrides(config.to_dict(), STEP_DRIVEN_OVERRIDES))
    run = build_run(config)
    while run.trainer.counters["train_seconds"] < seconds:
        run.trainer.fit(run.data.train_loader, None, stop_after_steps=20)
    loader = run.data.val_loader or run.data.test_loader
    val = run.trainer.evaluate(loader)
    return {"train_seconds": run.trainer.counters["train_seconds"], "steps": run.trainer.global_step,
            "samples": int(run.trainer.counters["samples_seen"]), "val_accuracy": val["accuracy"], "val_loss": val["loss"]}


def why_unusable(record: dict[str, Any]) -> str:
    """One line: why a cell record cannot be a tune start (failed, or which guards did not pass)."""
    if record.get("status") != "ok":
        return f"{record.get('status')}: {record.get('reason')}"
    bad = [f"{name}: {g.get('detail')}" for name, g in (record.get("guards") or {}).items() if g.get("status") not in ("pass", "nondeterministic")]
    return "did not pass its guards (" + "; ".join(bad) + ")" if bad else "measured no throughput"


def brief(values: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """What tune.json keeps of one measured cell (the full record is in cells.jsonl)."""
    return {"values": values, **{k: record.get(k) for k in ("cell_id", "status", "reason", "samples_per_s", "guards_ok")}}


def format_report(result: dict[str, Any]) -> str:
    start, winner = result["start"], result["winner"]
    rechecked = result.get("rechecks") or []
    lines = [f"# bench.tune: {result['config']}", "",
             f"{len(result['trials'])} configurations tried in {result['search_seconds']:.0f} s"
             + (" (time budget reached)" if result["budget_exhausted"] else "")
             + (f"; {len(rechecked)} readings taken again for close calls (within {result['recheck_band']:.0%}), "
                "where samples/s is the geometric mean of the two readings" if rechecked else "") + ".", "",
             "| configuration (changes from start) | status | samples/s | readings | guards |", "|---|---|---:|---|---|"]
    for t in result["trials"]:
        changes = ", ".join(f"{k}={v}" for k, v in t["values"].items() if v != start.get(k)) or "(start)"
        readings = t.get("readings") or []
        sps = f"{t['score']:,.0f}" if t.get("score") else (f"{t['samples_per_s']:,.0f}" if t.get("samples_per_s") else "")
        both = " / ".join(f"{x:,.0f}" for x in readings) if len(readings) > 1 else ""
        g = "" if t["status"] != "ok" else ("ok" if t.get("guards_ok") else "FAILED")
        if g == "ok" and not t.get("score"):  # a passing first reading scores 0 only when its second one failed
            g += " (second reading FAILED)"
        lines.append(f"| {changes} | {t['status']}{': ' + t['reason'] if t.get('reason') and t['status'] != 'ok' else ''} | {sps} | {both} | {g} |")
    unmeasured = len(result["trials"]) < 2
    changes = ", ".join(f"{k}: {start.get(k)} -> {v}" for k, v in winner.items() if v != start.get(k)) or (
        "none: the budget ran out before any other configuration was measured (raise --budget-s)" if unmeasured
        else "none (the start is fastest)")
    lines += ["", f"**Winner**: {changes}"]
    f = result.get("final")
    if f:
        short = (f"; {f['rounds']} of the {f['rounds_asked']} asked for: no time left in the budget for more"
                 if f.get("rounds_asked", f["rounds"]) > f["rounds"] else "")
        lines += ["", f"Finalists re-measured side by side with the start ({f['rounds']} rounds, rotating order{short}):", "",
                  "| configuration | samples/s (pooled median) |", "|---|---:|"]
        for fin in f["finalists"]:
            ch = ", ".join(f"{k}={v}" for k, v in fin["values"].items() if v != start.get(k)) or "(start)"
            lines.append(f"| {ch} | {fin['samples_per_s']:,.0f} |")
        lines += ["", f"**Speedup of the winner over the start, side by side**: "
                  f"{f['speedup']:.2f}x (95% CI {f['ci_low']:.2f}-{f['ci_high']:.2f}, bootstrap over rounds and steps)"]
        if f.get("speedup_per_round"):
            lines += ["", "Round by round: " + ", ".join(f"{x:.2f}x" for x in f["speedup_per_round"])]
        if f.get("note"):
            lines += ["", f["note"]]
    if result["contributions"]:
        lines += ["", "What each lever gives on its own (start + that one change; one reading each, against the start's "
                  f"samples/s pooled over its {result.get('start_readings', 1)} readings):", "",
                  "| lever | from | to | speedup | guards |", "|---|---|---|---:|---|"]
        for c in result["contributions"]:
            sp = f"{c['speedup']:.2f}x" if c["speedup"] is not None else c["status"]
            lines.append(f"| {c['axis']} | {c['from']} | {c['to']} | {sp} | {'ok' if c['guards_ok'] else '-'} |")
    if winner.get("data.batch_size") != start.get("data.batch_size"):
        lines += ["", f"Note: the batch size changed ({start.get('data.batch_size')} -> {winner.get('data.batch_size')}). "
                  "That changes the optimisation (fewer, larger steps per epoch; the learning rate may need scaling): "
                  "check accuracy with --check-accuracy before adopting it."]
    acc = result.get("accuracy")
    if acc:
        lines += ["", f"Same wall time ({acc['seconds']:.0f} s of training each), validation accuracy: "
                  f"start {acc['start']['val_accuracy']:.4f} ({acc['start']['samples']:,} samples), "
                  f"winner {acc['winner']['val_accuracy']:.4f} ({acc['winner']['samples']:,} samples)"]
    lines += ["", f"Winning config: `{result['winner_yaml']}` (python -m bench.train --config {result['winner_yaml']})"]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("bench.tune", "Search for the fastest guard-passing configuration.")
    p.add_argument("--config", required=True, help="starting training config (YAML)")
    p.add_argument("--budget-s", type=float, default=540.0,
                   help="time budget of the whole run: the search stops early enough to leave time for the "
                        "side-by-side rounds and the per-lever table (default 540 s; --check-accuracy comes on top)")
    p.add_argument("--axes", action="append", default=[], metavar="KEY=V1,V2",
                   help="search only these axes and values (repeatable), e.g. --axes precision=fp32,bf16")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override the start config")
    p.add_argument("--max-batch", type=int, default=512, help="largest batch size tried (powers of two)")
    p.add_argument("--mem-cap-mb", type=float, help="do not try larger batches once peak memory exceeds this")
    p.add_argument("--finalists", type=int, default=2, help="fastest search results re-measured side by side with the start")
    p.add_argument("--rounds", type=int, default=4,
                   help=f"side-by-side rounds for the final comparison (fewer, down to {MIN_ROUNDS}, when the budget is short)")
    p.add_argument("--check-accuracy", action="store_true", help="train start and winner for the same wall time, report val accuracy")
    p.add_argument("--accuracy-seconds", type=float, default=60.0, help="training seconds per side for --check-accuracy")
    p.add_argument("--out", default="results", help="parent of the run directory (default results/)")
    p.add_argument("--resume", metavar="RUN_ID", help="continue a tune run: configurations already measured are reused")
    return p


def main(args: argparse.Namespace) -> int:
    t_start = time.monotonic()
    base = apply_overrides(read_yaml(args.config), dict(parse_override(o) for o in args.overrides))
    config = validate_config(base, source=args.config)
    preflight_config(config, args.config)
    space = parse_axes(args.axes) if args.axes else default_space(config, args.max_batch)
    for key, values in space.items():  # every value must give a valid, loadable config before anything runs
        for v in values:
            preflight_config(validate_config(apply_overrides(base, {key: v}), source=f"--axes {key}={v}"), f"--axes {key}={v}")
    space = ordered(space)
    start = start_values(config, space)

    if args.resume:
        run_dir = Path(args.out) / args.resume
        if not (run_dir / "cells.jsonl").exists():
            raise ConfigError(f"--resume {args.resume}: no tune run at {run_dir}")
    else:
        run_dir = Path(args.out) / f"tune-{config.name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
        run_dir.mkdir(parents=True)
    threads = torch.get_num_threads()
    env = {**environment_info(), "command": sys.argv, "config": args.config, "space": space, "threads": threads}
    (run_dir / "env.json").write_text(json.dumps(env, indent=2, default=str) + "\n")
    print(f"{run_dir}: searching {', '.join(space)} from {args.config} within {args.budget_s:.0f} s", flush=True)
    records = read_records(run_dir / "cells.jsonl")
    known = {values_key(r["axes"]): r for r in records if r.get("role", "search") == "search"}
    known_rechecks = {values_key(r["axes"]): r for r in records if r.get("role") == RECHECK}
    measure = CellMeasure(base, run_dir, start, threads, args.config)
    mem_cap = args.mem_cap_mb
    if mem_cap is None:
        mem_cap = (os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) / 2**20 * 0.5

    def round_s(searcher: Searcher, candidates: list[dict[str, Any]]) -> float:
        # One side-by-side round: the start and each finalist at what their own cells cost so far
        # (a compiled finalist costs about twice an eager one), an average trial for one not yet known.
        missing = max(0, args.finalists - len(candidates))
        return FINAL_COST * (searcher.cost(start) + sum(searcher.cost(c) for c in candidates)
                             + missing * (searcher.trial_seconds or 0.0))

    def after_search_s(searcher: Searcher, rounds: int) -> float:
        # The budget covers the whole run: the side-by-side rounds, and the per-lever table's cells
        # (start + one of the best configuration's changes) that the search has not measured.
        top = ranked(searcher.trials, searcher.score, start, args.finalists)
        if top:
            levers = sum(1 for a in space if top[0][a] != start[a] and not searcher.measured({**start, a: top[0][a]}))
        else:
            levers = max(0, len(space) - 1)
        return rounds * round_s(searcher, top) + (searcher.trial_seconds or 0.0) * levers

    searcher = Searcher(measure, args.budget_s - (time.monotonic() - t_start), known=known,
                        reserve_s=lambda s: after_search_s(s, args.rounds), known_rechecks=known_rechecks)
    result = coordinate_search(start, space, searcher, mem_cap_mb=mem_cap, recheck_band=RECHECK_BAND,
                               late_axes=LATE_AXES, late_trial_cost=LATE_TRIAL_COST)
    if not usable(result.start_record):
        raise ConfigError(f"{args.config}: the starting configuration {why_unusable(result.start_record)}; nothing to compare against")
    search_seconds = time.monotonic() - t_start
    candidates = finalists(result, k=args.finalists)
    # Estimates run short (a cell's cost drifts with the machine's load): rather than overrun the
    # budget, take fewer rounds, down to MIN_ROUNDS.
    rounds = rounds_that_fit(args.rounds, time.monotonic() - t_start, args.budget_s, lambda n: after_search_s(searcher, n))
    final_measure = CellMeasure(base, run_dir, start, threads, args.config, measure=FINAL_MEASURE)
    final = side_by_side(final_measure, start, candidates, rounds) if candidates else None
    if final:
        final["rounds_asked"] = args.rounds
    winner = final["winner"] if final else start
    if final and final["ci_high"] < 1.0:  # every finalist is slower than the start when re-measured
        winner = start
    # Against every reading of the start (search and final rounds), not its first one: the contribution
    # cells are measured last, minutes after the search's start reading.
    start_samples = searcher.readings(start) + (final["start_samples_per_s_per_round"] if final else [])
    start_sps = pooled(start_samples)
    contrib = contributions(start, winner, searcher, start_sps=start_sps)

    winner_config = measure.config(winner)
    winner_yaml = run_dir / "winner.yaml"
    winner_yaml.write_text(yaml.safe_dump(winner_config.to_dict(), sort_keys=False))
    out: dict[str, Any] = {
        "config": args.config, "space": space, "start": start, "winner": winner, "search_best": result.winner,
        "trials": [{**brief(v, r), "readings": result.readings.get(values_key(v), []), "score": result.score(v)}
                   for v, r in result.trials],
        "recheck_band": RECHECK_BAND, "rechecks": [brief(v, r) for v, r in result.rechecks],
        "budget_exhausted": result.budget_exhausted, "passes": result.passes, "search_seconds": search_seconds,
        "contributions": contrib, "final": final, "winner_yaml": str(winner_yaml), "start_samples_per_s": start_sps,
        "start_readings": len(start_samples),
    }
    if args.check_accuracy:
        out["accuracy"] = {"seconds": args.accuracy_seconds,
                           "start": train_for_seconds(config, args.accuracy_seconds),
                           "winner": train_for_seconds(winner_config, args.accuracy_seconds)}
    out["total_seconds"] = time.monotonic() - t_start
    (run_dir / "tune.json").write_text(json.dumps(out, indent=2, default=str) + "\n")
    text = format_report(out)
    (run_dir / "tune.md").write_text(text)
    print()
    print(text)
    print(f"total {out['total_seconds']:.0f} s")
    print(f"results: {run_dir}")
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    return run_cli(main, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(cli())
