"""A ``bench.ab`` run's folder: results/ab-<time>/ with env.json (provenance, both sides, the command),
then ab.json (:class:`~bench.ab.result.AbReport`) and ab.md, and the notes a noisy run deserves."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from bench.ab.report import ab_markdown
from bench.ab.result import AbReport
from bench.ab.subjects import Side
from bench.matrix import resolve_device_name
from bench.paired.engine import ReadingError
from bench.paired.result import PairedRun
from trainer_core.provenance import environment_info


def open_ab_dir(out: Path, sides: tuple[Side, Side], threads: int, extra: dict[str, Any]) -> Path:
    """results/ab-<time>/ with env.json: provenance, both sides (given, commit, config), the command."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    out.mkdir(parents=True, exist_ok=True)
    for n in range(1, 100):  # two runs started in the same second (a bisection's probes) get their own
        run_dir = out / (f"ab-{stamp}" if n == 1 else f"ab-{stamp}-{n}")
        try:
            run_dir.mkdir()
            break
        except FileExistsError:
            continue
    else:
        raise ReadingError(f"{out}: 99 A/B runs started in the second {stamp}; not overwriting any")
    env = {
        **environment_info(),
        "kind": "ab",
        "command": sys.argv,
        "threads": threads,
        "sides": {s.name: {"given": s.given, "commit": s.commit, "config": s.config} for s in sides},
        **extra,
    }
    (run_dir / "env.json").write_text(json.dumps(env, indent=2, default=str) + "\n")
    return run_dir


def write_outputs(run_dir: Path, report: AbReport) -> list[Path]:
    report.write(run_dir / "ab.json")
    (run_dir / "ab.md").write_text(ab_markdown(report) + "\n")
    return [run_dir / "ab.json", run_dir / "ab.md", run_dir / "cells.jsonl"]


# The spread (sd of the log per-round ratios) above which a run says its rounds disagree widely: in the
# A/B experiment of docs/measurements.md the runs' spreads had a median of 7%, and the runs above 10% got
# intervals 23-35% wide from their 7 rounds.
NOISY_ROUND_SD = 0.10


def noise_notes(run: PairedRun, configs: dict[str, dict[str, Any]]) -> list[str]:
    """What to tell the user when the rounds disagree widely: how much, and for CPU cells on glibc's
    default malloc policy (whose large blocks come from mmap or the heap depending on each process's
    history, so processes of the same code can run at different speeds) the setting that removes that."""
    notes = []
    for key, v in run.results.items():
        sd = v.round_sd()
        if sd is None or sd <= NOISY_ROUND_SD:
            continue
        note = f"{key}: the per-round ratios spread by {100 * sd:.0f}% (sd of their logs): a narrow interval needs "
        note += "many rounds"
        if any(_cpu_default_malloc(c) for c in configs.values()):
            note += (
                "; on a CPU, glibc's default malloc policy places large buffers per process (heap or mmap), "
                "one source of that: --set train.malloc=retain on both sides removes it"
            )
        notes.append(note)
    return notes


def _cpu_default_malloc(config: dict[str, Any]) -> bool:
    cpu = resolve_device_name(str(config.get("device", "auto"))) == "cpu"
    return cpu and config.get("train", {}).get("malloc", "default") == "default"
