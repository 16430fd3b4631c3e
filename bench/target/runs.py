"""A time-to-target cell, inside its process: each seed's run trained through the Trainer's own loop
until the target metric is first met, on a clock that follows MLPerf's timed region.

The clock starts right before ``fit`` touches the data and stops at the evaluation that first meets the
target; evaluations count (they are how the target is known to be met), checkpoint writes do not. Building
the data, model and optimizer is ``setup_s``; a compiled model's first step beyond a later one is
``compile_s``: both are reported apart and charged in the second score. A run writes ``last_model.pt``
every epoch under the cell's ``state_dir`` with its clock, so a killed cell resumes each unfinished seed
where it was and keeps the seeds it had finished.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.cells.contract import OK, CellRecord, CellSpec, guards_ok
from bench.cells.target import Target, TargetRun
from bench.guards.checks import check_guards
from bench.target.scoring import score_runs
from trainer_core.config import RunConfig, apply_overrides
from trainer_core.factory import build_run
from trainer_core.hooks import BaseHook, StepResult
from trainer_core.hooks import Trainer as TrainerT
from trainer_core.loading import validate_config
from trainer_core.provenance import machine_identity

CLOCK_KEY = "target_clock_s"  # the clock so far, in the Trainer's counters (saved in its checkpoints)
POINTS_KEY = "target_evals"  # the evaluations of an epoch, in its history record (saved in checkpoints)


class TargetClock(BaseHook):
    """Evaluates the target metric every epoch (reading the epoch's own validation when the metric is a
    validation one) or every K steps, on the clock. When the target is met the clock stops there; with
    ``confirm`` the Trainer goes on, off the clock, to the next evaluation (the luck check), then stops."""

    def __init__(
        self, target: Target, every: str | int, loader: Any, steps_per_epoch: int, confirm: bool = True
    ) -> None:
        self.target, self.every, self.loader, self.steps_per_epoch = target, every, loader, max(steps_per_epoch, 1)
        self.confirm = confirm
        self.carried, self.t0, self.ck0 = 0.0, 0.0, 0.0
        self.evals: list[dict[str, float]] = []  # this process's evaluations not yet kept in an epoch record
        self.reached: dict[str, float] | None = None
        self.confirmation: float | None = None  # the evaluation after the one that met the target
        self.step_s: list[float] = []  # the first two steps' wall times: compile_s

    def start(self, trainer: TrainerT) -> None:
        self.carried = float(trainer.counters.get(CLOCK_KEY, 0.0))
        self.ck0 = trainer.counters.get("checkpoint_seconds", 0.0)
        self.t0 = self._last = time.perf_counter()
        kept = [p for h in trainer.history for p in h.get(POINTS_KEY, [])]  # a resumed run's evaluations
        self.reached = next((p for p in kept if self.target.reached(p["value"])), None)

    def elapsed(self, trainer: TrainerT) -> float:
        if self.reached is not None:  # the clock stopped at the target; what follows is off it
            return self.reached["seconds"]
        written = trainer.counters.get("checkpoint_seconds", 0.0) - self.ck0
        return self.carried + time.perf_counter() - self.t0 - written

    def on_step_end(self, trainer: TrainerT, result: StepResult) -> None:
        if len(self.step_s) < 2:
            now = time.perf_counter()
            self.step_s.append(now - self._last)
            self._last = now
        if isinstance(self.every, int) and trainer.global_step % self.every == 0:
            # The Trainer counts this step's batch and samples after its hooks have seen the step.
            samples = trainer.counters["samples_seen"] + result.batch_size * trainer.dist.world_size
            self.check(trainer, self.evaluate(trainer), trainer.batch_in_epoch + 1, samples)

    def on_epoch_end(self, trainer: TrainerT, record: dict[str, Any]) -> None:
        if self.every == "epoch" and self.confirmation is None:
            metric = self.target.metric
            value = record[metric] if metric.startswith("val_") else self.evaluate(trainer)
            self.check(trainer, float(value), trainer.batch_in_epoch, trainer.counters["samples_seen"])
        record[POINTS_KEY], self.evals = self.evals, []
        trainer.counters[CLOCK_KEY] = self.elapsed(trainer)

    def evaluate(self, trainer: TrainerT) -> float:
        return float(trainer.evaluate(self.loader)[self.target.metric.split("_", 1)[1]])

    def check(self, trainer: TrainerT, value: float, batches: int, samples: float) -> None:
        """Note the evaluation (``batches`` of the current epoch done, ``samples`` seen); at the target stop the
        clock, and training then or (``confirm``) after the next evaluation, which is the confirmation."""
        if self.reached is not None:
            self.confirmation, trainer.should_stop = value, True
            return
        point = {
            "seconds": self.elapsed(trainer),
            "epochs": trainer.epoch + batches / self.steps_per_epoch,
            "steps": float(trainer.global_step),
            "samples": float(samples),
            "value": value,
        }
        self.evals.append(point)
        if self.target.reached(value):
            self.reached = point
            trainer.should_stop = not self.confirm


def seed_config(spec: CellSpec, seed: int) -> RunConfig:
    """The cell's config as one run to the target trains it: its seed, the allowed epochs, no logging
    files, no best-model files, its threads."""
    m = spec.measure
    epochs = m.max_epochs or int(spec.config["train"]["epochs"])
    over: dict[str, Any] = {
        "seed": seed,
        "train.epochs": epochs,
        "train.max_steps": None,
        "train.threads": spec.threads,
        "logging.tensorboard": False,
        "logging.jsonl": False,
        "logging.progress_bar": "off",
        "checkpoint.save_best": False,
        "checkpoint.keep_best_n": 0,
        "checkpoint.every_n_steps": None,
        "checkpoint.save_last": spec.state_dir is not None,
    }
    return validate_config(apply_overrides(spec.config, over), source=f"cell {spec.cell_id} seed {seed}")


def run_one(spec: CellSpec, seed: int, state: Path | None) -> TargetRun:
    """One seed's run to the target (resumed from ``state``/last_model.pt when a killed cell left one)."""
    assert spec.measure.target is not None
    config = seed_config(spec, seed)
    t0 = time.perf_counter()
    run = build_run(config, checkpoint_dir=state)
    trainer, data, every = run.trainer, run.data, spec.measure.eval_every
    metric = spec.measure.target.metric
    loader = data.val_loader if metric.startswith("val_") else data.test_loader
    clock = TargetClock(spec.measure.target, every, loader, len(data.train_loader), spec.measure.confirm)
    trainer.hooks.append(clock)
    last = state / "last_model.pt" if state is not None else None
    resumed = last is not None and last.exists()
    if resumed:
        trainer.load_checkpoint(last)
    setup_s = time.perf_counter() - t0
    clock.start(trainer)
    validate_each_epoch = every == "epoch" and metric.startswith("val_")
    trainer.fit(data.train_loader, data.val_loader if validate_each_epoch else None)
    evals = [p for h in trainer.history for p in h.get(POINTS_KEY, [])] + clock.evals
    end = clock.reached or {
        "seconds": clock.elapsed(trainer),
        "epochs": float(trainer.epoch),
        "steps": float(trainer.global_step),
        "samples": float(trainer.counters["samples_seen"]),
    }
    compile_s = None
    if config.train.compile != "off" and len(clock.step_s) == 2 and not resumed:
        compile_s = max(0.0, clock.step_s[0] - clock.step_s[1])
    train_s = trainer.counters["train_seconds"]
    return TargetRun(
        seed=seed,
        reached=clock.reached is not None,
        seconds=end["seconds"] - (compile_s or 0.0),
        setup_s=setup_s,
        compile_s=compile_s,
        epochs=end["epochs"],
        steps=int(end["steps"]),
        samples=int(end["samples"]),
        final=evals[-1]["value"] if evals else float("nan"),
        confirmation=clock.confirmation,
        evals=evals,
        samples_per_s=trainer.counters["samples_seen"] / train_s if train_s > 0 else None,
        resumed=resumed,
    )


def seed_runs(spec: CellSpec) -> list[TargetRun]:
    """Every seed's run, in seed order: a seed finished before an interruption is read back, not rerun."""
    base = int(spec.config.get("seed", 42))
    runs = []
    for i in range(spec.measure.runs):
        seed = base + i
        state = Path(spec.state_dir) / f"seed-{seed}" if spec.state_dir else None
        done = state / "run.json" if state is not None else None
        if done is not None and done.exists():
            runs.append(TargetRun.model_validate_json(done.read_text()))
            continue
        if state is not None:
            state.mkdir(parents=True, exist_ok=True)
        run = run_one(spec, seed, state)
        if done is not None:
            done.write_text(run.model_dump_json() + "\n")
            (state / "last_model.pt").unlink(missing_ok=True)  # kept only while the seed could resume
        runs.append(run)
    return runs


def target_cell(spec: CellSpec) -> CellRecord:
    """A time-to-target cell: its seeds' runs, their score, the guards on the cell's config."""
    assert spec.measure.target is not None
    t_start = time.perf_counter()
    runs = seed_runs(spec)
    result = score_runs(spec.measure.target, runs)
    config = validate_config(spec.config, source=f"cell {spec.cell_id}")
    guards = check_guards(config, spec.guards)
    rates = [r.samples_per_s for r in runs if r.samples_per_s]
    rate = sum(rates) / len(rates) if rates else None
    return CellRecord(
        cell_id=spec.cell_id,
        axes=spec.axes,
        role=spec.role,
        status=OK,
        precision=config.precision,
        device=spec.device,
        batch_size=config.data.batch_size,
        optim=config.scaled_optim().to_dict(),
        threads=spec.threads,
        samples_per_s=rate,
        throughput=rate,
        throughput_unit="samples/s",
        guards={g.name: g for g in guards},
        guards_ok=guards_ok(guards),
        cell_seconds=time.perf_counter() - t_start,
        machine=machine_identity(),
        time_to_target=result,
    )
