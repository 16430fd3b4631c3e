"""bench.tune's objective, and what tuning for time to a target adds: the levers that change how many
steps a model needs (the learning rate on a small grid, its scaling with the batch, the model when the
user allows it), the finals as seeded runs side by side, and each lever of the winner made to pay by
the same runs. The search itself is the throughput search's (:mod:`bench.tune.search`) with another
value per reading: 1 / seconds to the target instead of samples/s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from bench._cli import positive_int
from bench.cells.contract import OK, CellRecord, MeasureConfig
from bench.cells.target import Target, TargetResult
from bench.target.scoring import score_runs, speedup_interval
from bench.tune.levers import judged_by_finals, lever_row, levers_of, pruned_by, settle_together, without
from trainer_core.config import RunConfig
from trainer_core.datasets import dataset_info
from trainer_core.errors import ConfigError

# bench.tune's flags for the objective (the CLI adds them as they are)
OBJECTIVE_OPTIONS: dict[str, dict[str, Any]] = {
    "--objective": {
        "choices": ["samples_per_s", "time_to_target"],
        "default": "samples_per_s",
        "help": "what the search maximises: samples_per_s (default), or time to --target by MLPerf's rule (the "
        "search then also tries the learning rate on a small grid and its scaling with the batch)",
    },
    "--target": {"metavar": "METRIC=VALUE", "help": "time_to_target: e.g. val_accuracy=0.9 or val_loss=1.9"},
    "--runs": {"type": positive_int, "default": 5, "help": "time_to_target: seeded runs per finalist (default 5)"},
    "--search-runs": {"type": positive_int, "default": 1, "help": "time_to_target: runs per searched configuration"},
    "--max-epochs": {"type": positive_int, "help": "time_to_target: epochs before a run counts as not reached"},
    "--allow-model-change": {
        "action": "store_true",
        "help": "time_to_target on image data: the search may also change the model (the report says so)",
    },
}


class TuneCells(Protocol):
    """What measures one configuration as a cell and records it (:class:`bench.tune.tuning.TuneCells`)."""

    @property
    def setup(self) -> Any: ...

    def __call__(self, values: dict[str, Any], label: str | None = None) -> CellRecord: ...


# The start's learning rate times these. Up to 4x: a short one-cycle schedule holds its peak rate only for a
# moment, and a constant-rate recipe's rate is often well below the peak such a schedule can take.
LR_GRID = (0.5, 1.0, 2.0, 4.0)
# Image classifiers sized from the data (classes, channels, image size): the models --allow-model-change
# lets the search try on image data. One that cannot take the data (torchvision's want 3 channels) fails
# its cell with the reason, and the search goes on.
IMAGE_MODELS = ("SimpleCNN", "FastCNN", "ResNet18", "torchvision:resnet18", "torchvision:mobilenet_v3_small")
# One lever, two keys: a schedule and the epochs it is sized for (a run that has not reached the target by
# then counts as not reached). Searched apart, neither moves: a one-cycle schedule stretched over the start's
# epoch budget anneals too late to reach the target sooner, and fewer epochs without one never reach it.
SCHEDULE_LEVER = "optim.scheduler+train.epochs"
SCHEDULE_SHARES = (0.2, 0.3, 0.45, 0.7)  # one-cycle schedules this share of the start's epoch budget long
NOT_REACHED = "the target was not reached"  # why a lever's run without it has no time to the target


@dataclass(frozen=True)
class Objective:
    """What the search maximises: samples/s, or time to a target quality (MLPerf's rule: ``runs`` seeded
    runs per finalist, fewer, ``search_runs``, per configuration while searching)."""

    name: Literal["samples_per_s", "time_to_target"] = "samples_per_s"
    target: Target | None = None
    runs: int = 5
    search_runs: int = 1
    max_epochs: int | None = None
    eval_every: str | int = "epoch"

    @property
    def to_target(self) -> bool:
        return self.name == "time_to_target"

    def value(self, record: CellRecord) -> float | None:
        """Higher is better: samples/s of a guard-passing cell; 1 / its score when it reached the target."""
        if not record.usable:
            return None
        if not self.to_target:
            return record.rate
        r = record.time_to_target
        return 1.0 / r.score_s if r is not None and r.reached and r.score_s else None

    def measure(self, throughput: MeasureConfig, runs: int | None = None) -> MeasureConfig:
        """The cells' measurement: ``throughput`` as given, or seeded runs to the target."""
        if not self.to_target:
            return throughput
        return MeasureConfig(mode="time_to_target", target=self.target, runs=runs or self.search_runs,
                             max_epochs=self.max_epochs, eval_every=self.eval_every)  # fmt: skip


def parse_target(text: str | None) -> Target:
    """``--target val_accuracy=0.9`` -> Target."""
    if text is None:
        raise ConfigError("--target: needed with --objective time_to_target (METRIC=VALUE, e.g. val_accuracy=0.9)")
    if "=" not in text:
        raise ConfigError(f"--target {text}: expected METRIC=VALUE, e.g. val_accuracy=0.9")
    metric, value = text.split("=", 1)
    try:
        return Target(metric=metric.strip(), value=float(value))
    except ValueError as e:
        raise ConfigError(f"--target {text}: {str(e).splitlines()[-1].strip()}") from None


def target_space(config: RunConfig, space: dict[str, list[Any]], allow_model_change: bool) -> dict[str, list[Any]]:
    """The throughput levers plus the learning rate on a small grid, its scaling rule when the batch may
    change, and (asked for, on image data) the model."""
    out = dict(space)
    out[SCHEDULE_LEVER] = schedule_values(config)
    lr = config.optim.lr
    out["optim.lr"] = sorted({float(f"{lr * f:.6g}") for f in LR_GRID})
    if len(space.get("data.batch_size", [])) > 1:
        out["optim.lr_scaling"] = list(dict.fromkeys([config.optim.lr_scaling, "sqrt", "linear"]))
    if allow_model_change:
        if dataset_info(config.data.name).kind != "image":
            raise ConfigError(f"--allow-model-change: {config.data.name} is not image data; the model stays")
        if config.model.kwargs:
            raise ConfigError(f"--allow-model-change: model.kwargs {config.model.kwargs} fit {config.model.name} "
                              "alone; leave them out so each model is sized from the data")  # fmt: skip
        out["model.name"] = list(dict.fromkeys([config.model.name, *IMAGE_MODELS]))
    return out


def schedule_values(config: RunConfig) -> list[list[Any]]:
    """The start's [schedule, epochs], then one-cycle schedules over shares of its epochs (2 epochs at least)."""
    epochs = config.train.epochs
    lengths = sorted({max(2, round(epochs * share)) for share in SCHEDULE_SHARES})
    start = [config.optim.scheduler, epochs]
    return [start] + [["onecycle", n] for n in lengths if ["onecycle", n] != start]


def seeded_runs(
    cells: TuneCells, configs: dict[str, dict[str, Any]], runs: int, target: Target, label: str
) -> tuple[dict[str, TargetResult], dict[str, str]]:
    """Each configuration's runs side by side: seed by seed, every configuration one run (its own cell) per
    seed, the order rotating so none always goes first. (scored results, why each dropped one failed)."""
    names, seed0 = list(configs), cells.setup.config.seed
    done: dict[str, list[Any]] = {n: [] for n in names}
    failed: dict[str, str] = {}
    for i in range(runs):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            if name in failed:
                continue
            rec = cells({**configs[name], "seed": seed0 + i}, label=f"{label}-{name}-s{i + 1:02d}")
            if rec.status != OK or not rec.guards_ok or rec.time_to_target is None:
                failed[name] = rec.reason or f"a guard failed ({', '.join(rec.failed_guards())})"
                continue
            done[name] += rec.time_to_target.runs
    return {n: score_runs(target, done[n]) for n in names if n not in failed}, failed


def ratio_of(baseline: TargetResult | None, other: TargetResult | None) -> tuple[float, float, float] | None:
    """baseline score / other score (above 1: other is faster) and its run-resampled 95% interval."""
    if baseline is None or other is None or not (baseline.score_s and other.score_s):
        return None
    low, high = speedup_interval(baseline, other)
    return baseline.score_s / other.score_s, low, high


def target_finals(
    cells: TuneCells, objective: Objective, start: dict[str, Any], candidates: list[dict[str, Any]]
) -> dict[str, Any]:
    """Start and finalists, all runs each, side by side; the winner is the finalist fastest to the target
    when it beats the start's score."""
    assert objective.target is not None
    names = ["start"] + [f"f{i + 1}" for i in range(len(candidates))]
    configs = dict(zip(names, [start, *candidates]))
    scored, failed = seeded_runs(cells, configs, objective.runs, objective.target, "final")
    rows = [{"values": configs[n], **(scored[n].to_dict() if n in scored else {"status": "failed",
             "note": failed[n]})} for n in names]  # fmt: skip
    live = [n for n in names[1:] if n in scored and scored[n].reached]
    best = min(live, key=lambda n: scored[n].score_s or math.inf) if live else None
    out: dict[str, Any] = {"runs": objective.runs, "finalists": rows}
    ratio = ratio_of(scored.get("start"), scored[best] if best else None)
    if best is None:
        return {**out, "winner": start, "speedup": None, "note": "no finalist reached the target: the start stands"}
    if ratio is None:
        note = "the start did not reach the target in its runs: the fastest finalist wins without a speedup"
        return {**out, "winner": configs[best], "speedup": None, "note": note}
    out.update(winner=configs[best] if ratio[0] > 1.0 else start, speedup=ratio[0], ci_low=ratio[1], ci_high=ratio[2])
    if ratio[0] <= 1.0:
        out["note"] = "no finalist reached the target faster than the start: the start stands"
    return out


def prune_target_levers(
    cells: TuneCells, objective: Objective, start: dict[str, Any], winner: dict[str, Any], final: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Every lever of the winner must pay (:mod:`bench.tune.levers`): the winner without each one, all runs
    side by side with the winner. Kept when without it the target is reached significantly later (the
    interval of the speed without / with it below 1) or not at all; one lever alone is judged by the finals."""
    levers = levers_of(start, winner)
    if len(levers) < 2:
        return judged_by_finals(levers[0], start, winner, final) if levers else (winner, [])
    assert objective.target is not None
    configs = {"winner": winner, **{f"no-{k}": without(winner, start, k) for k in levers}}
    scored, failed = seeded_runs(cells, configs, objective.runs, objective.target, "prune")
    if "winner" not in scored or not scored["winner"].reached:
        why = failed.get("winner") or "did not reach the target"
        return winner, [
            {"axis": k, "kept": True, "without": None, "why": f"the winner re-measured: {why}"} for k in levers
        ]
    rows = [
        lever_row(k, ratio_of(scored["winner"], scored.get(f"no-{k}")), failed.get(f"no-{k}") or NOT_REACHED)
        for k in levers
    ]
    pruned = pruned_by(start, winner, rows)
    if sum(not r["kept"] for r in rows) < 2:
        return pruned, rows
    scored, failed = seeded_runs(cells, {"winner": winner, "pruned": pruned}, objective.runs, objective.target,
                                 "prune-together")  # fmt: skip
    ratio = ratio_of(scored.get("winner"), scored.get("pruned"))  # speed without them / with
    return settle_together(winner, pruned, rows, ratio, failed.get("pruned") or failed.get("winner") or NOT_REACHED)


def epochs_to_reach(final: dict[str, Any] | None, winner: dict[str, Any]) -> int | None:
    """Whole epochs in which every final run of the winner reached the target (what its YAML trains for)."""
    rows = [r for r in (final or {}).get("finalists", []) if r["values"] == winner and r.get("runs")]
    epochs = [run["epochs"] for r in rows for run in r["runs"] if run["reached"]]
    return max(1, math.ceil(max(epochs) - 1e-9)) if epochs else None
