"""Time to a target test accuracy of two training configs, measured side by side: a thin use of the
time-to-target measurement (:mod:`bench.target`), ``python -m bench.recipe_race`` is the CLI.

Both configs run in this process, seed by seed in alternating order (baseline then candidate for the first
seed, candidate then baseline for the next, ...), so a machine that slows down slows both. Each run is timed
on MLPerf's clock (evaluations count, setup apart) and the sides are scored by MLPerf's rule
(:func:`bench.target.scoring.score_runs`).
"""

from __future__ import annotations

from typing import Any

from bench.cells.contract import CellSpec, GuardsConfig, MeasureConfig
from bench.cells.target import Target, TargetResult
from bench.target.runs import run_one
from bench.target.scoring import score_runs, speedup_interval
from trainer_core.config import RunConfig
from trainer_core.loading import load_config

SIDES = ("baseline", "candidate")


def side_spec(name: str, config: RunConfig, target: Target, runs: int, threads: int) -> CellSpec:
    """One side as a time-to-target cell (no guards: a race of two recipes, not a matrix cell)."""
    measure = MeasureConfig(mode="time_to_target", target=target, runs=runs, max_epochs=config.train.epochs)
    return CellSpec(cell_id=name, config=config.to_dict(), threads=threads, measure=measure,
                    guards=GuardsConfig(enabled=[]))  # fmt: skip


def race(sides: dict[str, tuple[str, list[str]]], target: Target, runs: int, threads: int) -> dict[str, Any]:
    """Each seed's run of both sides, alternating which goes first; both scored; candidate against baseline."""
    specs = {s: side_spec(s, load_config(path, over), target, runs, threads) for s, (path, over) in sides.items()}
    done: dict[str, list[Any]] = {s: [] for s in SIDES}
    for i in range(runs):
        for side in SIDES if i % 2 == 0 else SIDES[::-1]:
            spec = specs[side]
            run = run_one(spec, int(spec.config["seed"]) + i, None)
            done[side].append(run)
            reached = f"{run.seconds:.1f} s, epoch {run.epochs:g}" if run.reached else "not reached"
            print(f"{side} seed {run.seed}: {reached} (final {target.metric} {run.final:.4f})", flush=True)
    scored = {s: score_runs(target, done[s]) for s in SIDES}
    out: dict[str, Any] = {s: {"config": sides[s][0], "overrides": sides[s][1], **scored[s].to_dict()} for s in SIDES}
    base, cand = scored["baseline"], scored["candidate"]
    out["time_ratio"] = cand.score_s / base.score_s if (base.score_s and cand.score_s) else None
    out["speedup_interval"] = speedup_interval(base, cand) if out["time_ratio"] else None
    return out


def _side_line(side: str, r: TargetResult) -> str:
    if not r.reached:
        return f"{side}: not reached ({r.note})"
    return (
        f"{side}: {r.score_s:.1f} s to target (min {r.min_s:.1f}, max {r.max_s:.1f}; {r.score_with_setup_s:.1f} s "
        f"with setup), {r.epochs_to_target:.2f} epochs, {r.converged} of {len(r.runs)} runs reached it"
    )


def format_race(result: dict[str, Any]) -> str:
    scored = {s: TargetResult.model_validate({k: v for k, v in result[s].items() if k not in ("config", "overrides")})
              for s in SIDES}  # fmt: skip
    target = scored["baseline"].target
    lines = [f"time to {target.describe()} (MLPerf scoring over {len(scored['baseline'].runs)} runs a side)", ""]
    lines += ["| side | seed | reached | s | epochs | final |", "|---|---:|---|---:|---:|---:|"]
    for s in SIDES:
        for r in scored[s].runs:
            lines.append(f"| {s} | {r.seed} | {'yes' if r.reached else 'no'} | {r.seconds:.1f} | {r.epochs:g} | "
                         f"{r.final:.4f} |")  # fmt: skip
    lines += ["", *(_side_line(s, scored[s]) for s in SIDES)]
    ratio, interval = result["time_ratio"], result.get("speedup_interval")
    if ratio is None:
        lines.append("ratio: n/a (the target was not reached by both)")
    else:
        lines.append(f"candidate/baseline time to target: {ratio:.3f} ({1 / ratio:.2f}x faster; baseline/candidate "
                     f"95% interval {interval[0]:.2f}-{interval[1]:.2f}, runs resampled)")  # fmt: skip
    return "\n".join(lines)
