"""Metric logging: TensorBoard scalars and a JSON-lines log carrying the same numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from trainer_core.config import LoggingConfig
from trainer_core.provenance import utc_timestamp


def _jsonable(v: Any) -> Any:
    # JSON has no NaN/inf: write them as strings so the file stays valid JSON for any reader.
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


class RunLogger:
    """Writes ``<run>/log.jsonl`` (appended across resumes) and TensorBoard events in ``<run>/tensorboard``."""

    def __init__(self, run_dir: str | Path, cfg: LoggingConfig) -> None:
        self.run_dir = Path(run_dir)
        self.cfg = cfg
        self._jsonl = None
        self._tb = None
        if cfg.jsonl:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._jsonl = open(self.run_dir / "log.jsonl", "a", encoding="utf-8")  # noqa: SIM115  (closed by close())
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))

    def event(self, kind: str, **fields: Any) -> None:
        """A JSON-lines record that is not a scalar series (run start, resume, notes)."""
        if self._jsonl:
            rec = {"kind": kind, "time": utc_timestamp(), **{k: _jsonable(v) for k, v in fields.items()}}
            self._jsonl.write(json.dumps(rec) + "\n")
            self._jsonl.flush()

    def scalars(self, kind: str, step: int, values: dict[str, float | int | None], **extra: Any) -> None:
        """Scalars under ``kind/`` in TensorBoard, and one JSON-lines record with the same values."""
        clean = {k: v for k, v in values.items() if v is not None}
        if self._tb:
            for k, v in clean.items():
                self._tb.add_scalar(f"{kind}/{k}", v, step)
        self.event(kind, step=step, **extra, **clean)

    def close(self) -> None:
        if self._jsonl:
            self._jsonl.close()
            self._jsonl = None
        if self._tb:
            self._tb.close()
            self._tb = None
