"""bench.tune's objective and tuning for time to a target: the value of a reading, the levers added, the
finals as seeded runs side by side, every lever made to pay, and the epochs the winner's YAML trains for
(on fixed runs: the cells are a table, no process starts)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from conftest import REPO

from bench.cells.contract import CellRecord
from bench.cells.target import Target, TargetRun
from bench.target.scoring import score_runs
from bench.tune.report import pruning_section, trials_section
from bench.tune.to_target import (
    Objective,
    epochs_to_reach,
    parse_target,
    prune_target_levers,
    schedule_values,
    target_finals,
    target_space,
)
from trainer_core.errors import ConfigError
from trainer_core.loading import load_config

TARGET = Target(metric="val_accuracy", value=0.9)
TTT = Objective("time_to_target", TARGET, runs=3)


def _record(seconds: float | None, guards_ok: bool = True, epochs: float = 2.0, seed: int = 0) -> CellRecord:
    run = TargetRun(seed=seed, reached=seconds is not None, seconds=seconds or 50.0, setup_s=1.0, epochs=epochs,
                    steps=10, samples=640, final=0.93 if seconds is not None else 0.8)  # fmt: skip
    result = score_runs(TARGET, [run])
    return CellRecord(cell_id="c", status="ok", guards_ok=guards_ok, samples_per_s=1000.0, throughput=1000.0,
                      time_to_target=result)  # fmt: skip


class TableCells:
    """Cells as a table: seconds to the target by (lr, batch) and seed; records the order they ran in."""

    def __init__(self, seconds: dict[tuple[float, int], list[float | None]]) -> None:
        self.seconds, self.calls = seconds, []
        self.setup = SimpleNamespace(config=SimpleNamespace(seed=10))

    def __call__(self, values: dict[str, Any], label: str | None = None) -> CellRecord:
        self.calls.append(label)
        times = self.seconds[(values["optim.lr"], values["data.batch_size"])]
        return _record(times[values["seed"] - 10], seed=values["seed"], epochs=1.5)


def test_the_target_is_parsed_and_bad_ones_name_the_flag() -> None:
    assert parse_target("val_loss=1.9") == Target(metric="val_loss", value=1.9)
    for bad in ("val_accuracy", "accuracy=0.9", "val_accuracy=high", None):
        with pytest.raises(ConfigError, match="--target"):
            parse_target(bad)


def test_a_reading_is_worth_its_throughput_or_one_over_its_time_to_target() -> None:
    assert Objective().value(_record(20.0)) == 1000.0
    assert TTT.value(_record(20.0)) == pytest.approx(1 / 20.0)
    assert TTT.value(_record(None)) is None  # not reached: it cannot win
    assert TTT.value(_record(20.0, guards_ok=False)) is None and Objective().value(_record(20.0, False)) is None
    measure = TTT.measure(Objective().measure(None), runs=1)  # type: ignore[arg-type]
    assert measure.mode == "time_to_target" and measure.runs == 1 and measure.target == TARGET


def test_time_to_target_adds_the_learning_rate_its_scaling_and_if_allowed_the_model() -> None:
    tabular = load_config(REPO / "configs" / "tabular_mlp.yaml")
    space = target_space(tabular, {"data.batch_size": [32, 64]}, allow_model_change=False)
    assert space["optim.lr"] == [0.005, 0.01, 0.02, 0.04] and space["optim.lr_scaling"] == ["none", "sqrt", "linear"]
    assert "optim.lr_scaling" not in target_space(tabular, {"data.batch_size": [64]}, False)  # batch fixed
    with pytest.raises(ConfigError, match="--allow-model-change: synthetic_blobs is not image data"):
        target_space(tabular, {}, allow_model_change=True)
    images = load_config(REPO / "configs" / "fashion_mnist_classic.yaml")
    models = target_space(images, {}, allow_model_change=True)["model.name"]
    assert models[0] == images.model.name and len(models) == len(set(models)) > 1
    with pytest.raises(ConfigError, match="model.kwargs .* fit SimpleCNN alone"):
        target_space(load_config(REPO / "configs" / "fashion_mnist_classic.yaml", {"model.kwargs": {"dropout": 0.1}}),
                     {}, allow_model_change=True)  # fmt: skip


def test_a_time_to_target_tune_prepares_every_lever_value_as_a_valid_config() -> None:
    from bench.tune.tuning import prepare

    setup = prepare(str(REPO / "configs" / "tabular_mlp.yaml"), [], [], 512, TTT)
    assert setup.space["optim.lr_scaling"] == ["none", "sqrt", "linear"] and setup.space["optim.lr"] == [
        0.005,
        0.01,
        0.02,
        0.04,
    ]
    assert setup.config.optim.reference_batch_size == 64  # scaling is relative to the batch the start's lr was set at
    images = prepare(str(REPO / "configs" / "fashion_mnist_classic.yaml"), [], [], 512, TTT, allow_model_change=True)
    assert images.space["model.name"][0] == "SimpleCNN" and images.start["model.name"] == "SimpleCNN"
    assert list(images.space)[:3] == ["data.pipeline", "model.name", "optim.scheduler+train.epochs"]
    with pytest.raises(ConfigError, match="--allow-model-change: only with --objective time_to_target"):
        prepare(str(REPO / "configs" / "fashion_mnist_classic.yaml"), [], [], 512, Objective(), allow_model_change=True)


def test_an_lr_scaling_rule_at_the_reference_batch_trains_as_the_start_does(tmp_path: Any) -> None:
    # A tune of the baby GPT read "linear" at its own batch (lr x1) 9% faster on noise and moved to it.
    from bench.tune.tuning import TuneCells, prepare, trained_as

    setup = prepare(str(REPO / "configs" / "tabular_mlp.yaml"), [], [], 512, TTT)
    cells = TuneCells(setup, tmp_path, threads=1)

    def same(**change: Any) -> bool:
        return trained_as(cells.config({**setup.start, **change})) == trained_as(cells.config(setup.start))

    assert same(**{"optim.lr_scaling": "linear"}) and same(**{"optim.lr_scaling": "sqrt"})
    assert not same(**{"optim.lr_scaling": "linear", "data.batch_size": 128})  # lr x2 and half the warm-up
    assert not same(**{"optim.lr": 0.02})
    rule = {"optim.lr_scaling": "linear", "data.batch_size": 128}
    assert trained_as(cells.config({**setup.start, **rule}))["optim"]["lr"] == pytest.approx(2 * setup.config.optim.lr)


def test_the_schedule_and_its_length_are_one_lever_and_max_epochs_is_the_starts_budget() -> None:
    from bench.tune.tuning import overrides_of, prepare

    classic = load_config(REPO / "configs" / "fashion_mnist_classic.yaml", {"train.epochs": 10})
    assert schedule_values(classic) == [["none", 10], ["onecycle", 2], ["onecycle", 3], ["onecycle", 4],
                                        ["onecycle", 7]]  # fmt: skip
    assert schedule_values(load_config(REPO / "configs" / "fashion_mnist.yaml"))[0] == ["onecycle", 5]  # not twice
    assert overrides_of({"optim.scheduler+train.epochs": ["onecycle", 3], "optim.lr": 0.002}) == {
        "optim.scheduler": "onecycle", "train.epochs": 3, "optim.lr": 0.002}  # fmt: skip
    objective = Objective("time_to_target", TARGET, runs=3, max_epochs=8)
    setup = prepare(str(REPO / "configs" / "fashion_mnist_classic.yaml"), [], [], 128, objective)
    assert setup.start["optim.scheduler+train.epochs"] == ["none", 8] and setup.config.train.epochs == 8
    assert setup.objective.max_epochs is None  # each configuration trains its own epochs, the start 8
    keys = list(setup.space)
    assert keys.index("optim.scheduler+train.epochs") < keys.index("optim.lr")  # the schedule before its peak


def test_the_finals_run_seed_by_seed_in_rotating_order_and_the_fastest_to_target_wins() -> None:
    start = {"optim.lr": 0.01, "data.batch_size": 64}
    fast = {"optim.lr": 0.02, "data.batch_size": 64}
    cells = TableCells({(0.01, 64): [20.0, 22.0, 21.0], (0.02, 64): [10.0, 11.0, 12.0]})
    final = target_finals(cells, TTT, start, [fast])  # type: ignore[arg-type]
    assert cells.calls == ["final-start-s01", "final-f1-s01", "final-f1-s02", "final-start-s02",
                           "final-start-s03", "final-f1-s03"]  # fmt: skip
    assert final["winner"] == fast and final["speedup"] == pytest.approx(21.0 / 11.0)  # MLPerf: the middle run
    assert final["ci_low"] <= final["speedup"] <= final["ci_high"] and final["ci_low"] > 1.0
    assert [len(r["runs"]) for r in final["finalists"]] == [3, 3]
    assert epochs_to_reach(final, fast) == 2  # 1.5 epochs: the YAML trains two whole ones
    slower = TableCells({(0.01, 64): [20.0, 22.0, 21.0], (0.02, 64): [30.0, 31.0, 32.0]})
    stands = target_finals(slower, TTT, start, [fast])  # type: ignore[arg-type]
    assert stands["winner"] == start and "the start stands" in stands["note"]
    never = TableCells({(0.01, 64): [20.0, 22.0, 21.0], (0.02, 64): [None, None, 5.0]})
    assert target_finals(never, TTT, start, [fast])["winner"] == start  # two runs short of the target: not reached


def test_a_lever_stays_only_if_the_target_is_reached_later_without_it() -> None:
    start = {"optim.lr": 0.01, "data.batch_size": 64}
    winner = {"optim.lr": 0.02, "data.batch_size": 128}
    cells = TableCells({
        (0.02, 128): [10.0, 11.0, 12.0],  # the winner
        (0.01, 128): [20.0, 21.0, 22.0],  # without the lr change: slower, so the lr pays
        (0.02, 64): [10.5, 10.0, 11.5],  # without the batch change: as fast, so the batch goes
    })  # fmt: skip
    pruned, rows = prune_target_levers(cells, TTT, start, winner, {})  # type: ignore[arg-type]
    assert pruned == {"optim.lr": 0.02, "data.batch_size": 64}
    by = {r["axis"]: r for r in rows}
    assert by["optim.lr"]["kept"] and by["optim.lr"]["without"][2] < 1.0  # speed without / with, interval below 1
    assert not by["data.batch_size"]["kept"] and by["data.batch_size"]["without"][1] <= 1.0
    one = {"optim.lr": 0.02, "data.batch_size": 64}
    final = {"speedup": 2.0, "ci_low": 1.5, "ci_high": 2.5}  # one lever: the finals already judged it
    why = "the finals' winner against the start"
    row = {"axis": "optim.lr", "kept": True, "without": (0.5, 0.4, 1 / 1.5), "why": why}
    assert prune_target_levers(cells, TTT, start, one, final) == (one, [row])
    assert prune_target_levers(cells, TTT, start, one, {**final, "ci_low": 0.9})[0] == start


def test_levers_that_cost_nothing_alone_are_dropped_together_only_if_that_costs_nothing_either() -> None:
    start = {"optim.lr": 0.01, "data.batch_size": 64}
    winner = {"optim.lr": 0.02, "data.batch_size": 128}
    table = {
        (0.02, 128): [10.0, 11.0, 12.0],  # the winner
        (0.01, 128): [10.5, 11.0, 11.5],  # without the lr change: as fast
        (0.02, 64): [10.0, 11.5, 12.0],  # without the batch change: as fast
    }
    slow = TableCells({**table, (0.01, 64): [20.0, 21.0, 22.0]})  # without both: each was the other's gain
    kept, rows = prune_target_levers(slow, TTT, start, winner, {})  # type: ignore[arg-type]
    assert kept == winner and all(r["kept"] for r in rows)
    together = rows[-1]
    assert together["axis"] == "together: optim.lr, data.batch_size" and together["without"][2] < 1.0
    assert [r["why"] for r in rows[:2]] == ["slower without them together"] * 2
    assert sum(1 for c in slow.calls if c.startswith("prune-together")) == 2 * TTT.runs  # winner and pruned
    assert "kept: slower without them together" in "\n".join(pruning_section({"pruning": rows}))
    free = TableCells({**table, (0.01, 64): [10.0, 11.0, 11.5]})
    pruned, rows = prune_target_levers(free, TTT, start, winner, {})  # type: ignore[arg-type]
    assert pruned == start and not any(r["kept"] for r in rows) and rows[-1]["without"][2] >= 1.0
    verdicts = [ln.rsplit("|", 2)[1].strip() for ln in pruning_section({"pruning": rows})[-3:]]
    assert verdicts == ["**dropped**: not slower without it"] * 2 + ["**dropped**: not slower without them together"]
    never = TableCells({**table, (0.01, 64): [None, None, None]})  # without both the target is not reached
    assert prune_target_levers(never, TTT, start, winner, {})[0] == winner  # type: ignore[arg-type]


def test_a_trial_short_of_the_target_reads_not_reached_not_a_failure() -> None:
    start, later = {"optim.lr": 0.01}, {"optim.lr": 0.02}
    trials = [{"values": start, "status": "ok", "guards_ok": True, "score": 1 / 200.0},
              {"values": later, "status": "ok", "guards_ok": True, "score": 0.0}]  # fmt: skip
    result = {"config": "c.yaml", "objective": "time_to_target", "trials": trials, "search_seconds": 400.0,
              "budget_exhausted": False, "start": start, "winner": start}  # fmt: skip
    rows = [ln for ln in trials_section(result) if ln.startswith("| optim.lr=0.02")]
    assert rows == ["| optim.lr=0.02 | ok | not reached |  | ok |"]
    assert "| (start) | ok | 200 |  | ok |" in trials_section(result)
    assert "(second reading FAILED)" in "\n".join(trials_section({**result, "objective": "samples_per_s"}))


def test_the_budget_plan_costs_what_follows_the_search_from_the_leaders_and_the_starts_own_cells() -> None:
    from bench.tune.search import values_key
    from bench.tune.tuning import FINAL_COST, TunePlan

    start = {"optim.lr": 0.01, "data.batch_size": 64, "precision": "fp32"}
    winner = {"optim.lr": 0.02, "data.batch_size": 128, "precision": "bf16"}
    space = {k: [start[k], winner[k]] for k in start}
    timed = {values_key(start): 200.0, values_key(winner): 40.0, values_key({**winner, "precision": "fp32"}): 60.0}
    alone_bf16 = values_key({**start, "precision": "bf16"})  # the only lever the search never tried alone
    searcher = SimpleNamespace(trials=[(start, None), (winner, None)], score=lambda v: 1.0 if v == winner else 0.5,
                               measured=lambda v: values_key(v) != alone_bf16, timed=lambda v: timed.get(values_key(v)),
                               cost=lambda v: timed.get(values_key(v), 150.0), trial_seconds=150.0)  # fmt: skip
    throughput = TunePlan(9000.0, start, space, finalists=1, rounds=2).after_search_s(searcher, 2)  # type: ignore[arg-type]
    to_target = TunePlan(9000.0, start, space, 1, 2, to_target=True).after_search_s(searcher, 2)  # type: ignore[arg-type]
    finals = 2 * FINAL_COST * (200.0 + 40.0)
    pruning = 2 * FINAL_COST * (40.0 + 40.0 + 40.0 + 60.0)  # the leader, and without each lever: as it, or as timed
    together = 2 * FINAL_COST * (40.0 + 120.0)  # the leader again, and without them together: between it and the start
    assert throughput == pytest.approx(finals + 150.0 + pruning + together)  # never tried alone: an average trial
    assert to_target == pytest.approx(finals + pruning + together)  # to target: no lever alone from the start


def test_the_winners_yaml_keeps_a_one_cycle_schedule_its_own_length(tmp_path: Any) -> None:
    import yaml

    from bench.tune.tuning import TuneCells, prepare, write_winner

    objective = Objective("time_to_target", TARGET, runs=1, max_epochs=8)
    setup = prepare(str(REPO / "configs" / "fashion_mnist_classic.yaml"), [], [], 128, objective)
    cells = TuneCells(setup, tmp_path, threads=1)

    def final(values: dict[str, Any]) -> dict[str, Any]:  # its runs reached the target within 2.4 epochs
        return {"finalists": [{"values": values, "runs": [{"reached": True, "epochs": 2.4}]}]}

    plain = {**setup.start, "optim.lr": 0.002}
    assert yaml.safe_load(write_winner(setup, cells, plain, final(plain)).read_text())["train"]["epochs"] == 3
    one_cycle = {**setup.start, "optim.scheduler+train.epochs": ["onecycle", 4]}
    written = yaml.safe_load(write_winner(setup, cells, one_cycle, final(one_cycle)).read_text())
    assert written["optim"]["scheduler"] == "onecycle" and written["train"]["epochs"] == 4  # cut, it anneals sooner


def test_a_search_trial_is_stopped_once_it_cannot_win_and_the_pipeline_is_searched_first(tmp_path: Any) -> None:
    from bench.tune.tuning import TRIAL_CAP, TuneCells, prepare

    setup = prepare(str(REPO / "configs" / "fashion_mnist_classic.yaml"), [], [], 128, TTT)
    # each trial behind the per-sample pipeline is a slow run; the schedule and the learning rate then set how
    # many epochs every later trial runs; the scaling rule right behind the batch size it scales with
    assert list(setup.space)[:3] == ["data.pipeline", "optim.scheduler+train.epochs", "optim.lr"]
    axes = list(setup.space)
    assert axes.index("optim.lr_scaling") == axes.index("data.batch_size") + 1 and axes[-1] == "train.compile"
    cells = TuneCells(setup, tmp_path, threads=1, measure=TTT.measure(None, runs=1))  # type: ignore[arg-type]
    assert cells.cell_measure("search").cell_timeout_s == cells.measure.cell_timeout_s  # nothing reached yet
    cells.note_fastest(_record(None).model_copy(update={"cell_seconds": 40.0}), "search")  # not reached: no bar
    assert cells.fastest_s is None
    for seconds in (300.0, 120.0, 200.0):
        cells.note_fastest(_record(20.0).model_copy(update={"cell_seconds": seconds}), "search")
    assert cells.cell_measure("search").cell_timeout_s == TRIAL_CAP * 120.0
    assert cells.cell_measure("recheck").cell_timeout_s == TRIAL_CAP * 120.0
    assert cells.cell_measure("final-start-s01").cell_timeout_s == cells.measure.cell_timeout_s  # finals run out
    resumed = TuneCells(setup, tmp_path, threads=1, measure=TTT.measure(None, runs=1))  # type: ignore[arg-type]
    earlier = [_record(20.0).model_copy(update={"cell_seconds": s, "role": r}) for s, r in ((90.0, "search"),
               (30.0, "final-start-s01"), (70.0, None))]  # fmt: skip
    resumed.resume_from(earlier)  # an earlier run's search cells set the bar; its finals do not
    assert resumed.cell_measure("search").cell_timeout_s == TRIAL_CAP * 70.0
