"""What ``bench.ab`` compares: each side's code (this checkout or a git revision's worktree) and, for
cells, the cell spec each side runs (a training config, or one cell of a matrix picked by ``--cell``).

A side given as an existing file is that config with this checkout's code; a side given as a git
revision (or ``worktree``: this checkout) runs ``--config`` (or the other side's file) with that
revision's code. Specs are built and validated here, by this checkout, before anything runs; the
revision's code then reads the spec, so it must share the cell contract (``bench.cells.contract``).
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.ab.outputs import noise_notes, open_ab_dir, write_outputs
from bench.ab.result import AbReport, AbSide
from bench.ab.subjects import (
    FORKED,
    READINGS,
    STEPS,
    TURN_MS,
    CellSubject,
    LockstepSubject,
    PytestSubject,
    Side,
    ab_measure,
)
from bench.cells.contract import CellSpec, GuardsConfig
from bench.launch.executors import build_executor, executor_name
from bench.launch.forked import SERVER_ROUNDS
from bench.launch.revisions import REPO_ROOT, check_code_root, resolve, worktree
from bench.launch.server import CellServer
from bench.matrix import (
    expand,
    load_matrix,
    parse_filter,
    preflight_config,
    resolve_device_name,
    select,
    static_skip_reason,
)
from bench.paired.engine import ReadingError, Rounds, RoundsPlan, Subject, paired_run
from trainer_core.config import RunConfig, apply_overrides, parse_override, read_yaml
from trainer_core.errors import ConfigError
from trainer_core.host_memory import malloc_unsupported_reason
from trainer_core.loading import validate_config

WORKTREE = "worktree"  # a side that runs this checkout's code as it is, uncommitted changes included

# Settings applied to both sides of a CPU A/B when the user set them on neither side (in the files or with
# --set), each with why: they remove spread between processes of the same code without changing what is
# compared (docs/measurements.md: the per-round spread with glibc's default malloc policy and with retain).
VARIANCE_DEFAULTS = {
    "train.malloc": (
        "retain",
        "glibc's default policy serves each step's large buffers from mmap or the heap depending on the "
        "process's history, so processes of the same code run at different speeds",
    ),
}


def resolve_sides(
    a: str, b: str, config: str | None, repo: Path, stack: ExitStack, files_allowed: bool = True
) -> tuple[Side, Side]:
    """The two sides; revisions checked out (one worktree per distinct commit) for as long as ``stack``."""
    trees: dict[str, Path] = {}
    sides = []
    for name, given in (("A", a), ("B", b)):
        flag = f"--{name.lower()} {given}"
        if given != WORKTREE and Path(given).is_file():
            if not files_allowed:
                raise ConfigError(f"{flag}: with --pytest, each side is a git revision or '{WORKTREE}'")
            sides.append(Side(name, given, REPO_ROOT, None, given))
            continue
        commit = None if given == WORKTREE else resolve(repo, given)
        if given != WORKTREE and commit is None:
            raise ConfigError(f"{flag}: neither a file nor a git revision of {repo}")
        if commit is not None and commit not in trees:
            trees[commit] = stack.enter_context(worktree(repo, commit))
            check_code_root(trees[commit])
        sides.append(Side(name, given, trees[commit] if commit else REPO_ROOT, commit, config))
    if files_allowed:
        fallback = config or next((s.config for s in sides if s.config), None)
        for s in sides:
            s.config = s.config or fallback
            if s.config is None:
                raise ConfigError("--config: needed when neither --a nor --b is a config file")
    return sides[0], sides[1]


def cell_config(path: str, cell: list[str], overrides: list[str]) -> tuple[RunConfig, dict, GuardsConfig | None, str]:
    """(config, axes, the matrix's guards, its measure.mode) of a training config, or of the one matrix cell
    ``cell`` picks."""
    if not Path(path).is_file():
        raise ConfigError(f"{path}: no such config file")
    raw = read_yaml(path)
    sets = dict(parse_override(o) for o in overrides)
    if "axes" not in raw:
        if cell:
            raise ConfigError(f"--cell {' '.join(cell)}: {path} is a training config, not a matrix")
        return validate_config(apply_overrides(raw, sets), source=path, overridden=set(sets)), {}, None, "throughput"
    spec = load_matrix(path)
    cells = select(expand(spec, source=path), parse_filter(cell)) if cell else expand(spec, source=path)
    if len(cells) != 1:
        ids = ", ".join(c.cell_id for c in cells[:8]) + (", ..." if len(cells) > 8 else "")
        what = f"--cell {' '.join(cell)}" if cell else "no --cell"
        raise ConfigError(f"{path}: {what} picks {len(cells)} cells ({ids}); pick exactly one")
    picked = cells[0]
    config = validate_config(apply_overrides(picked.config.to_dict(), sets), source=path, overridden=set(sets))
    if spec.measure.mode not in ("throughput", "inference"):
        raise ConfigError(f"{path}: measure.mode {spec.measure.mode}: bench.ab reads throughput or inference cells")
    return config, picked.axes, spec.guards, spec.measure.mode


def mentions(raw: Any, key: str) -> bool:
    """Whether parsed YAML sets dotted ``key`` anywhere: nested (``train: {malloc: ...}``) or flat (a matrix
    axis, a variant, an ``include`` entry)."""
    if isinstance(raw, dict):
        head, _, rest = key.partition(".")
        if key in raw or (rest and isinstance(raw.get(head), dict) and mentions(raw[head], rest)):
            return True
        return any(mentions(v, key) for v in raw.values())
    return isinstance(raw, list) and any(mentions(v, key) for v in raw)


def variance_defaults(what: AbWhat, sides: tuple[Side, Side], specs: dict[str, CellSpec]) -> dict[str, Any]:
    """The :data:`VARIANCE_DEFAULTS` this A/B gets: CPU cells, the setting works here, and neither side's file
    nor ``--set`` names it (an A/B of the setting itself keeps the user's values)."""
    if what.pytest or any(s.device != "cpu" for s in specs.values()):
        return {}
    named = {parse_override(o)[0] for sets in what.sets.values() for o in sets}
    raws = [read_yaml(s.config) for s in sides if s.config]
    out = {k: v for k, (v, _) in VARIANCE_DEFAULTS.items() if k not in named and not any(mentions(r, k) for r in raws)}
    if "train.malloc" in out and malloc_unsupported_reason(out["train.malloc"]):
        del out["train.malloc"]
    return out


def defaults_notes(applied: dict[str, Any]) -> list[str]:
    return [
        f"both sides ran with {k}={v} (you set it on neither side): {VARIANCE_DEFAULTS[k][1]}; "
        f"--set {k}=... on the command line measures another value"
        for k, v in applied.items()
    ]


def cell_spec(side: Side, cell: list[str], overrides: list[str], threads: int, reading_s: float) -> CellSpec:
    """The spec ``side`` runs in every reading (guards: the matrix's, else the quick set tune uses)."""
    from bench.guards.checks import QUICK_GUARDS

    assert side.config is not None
    config, axes, guards, mode = cell_config(side.config, cell, overrides)
    preflight_config(config, side.config)
    skip = static_skip_reason(config)
    if skip:
        raise ConfigError(f"{side.config}: this cell cannot run here: {skip}")
    return CellSpec(
        cell_id=side.name,
        axes={**axes, "ab_side": side.name},
        config=config.to_dict(),
        device=resolve_device_name(config.device),
        threads=threads,
        measure=ab_measure(reading_s, mode),
        guards=guards or QUICK_GUARDS,
    )


def renew_every(what: AbWhat) -> int:
    """Rounds between server renewals: ``--renew-every``, else SERVER_ROUNDS. Renewing every round when the
    sides run different code was measured (docs/measurements.md, revision A/A): it halved the rounds a budget
    buys and did not narrow the rounds' spread, which the machine's own speed changes dominate."""
    return what.renew_every or SERVER_ROUNDS


def executor_for(what: AbWhat, sides: tuple[Side, Side]) -> tuple[str, str]:
    """(the executor's name, how ab.md describes the readings). ``--executor`` when given; else
    ``--readings``: forked when every side's code has the server (a revision from before it has not: then
    both sides start fresh interpreters, so they are read alike), else local."""
    if what.executor:
        if executor_name(what.executor) == "forked" and not all(CellServer.available(s.code_root) for s in sides):
            raise ConfigError("--executor forked: a side's code has no bench.cell_server (or this system no pidfds)")
        return what.executor, f"started by the {what.executor} executor"
    if what.readings == FORKED and all(CellServer.available(s.code_root) for s in sides):
        every = renew_every(what)
        return "forked", (
            "each a process forked from a server that imported torch once (bench.cell_server), one server per "
            "code, renewed " + ("every round" if every == 1 else f"every {every} rounds")
        )
    why = " (forked readings need Linux and bench.cell_server in both sides' code)" if what.readings == FORKED else ""
    return "local", f"each a new interpreter{why}"


@dataclass
class AbWhat:
    """What both sides measure: a config (and matrix cell) with per-side overrides, or pytest-benchmark
    tests; the repository revisions come from; threads and timed seconds of a cell reading; how a cell
    reading starts (``forked`` from a server that imported torch once, or a ``fresh`` interpreter), or
    the executor that starts it (``--executor``, which takes precedence) with its ``--executor-opt`` settings."""

    config: str | None = None
    cell: list[str] = field(default_factory=list)
    sets: dict[str, list[str]] = field(default_factory=lambda: {"A": [], "B": []})
    pytest: str | None = None
    group: str | None = None
    repo: Path = REPO_ROOT
    threads: int = 1
    reading_s: float = 2.0
    readings: str = "forked"
    executor: str | None = None
    executor_options: dict[str, str] = field(default_factory=dict)
    renew_every: int | None = None
    interleave: str | None = None  # None: steps where they can be taken in turns (interleave_for)
    turn_ms: float | None = None  # with steps in turns: how long a side keeps the baton (None: TURN_MS; 0: a step)


@dataclass
class AbOutcome:
    """A finished A/B run: its folder, and its report and report.html, or why it stopped (a failed or
    broken reading)."""

    run_dir: Path
    report: AbReport | None
    error: str | None = None
    html: Path | None = None


@dataclass(frozen=True)
class Interleaving:
    """How a round reads the two sides: one reading after the other, or both cells at once with their steps
    in turns of ``turn_ms`` (0: one step); ``line`` is what the readings line adds (and why)."""

    mode: str
    line: str
    turn_ms: float = 0.0


def subject_for(
    what: AbWhat,
    sides: tuple[Side, Side],
    specs: dict[str, CellSpec],
    executor: str | None,
    run_dir: Path,
    interleave: Interleaving | None = None,
) -> Subject:
    by_name = {s.name: s for s in sides}
    if what.pytest:
        return PytestSubject(by_name, what.pytest, what.group, run_dir)
    assert executor is not None
    options = what.executor_options if executor == what.executor else {}  # settings belong to --executor's
    executor_built = build_executor(executor, options, run_dir)
    if interleave is None or interleave.mode != STEPS:
        return CellSubject(by_name, specs, run_dir, executor_built, renew_every(what))
    partner = build_executor(executor, options, run_dir)  # B's own: a forked server runs one cell at a time
    return LockstepSubject(by_name, specs, run_dir, executor_built, renew_every(what), partner, interleave.turn_ms)


def interleave_for(what: AbWhat, sides: tuple[Side, Side], specs: dict[str, CellSpec], executor: str) -> Interleaving:
    """Readings or steps, with what the readings line adds. ``--interleave`` when given (steps refused, with
    the reason, where they cannot work); by default steps for CPU cells (:func:`default_refusal`): on a shared
    machine whose speed changes every few seconds they narrowed a revision A/A's per-round spread by an order
    of magnitude (docs/measurements.md)."""
    why = "pytest-benchmark tests are read one side at a time" if what.pytest else None
    why = why or lockstep_refusal(what, sides, specs, executor)
    if what.interleave == STEPS and why:
        raise ConfigError(f"--interleave {STEPS}: {why}")
    if what.interleave == READINGS:
        why = "--interleave readings"
    if why is None and what.interleave is None:
        why = default_refusal(specs)
    if why is None:
        ms, turns = turns_for(what, sides)
        return Interleaving(STEPS, f"; both sides' cells run at once, their timed steps in {turns} (lockstep)", ms)
    if what.turn_ms is not None:
        raise ConfigError(f"--turn-ms {what.turn_ms:g}: only with steps in turns, and here {why}")
    return Interleaving(READINGS, f"; one side's reading after the other's ({why})")


def default_refusal(specs: dict[str, CellSpec]) -> str | None:
    """Why steps in turns are not the default here: on CPU they are, for two revisions and two configs alike.
    The step that opens a turn pays for the other side's use of the caches, about the same time whatever the
    workload, so it is left untimed (turns of ``TURN_MS``); counted, it made a side with short steps look
    slower than one with long steps (docs/measurements.md, "What a turn costs")."""
    if any(s.device != "cpu" for s in specs.values()):
        return "steps in turns are the default on CPU only"
    return None


def turns_for(what: AbWhat, sides: tuple[Side, Side]) -> tuple[float, str]:
    """How long a side keeps the baton in turns (``--turn-ms``, else TURN_MS), and how the readings line
    says it. A side whose code predates longer turns (its cells refuse the key) takes turns of one step,
    and the line says why; asked for explicitly, that is an error."""
    ms = TURN_MS if what.turn_ms is None else what.turn_ms
    old = [s for s in sides if ms and not knows_turn_ms(s.code_root)]
    if old and what.turn_ms is not None:
        raise ConfigError(f"--turn-ms {ms:g}: {old[0].name}'s code ({old[0].given}) predates turns of several steps")
    if old:
        return 0.0, f"turns of one step ({old[0].name}'s code ({old[0].given}) predates longer turns)"
    return ms, f"turns of {ms:g} ms, each turn's first step untimed" if ms else "turns of one step"


def knows_turn_ms(code_root: Path) -> bool:
    """Whether the cell contract at ``code_root`` has ``LockstepSpec.turn_ms`` (added after lockstep)."""
    contract = code_root / "bench" / "cells" / "contract.py"
    return contract.is_file() and "turn_ms" in contract.read_text(encoding="utf-8")


def lockstep_refusal(what: AbWhat, sides: tuple[Side, Side], specs: dict[str, CellSpec], executor: str) -> str | None:
    """Why this A/B cannot take its two cells' steps in turns; None when it can."""
    if executor not in ("local", "forked"):
        return f"the {executor} executor may run the two cells on different machines or at different times"
    for s in sides:
        if not (s.code_root / "bench" / "measure" / "lockstep.py").is_file():
            return f"{s.name}'s code ({s.given}) predates lockstep readings"
    for spec in specs.values():
        if spec.measure.mode != "throughput":
            return f"{spec.measure.mode} cells have no training steps to take in turns"
        if spec.config.get("train", {}).get("strategy", "single") != "single":
            return "a data-parallel cell's ranks step together, not in turns with another cell"
        if spec.config.get("data", {}).get("num_workers", 0):
            return "a side's loader workers would prepare batches beside the other side's timed steps"
    return None


def print_round(r: int, rounds: Rounds) -> None:
    said = [f"{k}: B/A {v.ratio:.3f} [{v.ci_low:.3f}, {v.ci_high:.3f}]" for k, v in rounds.compare("A", "B", 0).items()]
    print(f"round {r}: {'; '.join(said)}", flush=True)


def measure_ab(a: str, b: str, what: AbWhat, plan: RoundsPlan, out: Path) -> AbOutcome:
    """Resolve and check both sides, then the interleaved rounds in results/ab-<time>/; ab.json, ab.md
    and report.html are written when it finishes. Bad input raises ConfigError before anything is written."""
    from bench.report.html import folder_report

    with ExitStack() as stack:
        sides = resolve_sides(a, b, what.config, what.repo, stack, files_allowed=not what.pytest)
        specs = {} if what.pytest else {s.name: cell_spec(s, what.cell, what.sets[s.name], what.threads,
                                                          what.reading_s) for s in sides}  # fmt: skip
        applied = variance_defaults(what, sides, specs)
        if applied:
            given = [f"{k}={v}" for k, v in applied.items()]
            specs = {s.name: cell_spec(s, what.cell, given + what.sets[s.name], what.threads, what.reading_s)
                     for s in sides}  # fmt: skip
        executor, readings = (None, None) if what.pytest else executor_for(what, sides)
        interleave = None if what.pytest else interleave_for(what, sides, specs, str(executor))
        readings = readings and interleave and readings + interleave.line
        run_dir = open_ab_dir(
            out, sides, what.threads, {"cell": what.cell, "overrides": what.sets, "pytest": what.pytest}
        )
        subject = subject_for(what, sides, specs, executor, run_dir, interleave)
        stack.callback(subject.close)
        for s in sides:
            print(s.describe(), flush=True)
        if readings:
            print(f"readings: {readings}", flush=True)
        try:
            run = paired_run(subject, ("A", "B"), plan, on_round=print_round)
        except ReadingError as e:
            return AbOutcome(run_dir, None, str(e))
    configs = {} if what.pytest else {n: s.config for n, s in subject.specs.items()}  # type: ignore[attr-defined]
    ab_sides = {s.name: AbSide(s.given, s.commit, s.config, s.describe()) for s in sides}
    report = AbReport(
        ab_sides,
        plan.order,
        plan.min_effect_pct,
        plan.budget_s,
        run,
        readings,
        defaults_notes(applied) + noise_notes(run, configs),
    )
    write_outputs(run_dir, report)
    return AbOutcome(run_dir, report, html=folder_report(run_dir))
