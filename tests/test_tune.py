from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import REPO, tiny_overrides

from bench.cells.contract import CellRecord
from bench.history import db as history_db
from bench.train import __main__ as train_cli
from bench.tune import __main__ as tune_cli
from bench.tune.report import format_report, pruning_section
from bench.tune.tuning import default_space, ordered, parse_axes, prune_levers, rounds_that_fit, train_for_seconds
from trainer_core.loading import load_config
from trainer_core.text import write_sample_text

TABULAR = str(REPO / "configs" / "tabular_mlp.yaml")


def test_parse_axes_and_default_space() -> None:
    assert parse_axes(["precision=fp32,bf16", "data.batch_size=32,64"]) == {
        "precision": ["fp32", "bf16"],
        "data.batch_size": [32, 64],
    }
    space = default_space(load_config(str(REPO / "configs" / "fashion_mnist_classic.yaml")), max_batch=256)
    assert space["data.batch_size"] == [32, 64, 128, 256]
    assert space["data.pipeline"] == ["classic", "tensor"] and "fp32" in space["precision"]
    assert "model.memory_format" in space and space["data.num_workers"][0] == 0
    assert space["optim.fused"] == [None, True]  # torch's default is the start; fused runs on CPU in torch >= 2.4
    assert space["train.malloc"] == ["default", "retain"]  # glibc here
    # compilation last; unknown axes after all (see AXIS_ORDER)
    order = list(ordered({**space, "train.threads": [1, 2]}))
    # precision first, then the pipeline, then the levers a data-bound step hides, malloc after the batch size
    assert order[:4] == ["precision", "data.pipeline", "model.memory_format", "data.batch_size"]
    assert order.index("train.malloc") == order.index("data.batch_size") + 1
    assert order[-2:] == ["train.compile", "train.threads"]


def test_default_space_leaves_out_levers_the_device_or_config_cannot_take(monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    import torch.utils._foreach_utils as fu

    classic = str(REPO / "configs" / "fashion_mnist_classic.yaml")
    monkeypatch.setattr(fu, "_get_fused_kernels_supported_devices", lambda: ["cuda"])
    monkeypatch.setattr(shutil, "which", lambda name: None)  # no C++ compiler: inductor cannot build for CPU
    space = default_space(load_config(classic, {"device": "cpu"}), max_batch=64)
    assert "optim.fused" not in space and "train.compile" not in space
    monkeypatch.undo()
    assert "optim.fused" not in default_space(load_config(classic, {"optim.foreach": True}), max_batch=64)


@pytest.mark.slow
def test_tune_end_to_end_and_the_winner_trains(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc = tune_cli.cli(
        [
            "--config",
            TABULAR,
            "--axes",
            "precision=fp32,bf16",
            "--axes",
            "data.batch_size=32,64",
            "--set",
            "data.n_samples=512",
            "--budget-s",
            "300",
            "--rounds",
            "1",
            "--check-accuracy",
            "--accuracy-seconds",
            "0.5",
            "--executor",
            "forked",  # each cell a child of a server that imported torch once (the default, local, is slower)
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out.strip().splitlines()
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert out[-1] == f"results: {run_dir}"
    # the README's promises: report.html, the run in the history, and --check-accuracy's same-time training
    assert (run_dir / "report.html").is_file() and f"report: {run_dir / 'report.html'}" in out
    db = history_db.connect(tmp_path / "history.sqlite", create=False)
    assert [(r["run_id"], r["kind"]) for r in history_db.runs(db)] == [(run_dir.name, "tune")]
    db.close()
    acc = json.loads((run_dir / "tune.json").read_text())["accuracy"]
    for side in ("start", "winner"):
        assert acc[side]["train_seconds"] >= 0.5 and acc[side]["samples"] > 0 and 0.5 < acc[side]["val_accuracy"] <= 1
    assert any(ln.startswith("Same wall time (") and "validation accuracy: start 0." in ln for ln in out)
    result = json.loads((run_dir / "tune.json").read_text())
    assert result["start"] == {"precision": "fp32", "data.batch_size": 64}
    assert len(result["trials"]) >= 3 and all(t["status"] == "ok" for t in result["trials"])
    records = [json.loads(x) for x in (run_dir / "cells.jsonl").read_text().splitlines()]
    assert all("guards" in r and "step_s" in r for r in records)  # every trial is a full cell
    numbers = [r["cell_id"].split("-")[0] for r in records]
    assert numbers == [f"t{i + 1:02d}" for i in range(len(records))]  # search, finals, contributions: one sequence
    final = result["final"]
    assert final is not None  # three or more configurations passed: the finalists met the start side by side
    assert final["ci_low"] <= final["speedup"] <= final["ci_high"]
    chosen = final["winner"] if final["ci_high"] >= 1.0 else result["start"]
    dropped = {r["axis"] for r in result["pruning"] if not r["kept"]}  # levers that did not pay were taken out
    assert {r["axis"] for r in result["pruning"]} == {k for k, v in chosen.items() if v != result["start"][k]}
    assert result["winner"] == {k: result["start"][k] if k in dropped else v for k, v in chosen.items()}
    assert "Winning config" in (run_dir / "tune.md").read_text()
    assert (
        train_cli.cli(
            [
                "--config",
                str(run_dir / "winner.yaml"),
                "--out",
                str(tmp_path / "train"),
                "--set",
                "logging.progress_bar=off",
            ]
        )
        == 0
    )  # its own epochs (early stopping on)
    assert json.loads((tmp_path / "train" / "metrics.json").read_text())["test_accuracy"] > 0.9


@pytest.mark.slow
def test_a_budget_spent_on_the_start_says_so(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc = tune_cli.cli(
        [
            "--config",
            TABULAR,
            "--axes",
            "data.batch_size=32,64",
            "--set",
            "data.n_samples=512",
            "--budget-s",
            "1",
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 0
    report = capsys.readouterr().out
    assert "none: the budget ran out before any other configuration was measured (raise --budget-s)" in report
    assert "the start is fastest" not in report  # it was never compared with anything


@pytest.mark.slow
def test_tune_on_a_language_model_searches_tokens_per_s_and_reports_mfu(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    text = write_sample_text(tmp_path / "t.txt", words=3000)
    config = tmp_path / "lm.yaml"
    lm = {
        "name": "lm",
        "workload": "causal_lm",
        "model": {"name": "GPT", "kwargs": {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 16}},
        "data": {"name": "text", "path": str(text), "batch_size": 4, "n_samples": 2000, "n_test_samples": 16},
        "optim": {"name": "adamw", "lr": 0.01},
        "logging": {"tensorboard": False, "jsonl": False, "progress_bar": "off"},
    }
    config.write_text(yaml.safe_dump(lm))
    argv = ["--config", str(config), "--axes", "data.batch_size=4,16", "--rounds", "1", "--executor", "forked",
            "--out", str(tmp_path / "t")]  # fmt: skip
    assert tune_cli.cli(argv) == 0
    (run_dir,) = [p for p in (tmp_path / "t").iterdir() if p.is_dir()]
    result = json.loads((run_dir / "tune.json").read_text())
    assert result["unit"] == "tokens/s" and all(t["guards_ok"] for t in result["trials"])
    assert all(0 < t["mfu_pct"] < 100 for t in result["trials"])
    assert all(0 < f["mfu_pct"] < 100 for f in result["final"]["finalists"])
    assert json.loads((run_dir / "env.json").read_text())["peaks"]["fp32"] > 0
    report = (run_dir / "tune.md").read_text()
    assert "| tokens/s | readings | guards | MFU % |" in report and "| tokens/s (pooled median) | MFU % |" in report


@pytest.mark.slow
def test_tune_for_time_to_target_runs_seeded_finals_and_the_winner_trains_to_the_target(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["--config", TABULAR, "--objective", "time_to_target", "--target", "val_accuracy=0.9", "--runs", "3",
            "--axes", "data.batch_size=32,64", "--set", "data.n_samples=512", "--finalists", "1",
            "--executor", "forked", "--out", str(tmp_path / "t")]  # fmt: skip
    assert tune_cli.cli(argv) == 0
    out = capsys.readouterr().out
    (run_dir,) = (tmp_path / "t").glob("tune-*")
    result = json.loads((run_dir / "tune.json").read_text())
    assert result["objective"] == "time_to_target" and result["target"] == {"metric": "val_accuracy", "value": 0.9}
    assert all(t["score"] > 0 for t in result["trials"])  # 1 / seconds to the target: every configuration reached it
    finals = result["final"]["finalists"]
    assert [len(f["runs"]) for f in finals] == [3, 3] and all(f["status"] == "reached" for f in finals)
    assert [sorted(r["seed"] for r in f["runs"]) for f in finals] == [[42, 43, 44]] * 2
    ids = [json.loads(x)["cell_id"] for x in (run_dir / "cells.jsonl").read_text().splitlines()]
    finals_ids = [i.split("-", 1)[1] for i in ids if "-final-" in i]  # after the search (and any recheck)
    assert finals_ids == ["final-start-s01", "final-f1-s01", "final-f1-s02", "final-start-s02", "final-start-s03",
                          "final-f1-s03"]  # fmt: skip
    assert "Objective: time to val_accuracy >= 0.9" in out and "| configuration | s to target |" in out
    winner = yaml.safe_load((run_dir / "winner.yaml").read_text())
    reached = [r["epochs"] for f in finals if f["values"] == result["winner"] for r in f["runs"]]
    assert winner["train"]["epochs"] == max(1, math.ceil(max(reached)))
    trained = tmp_path / "winner"
    assert train_cli.cli(["--config", str(run_dir / "winner.yaml"), "--out", str(trained)]) == 0
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["best_val_accuracy"] >= 0.9 and metrics["total_epochs"] == winner["train"]["epochs"]


def test_bad_axis_is_rejected_before_anything_runs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert tune_cli.cli(["--config", TABULAR, "--axes", "precision=fp8", "--out", str(tmp_path)]) == 2
    assert "--axes precision=fp8: precision: unknown precision 'fp8'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_train_for_seconds_stops_on_time(monkeypatch: pytest.MonkeyPatch) -> None:
    from trainer_core.trainer import Trainer

    started_at: list[float] = []  # the train seconds already spent when each stretch of steps began
    fit = Trainer.fit

    def counted(self: Trainer, *args: object, **kwargs: object) -> object:
        started_at.append(self.counters["train_seconds"])
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "fit", counted)
    res = train_for_seconds(load_config(None, tiny_overrides()), seconds=0.3)
    assert res["train_seconds"] >= 0.3 and res["steps"] > 0 and 0 <= res["val_accuracy"] <= 1
    assert started_at and all(t < 0.3 for t in started_at)  # no stretch began once the time was spent


@pytest.mark.slow
def test_resume_reuses_measured_configurations(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = [
        "--config",
        TABULAR,
        "--axes",
        "data.batch_size=32,64",
        "--set",
        "data.n_samples=512",
        "--rounds",
        "1",
        "--finalists",
        "1",
        "--executor",
        "forked",
        "--out",
        str(tmp_path),
    ]
    assert tune_cli.cli(argv) == 0
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    first = [json.loads(x) for x in (run_dir / "cells.jsonl").read_text().splitlines()]
    capsys.readouterr()
    assert tune_cli.cli([*argv, "--resume", run_dir.name]) == 0
    launched = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[")]
    records = [json.loads(x) for x in (run_dir / "cells.jsonl").read_text().splitlines()]
    assert records[: len(first)] == first
    # the search's configurations come from cells.jsonl; only the side-by-side finals are measured again
    assert launched and all("-final-" in ln for ln in launched)


def test_final_rounds_shrink_to_fit_the_budget_but_not_below_two() -> None:
    per_round = lambda n: 50.0 * n + 30.0  # noqa: E731  (rounds, then 30 s of contribution cells)
    assert rounds_that_fit(4, spent_s=300.0, budget_s=540.0, cost_s=per_round) == 4  # 300 + 230 fits
    assert rounds_that_fit(4, spent_s=400.0, budget_s=540.0, cost_s=per_round) == 2  # 400 + 130 fits, 400 + 180 not
    assert rounds_that_fit(4, spent_s=600.0, budget_s=540.0, cost_s=per_round) == 2  # never fewer than two


def test_report_says_when_rounds_were_cut() -> None:
    start, winner = {"data.batch_size": 64}, {"data.batch_size": 128}
    final = {
        "rounds": 2,
        "rounds_asked": 4,
        "speedup": 1.5,
        "ci_low": 1.4,
        "ci_high": 1.6,
        "speedup_per_round": [1.4, 1.6],
        "finalists": [{"values": start, "samples_per_s": 100.0}, {"values": winner, "samples_per_s": 150.0}],
    }
    result = {
        "config": "c.yaml",
        "trials": [],
        "search_seconds": 10.0,
        "budget_exhausted": True,
        "start": start,
        "winner": winner,
        "final": final,
        "contributions": [],
        "winner_yaml": "w.yaml",
    }
    text = format_report(result)
    assert "(2 rounds, rotating order; 2 of the 4 asked for: no time left in the budget for more)" in text
    assert "of the 4 asked" not in format_report({**result, "final": {**final, "rounds": 4}})


class FakeCells:
    """TuneCells stand-in: lever ``a`` halves the step, lever ``b`` changes nothing, ``c`` breaks a guard."""

    def __init__(self) -> None:
        self.executor = self
        self.seen: list[str] = []
        self.rng = np.random.default_rng(3)

    def close(self) -> None:
        pass

    def __call__(self, values: dict[str, Any], label: str | None = None) -> CellRecord:
        self.seen.append(str(label))
        step = 0.01 * (0.5 if values["a"] else 1.0)
        steps = list(step * (1 + 0.01 * self.rng.standard_normal(20)))
        broken = values.get("c") == 0  # without c, a guard fails
        guards = {"finite": {"name": "finite", "status": "fail" if broken else "pass", "detail": ""}}
        return CellRecord.model_validate({"cell_id": label, "status": "ok", "samples_per_s": 32 / step,
                                          "items_per_step": 32, "step_s": steps, "guards": guards,
                                          "guards_ok": not broken})  # fmt: skip


class SubstituteCells(FakeCells):
    """Levers ``b`` and ``d`` are substitutes (either one cuts the step by 30%; both, no more than one) when
    ``substitutes``; otherwise neither changes anything."""

    def __init__(self, substitutes: bool) -> None:
        super().__init__()
        self.substitutes = substitutes

    def __call__(self, values: dict[str, Any], label: str | None = None) -> CellRecord:
        record = super().__call__(values, label)
        if not (self.substitutes and (values["b"] or values["d"])):
            return record
        return record.model_copy(update={"step_s": [0.7 * s for s in record.step_s or []]})


def test_throughput_levers_free_alone_are_dropped_together_only_if_that_is_free_too() -> None:
    start, winner = {"a": 0, "b": 0, "c": 0, "d": 0}, {"a": 1, "b": 1, "c": 1, "d": 1}
    cells = SubstituteCells(substitutes=True)
    kept, rows = prune_levers(cells, start, winner, 4, None)  # type: ignore[arg-type]
    assert kept == winner  # without b, d does its work and the reverse: each looks free, together they are not
    by = {r["axis"]: r for r in rows}
    assert by["b"]["why"] == by["d"]["why"] == "slower without them together" and by["b"]["together"]
    assert rows[-1]["axis"] == "together: b, d" and rows[-1]["kept"] and rows[-1]["without"][2] < 0.8
    assert len([x for x in cells.seen if x.startswith("final-pruned-")]) == 4  # four rounds of the winner without both
    pruned, rows = prune_levers(SubstituteCells(substitutes=False), start, winner, 4, None)  # type: ignore[arg-type]
    assert pruned == {"a": 1, "b": 0, "c": 1, "d": 0}
    assert rows[-1]["axis"] == "together: b, d" and not rows[-1]["kept"] and rows[-1]["without"][1] <= 1.0
    assert "**dropped**: not slower without them together" in "\n".join(pruning_section({"pruning": rows}))


def test_every_lever_of_the_winner_must_pay() -> None:
    cells = FakeCells()
    start, winner = {"a": 0, "b": 0, "c": 0}, {"a": 1, "b": 1, "c": 1}
    pruned, rows = prune_levers(cells, start, winner, 4, None)  # type: ignore[arg-type]
    assert pruned == {"a": 1, "b": 0, "c": 1}  # b pays nothing: dropped; c stays (without it a guard fails)
    by = {r["axis"]: r for r in rows}
    assert by["a"]["kept"] and by["a"]["without"][2] < 0.6  # half the throughput without it
    assert not by["b"]["kept"] and by["b"]["without"][1] <= 1.0 <= by["b"]["without"][2]
    assert by["c"]["kept"] and by["c"]["without"] is None and "without it" in by["c"]["why"]
    assert len([x for x in cells.seen if x.startswith("final-winner-")]) == 4  # four rounds of every arm
    # one lever: the finals already measured winner against start side by side; its interval decides
    final = {"speedup": 1.02, "ci_low": 0.97, "ci_high": 1.08}
    assert prune_levers(cells, {"a": 0}, {"a": 1}, 4, final)[0] == {"a": 0}  # type: ignore[arg-type]
    kept = {"speedup": 1.5, "ci_low": 1.3, "ci_high": 1.7}
    assert prune_levers(cells, {"a": 0}, {"a": 1}, 4, kept)[0] == {"a": 1}  # type: ignore[arg-type]
    table = "\n".join(pruning_section({"pruning": rows}))
    assert "| b | " in table and "**dropped**: not slower without it" in table
    assert "| c | without it: " in table and table.count("| kept |") == 3  # the header, a and c
