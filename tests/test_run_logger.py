import json
import math
from pathlib import Path

from trainer_core.config import LoggingConfig
from trainer_core.run_logger import RunLogger


def test_jsonl_and_tensorboard_carry_the_same_scalars(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = RunLogger(tmp_path, LoggingConfig())
    log.scalars("train", 5, {"loss": 0.25, "lr": 0.1, "grad_norm": None})
    log.scalars("epoch", 1, {"val_loss": math.nan})
    log.close()
    records = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert records[0]["kind"] == "train" and records[0]["loss"] == 0.25 and "grad_norm" not in records[0]
    assert records[1]["val_loss"] == "nan"  # stays valid JSON
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert {"train/loss", "train/lr", "epoch/val_loss"} <= set(acc.Tags()["scalars"])
    (event,) = acc.Scalars("train/loss")
    assert event.step == 5 and event.value == 0.25


def test_logging_can_be_switched_off(tmp_path: Path) -> None:
    log = RunLogger(tmp_path / "r", LoggingConfig(tensorboard=False, jsonl=False))
    log.scalars("train", 1, {"loss": 1.0})
    log.close()
    assert not (tmp_path / "r").exists()
