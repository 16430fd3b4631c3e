"""A training run's folder: what it holds, where a resume starts, and how earlier outputs are kept.

Nothing a run has written is lost by starting, resuming or extending it:

- a fresh start refuses a folder that already holds a run;
- ``--resume auto`` continues from ``<checkpoints>/last_model.pt``, and refuses a folder that holds a
  run but no such checkpoint (rather than starting over it);
- ``config.yaml`` is the run's first config; a resume whose config differs adds ``config.resume-N.yaml``;
- ``log.jsonl`` is appended to and TensorBoard adds an events file;
- the checkpoints move on with the run (``last``: the newest position, ``best``: the best so far);
- when a finished run is extended, its final outputs (``metrics.json``, ``learning_curves.png``) are
  moved aside as ``metrics.step<N>.json`` / ``learning_curves.step<N>.png`` before new ones are written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from trainer_core import checkpoint as ck
from trainer_core.errors import ConfigError

CONFIG_NAME, METRICS_NAME, LOG_NAME, CURVES_NAME = "config.yaml", "metrics.json", "log.jsonl", "learning_curves.png"
FINAL_OUTPUTS = (METRICS_NAME, CURVES_NAME)


class RunDir:
    """The folder ``root`` of one training run, with its checkpoints in ``root / checkpoint_subdir``."""

    def __init__(self, root: str | Path, checkpoint_subdir: str = "checkpoints") -> None:
        self.root = Path(root)
        self.checkpoints = self.root / checkpoint_subdir
        self.last = self.checkpoints / ck.LAST_NAME

    def has_outputs(self) -> bool:
        """Does the folder hold anything a run writes?"""
        names = (CONFIG_NAME, METRICS_NAME, LOG_NAME, CURVES_NAME)
        return (
            any((self.root / n).exists() for n in names)
            or (self.root / "tensorboard").exists()
            or (self.checkpoints.is_dir() and any(self.checkpoints.glob("*.pt")))
        )

    def resume_point(self, resume: str | None) -> Path | None:
        """The checkpoint to continue from (``resume``: None, ``auto`` or a path), or None for a fresh
        start; a :class:`ConfigError` where starting or resuming would write over another run."""
        if resume is None:
            if self.has_outputs():
                raise ConfigError(
                    f"--out {self.root}: already holds a run; pass --resume auto to continue it, "
                    "or choose another --out"
                )
            return None
        if resume == "auto":
            if self.last.exists():
                return self.last
            if self.has_outputs():
                raise ConfigError(
                    f"--out {self.root}: holds a run but no {self.last.relative_to(self.root)} to resume from "
                    "(was checkpoint.save_last off?); choose another --out"
                )
            return None
        path = Path(resume)
        if self.has_outputs() and path.resolve().parent != self.checkpoints.resolve():
            raise ConfigError(f"--resume {resume}: --out {self.root} holds another run; resume into an empty --out")
        return path

    def write_config(self, config: dict[str, Any]) -> Path:
        """``config.yaml`` for a new run; a resumed run keeps it and records a changed config beside it."""
        text = yaml.safe_dump(config, sort_keys=False)
        first = self.root / CONFIG_NAME
        if not first.exists():
            first.write_text(text)
            return first
        versions = [first, *sorted(self.root.glob("config.resume-*.yaml"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))]
        if versions[-1].read_text() == text:
            return versions[-1]
        path = self.root / f"config.resume-{len(versions)}.yaml"
        path.write_text(text)
        return path

    def archive_finals(self) -> list[Path]:
        """Move the final outputs of an earlier finish aside (named by the step it finished at)."""
        metrics = self.root / METRICS_NAME
        if not metrics.exists():
            return []
        try:
            step = int(json.loads(metrics.read_text()).get("global_step"))
        except (ValueError, TypeError, json.JSONDecodeError):
            step = len(list(self.root.glob("metrics.step*.json")))
        moved = []
        for name in FINAL_OUTPUTS:
            src = self.root / name
            if src.exists():
                dst = src.with_name(f"{src.stem}.step{step}{src.suffix}")
                src.replace(dst)
                moved.append(dst)
        return moved
