"""The results history: every run's cells in one SQLite database (``results/history.sqlite`` by default).

Tables: ``runs`` (one per results folder: its id, kind, time, git commit and dirty flag, machine,
torch/CUDA versions, threads, the whole env.json) and ``cells`` (one per cell record: axes, status,
throughput and unit, median step, repeat spread, guards, the record itself with its per-step timings).
A run is written in one transaction, so a killed writer leaves the database as it was; SQLite's own
locking (with a busy timeout) makes concurrent writers safe. ``PRAGMA user_version`` holds the schema
version; :data:`MIGRATIONS` brings an older database up to date. stdlib ``sqlite3`` only: no torch.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.ab.result import AbReport
from bench.cells.contract import CellRecord
from trainer_core.errors import TrainbenchError

SCHEMA_VERSION = 2
MIGRATIONS: dict[int, str] = {  # version -> the SQL that brings version - 1 to it
    1: """
        CREATE TABLE runs (
            run_id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            recorded_at TEXT NOT NULL,
            timestamp TEXT,
            git_commit TEXT,
            git_dirty INTEGER,
            hostname TEXT,
            cpu TEXT,
            gpus TEXT,
            torch TEXT,
            cuda TEXT,
            threads INTEGER,
            env_json TEXT NOT NULL
        );
        CREATE TABLE cells (
            run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            cell_id TEXT,
            axes_json TEXT NOT NULL,
            status TEXT NOT NULL,
            throughput REAL,
            unit TEXT,
            step_ms_median REAL,
            repeat_spread_pct REAL,
            guards_ok INTEGER,
            record_json TEXT NOT NULL,
            PRIMARY KEY (run_id, seq)
        );
        CREATE INDEX cells_by_id ON cells(cell_id);
    """,
    2: """
        CREATE TABLE ab_verdicts (
            run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            a TEXT,
            b TEXT,
            ratio REAL,
            ci_low REAL,
            ci_high REAL,
            verdict TEXT,
            rounds INTEGER,
            min_effect_pct REAL,
            PRIMARY KEY (run_id, name)
        );
    """,
}


class HistoryError(TrainbenchError):
    """The history database cannot be read or written."""


def connect(path: str | Path, create: bool = True) -> sqlite3.Connection:
    """Open (creating it and its folder if needed) and migrate the database at ``path``. ``create=False``
    (the commands that only read): a missing database is an error, and nothing is created: a mistyped
    path must not read as an empty history that has nothing to flag."""
    path = Path(path)
    if not create and not path.is_file():
        raise HistoryError(f"{path}: no history database there (nothing was ever recorded at that path)")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        db = sqlite3.connect(path, timeout=30.0)  # waits for another writer's transaction instead of failing
        db.execute("PRAGMA foreign_keys = ON")
        migrate(db)
    except sqlite3.DatabaseError as e:
        raise HistoryError(f"{path}: not a trainbench history database ({e})") from None
    return db


def migrate(db: sqlite3.Connection) -> None:
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise HistoryError(f"history schema {version} is newer than this trainbench ({SCHEMA_VERSION}): upgrade it")
    for v in range(version + 1, SCHEMA_VERSION + 1):
        with transaction(db):
            db.executescript(MIGRATIONS[v])
            db.execute(f"PRAGMA user_version = {v}")


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """All or nothing: commit at the end, roll back on any error (or a kill, which never commits)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.rollback()
        raise
    db.commit()


def record_run(
    db: sqlite3.Connection,
    run_id: str,
    kind: str,
    env: dict[str, Any],
    records: list[CellRecord],
    ab: AbReport | None = None,
) -> bool:
    """Store a run, its cells and (a ``bench.ab`` run) its verdicts; False (and nothing changed) when
    ``run_id`` is already there, so a finished run is never rewritten by recording it again."""
    if db.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone():
        return False
    machine = next((r.machine for r in records if r.machine), None) or {}
    commit = str(env.get("git_commit") or "")
    with transaction(db):
        db.execute(
            "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run_id,
                kind,
                datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                env.get("timestamp") or env.get("started"),
                commit.removesuffix("-dirty") or None,
                int(commit.endswith("-dirty")) if commit else None,
                machine.get("hostname") or env.get("hostname"),
                machine.get("cpu") or env.get("cpu"),
                json.dumps(machine.get("gpus") or env.get("gpus") or []),
                env.get("torch"),
                env.get("cuda"),
                env.get("threads") or env.get("torch_threads"),
                json.dumps(env, default=str),
            ),
        )
        db.executemany("INSERT INTO cells VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", _cell_rows(run_id, records))
        if ab:
            db.executemany("INSERT INTO ab_verdicts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", _verdict_rows(run_id, ab))
    return True


def _verdict_rows(run_id: str, ab: AbReport) -> list[tuple[Any, ...]]:
    a, b = (json.dumps(asdict(ab.sides[s]), default=str) for s in ("A", "B"))
    return [
        (run_id, name, a, b, v.ratio, v.ci_low, v.ci_high, v.verdict.value, ab.run.rounds, ab.min_effect_pct)
        for name, v in ab.results.items()
    ]


def verdicts(db: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every recorded bench.ab verdict, oldest first."""
    rows = db.execute(
        "SELECT v.run_id, r.recorded_at, v.name, v.a, v.b, v.ratio, v.ci_low, v.ci_high, v.verdict, v.rounds "
        "FROM ab_verdicts v JOIN runs r USING (run_id) ORDER BY r.recorded_at, v.run_id, v.name"
    ).fetchall()
    keys = ("run_id", "recorded_at", "name", "a", "b", "ratio", "ci_low", "ci_high", "verdict", "rounds")
    return [dict(zip(keys, row)) for row in rows]


def series_value(r: CellRecord) -> tuple[float | None, str]:
    """What a cell's series follows, higher better: its throughput, or for a time-to-target cell targets
    reached per hour (3600 / its score), so that a cell slower to its target reads as a regression."""
    t = r.time_to_target
    if t is None:
        return r.rate, r.unit
    return (3600.0 / t.score_s if t.reached and t.score_s else None), "targets/h"


def _cell_rows(run_id: str, records: list[CellRecord]) -> list[tuple[Any, ...]]:
    return [
        (
            run_id,
            i,
            r.cell_id,
            json.dumps(r.axes, sort_keys=True, default=str),
            r.status,
            *series_value(r),
            r.step_ms_median,
            r.repeat_spread_pct,
            None if r.guards_ok is None else int(r.guards_ok),
            r.model_dump_json(),
        )
        for i, r in enumerate(records)
    ]


def runs(db: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every run, oldest first, with its count of cells and of measured ones."""
    rows = db.execute(
        "SELECT r.run_id, r.kind, r.recorded_at, r.git_commit, r.git_dirty, r.hostname, r.cpu, "
        "COUNT(c.seq), SUM(c.status = 'ok') FROM runs r LEFT JOIN cells c USING (run_id) "
        "GROUP BY r.run_id ORDER BY r.recorded_at, r.run_id"
    ).fetchall()
    keys = ("run_id", "kind", "recorded_at", "git_commit", "git_dirty", "hostname", "cpu", "cells", "measured")
    return [dict(zip(keys, row)) for row in rows]


def series(db: sqlite3.Connection, cell_id: str | None = None) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Measured, guard-passing readings per (cell, machine), oldest run first: the series change
    detection reads. A cell is named ``<matrix>/<cell id>`` (two matrices may both have an ``fp32``
    cell, and they are not one series); ``cell_id`` selects by that name or by the bare id. Only cells
    of one machine are compared with each other; bench.ab readings (role ab-A/ab-B) are rounds of an
    A/B, not cells, and stay out."""
    query = (
        "SELECT c.cell_id, COALESCE(json_extract(r.env_json, '$.matrix_name'), ''), r.cpu || ' / ' || r.gpus, "
        "r.run_id, r.recorded_at, r.git_commit, r.git_dirty, c.throughput, c.unit, c.repeat_spread_pct, "
        "json_extract(c.record_json, '$.mem_peak_mb') - json_extract(c.record_json, '$.mem_baseline_mb') "
        "FROM cells c JOIN runs r USING (run_id) "
        "WHERE c.status = 'ok' AND c.guards_ok = 1 AND c.throughput IS NOT NULL "
        "AND COALESCE(json_extract(c.record_json, '$.role'), '') NOT LIKE 'ab-%' "
        "ORDER BY r.recorded_at, r.run_id"
    )
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    keys = ("run_id", "recorded_at", "git_commit", "git_dirty", "throughput", "unit", "repeat_spread_pct",
            "mem_added_mb")  # fmt: skip
    for row in db.execute(query):
        name = f"{row[1]}/{row[0]}" if row[1] else str(row[0])
        if cell_id is None or cell_id in (name, row[0]):
            out.setdefault((name, row[2]), []).append(dict(zip(keys, row[3:])))
    return out


RECORDED, ALREADY = "recorded", "already recorded, left as it is"


def ingest_dir(db: sqlite3.Connection, path: Path, kind: str | None = None) -> str:
    """Record a finished results folder (its cells.jsonl and env.json, and a bench.ab run's ab.json),
    or a pytest-benchmark JSON file. Returns what happened: :data:`RECORDED`, :data:`ALREADY`, or for a
    folder whose cells changed since its run id was recorded, ALREADY with what differs (the recorded
    run stays as it is: a finished run is never rewritten)."""
    from bench.cells.store import read_records

    check_ingestible(path)
    if path.is_file():
        return RECORDED if ingest_pytest_benchmark(db, path) else ALREADY
    env = json.loads((path / "env.json").read_text()) if (path / "env.json").is_file() else {}
    kind = kind or env.get("kind") or ("tune" if path.name.startswith("tune-") else "run")
    ab = AbReport.read(path / "ab.json") if (path / "ab.json").is_file() else None
    records = read_records(path / "cells.jsonl")
    if record_run(db, path.name, kind, env, records, ab):
        return RECORDED
    differs = changed_since_recorded(db, path.name, records)
    return ALREADY + (f"; the folder changed since it was recorded ({differs}): not recorded again" if differs else "")


def check_ingestible(path: Path) -> None:
    """Raise HistoryError unless ``path`` is a results folder (with cells.jsonl) or a pytest-benchmark JSON."""
    if not (path.is_file() and path.suffix == ".json") and not (path / "cells.jsonl").is_file():
        raise HistoryError(f"{path}: no cells.jsonl (expected a results/<run-id> folder or a pytest-benchmark JSON)")


def changed_since_recorded(db: sqlite3.Connection, run_id: str, records: list[CellRecord]) -> str | None:
    """What differs between the cells recorded under ``run_id`` and ``records`` (None: the same)."""
    stored = [row[0] for row in db.execute("SELECT record_json FROM cells WHERE run_id = ? ORDER BY seq", (run_id,))]
    now = [r.model_dump_json() for r in records]
    if len(stored) != len(now):
        return f"{len(stored)} cells recorded, {len(now)} in the folder now"
    changed = [r.cell_id or str(i) for i, (r, old) in enumerate(zip(records, stored)) if r.model_dump_json() != old]
    return f"cells {', '.join(changed[:5])} differ" if changed else None


def ingest_pytest_benchmark(db: sqlite3.Connection, path: Path) -> bool:
    """A pytest-benchmark JSON (``--benchmark-json`` or an autosaved run) as a run of kind
    pytest-benchmark: one cell per benchmark, its timings as the steps. The run id carries a hash of
    the file, so ingesting the same file again changes nothing."""
    import hashlib

    from bench.launch import pytest_bench as pytest_bench

    data = pytest_bench.read_json(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:10]
    return record_run(db, f"pytest-benchmark-{path.stem}-{digest}", "pytest-benchmark", pytest_bench.env(data),
                      pytest_bench.records(data))  # fmt: skip


def check_latest(db: sqlite3.Connection, window: int, min_effect_pct: float) -> list[dict[str, Any]]:
    """For each (cell, machine) with enough history: the latest reading against the ones before it."""
    from bench.stats import step_change, step_change_lower_better

    out = []
    for (cell_id, machine), points in series(db).items():
        verdict = step_change([p["throughput"] for p in points], window, min_effect_pct)
        if verdict is not None:
            out.append({"cell_id": cell_id, "machine": machine, "unit": points[-1]["unit"], **verdict})
        # What the configuration added to memory, lower better: a memory regression is a regression too.
        memory = [p["mem_added_mb"] for p in points if p.get("mem_added_mb") is not None]
        grown = step_change_lower_better(memory, window, min_effect_pct) if len(memory) == len(points) else None
        if grown is not None:
            out.append({"cell_id": cell_id, "machine": machine, "unit": "MiB added (memory)", **grown})
    return out


def record_in_history(path: Path, run_dir: Path, kind: str | None = None) -> str:
    """Record a finished run in the database at ``path``; one line saying where (for the CLIs)."""
    db = connect(path)
    try:
        outcome = ingest_dir(db, run_dir, kind)
    finally:
        db.close()
    return f"{path} ({outcome})"
