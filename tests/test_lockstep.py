"""Two cells taking turns step by step (bench.measure.lockstep): the baton alternates their timed steps, a
side with steps left after its partner is done goes on alone (counted), neither runs its post-processing
beside the other's timed steps, and a silent partner is waited on only up to the timeout. Two threads stand
in for the two processes: the protocol is the same bytes through the same named pipes."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch

from bench.cells.contract import LockstepSpec
from bench.launch.pipes import make_channels
from bench.measure.lockstep import Baton, in_turns_only, lockstep, lockstep_figures
from bench.measure.timing import StepTimer
from trainer_core.hooks import StepResult


def specs(tmp_path: Path, timeout_s: float = 30.0, turn_ms: float = 0.0) -> dict[str, LockstepSpec]:
    ch = make_channels(tmp_path / "pipes", ("A", "B"))
    return {arm: LockstepSpec(read_pipe=ch[arm][0], write_pipe=ch[arm][1], first=arm == "A", timeout_s=timeout_s,
                              turn_ms=turn_ms)
            for arm in ("A", "B")}  # fmt: skip


def step(timer: StepTimer, log: list[str], name: str, seconds: float = 0.002) -> None:
    """A timed step as the Trainer takes it: its work, then the hooks' step end."""
    log.append(name)
    time.sleep(seconds)
    timer.on_step_end(None, StepResult(step=0, batch_size=1, loss=torch.zeros(()), grad_norm=None, skipped=False))


def side(spec: LockstepSpec, steps: int, log: list[str], name: str, out: dict[str, object]) -> None:
    timer = StepTimer(torch.device("cpu"))
    with lockstep(spec, timer) as baton:
        timer.start()
        for _ in range(steps):
            step(timer, log, name, 0.002 if name == "A" else 0.030)
        out[name] = (timer.stop(), baton)
    log.append(f"{name}-after")  # evaluation, guards: never beside the other's timed steps


def run_pair(tmp_path: Path, a_steps: int, b_steps: int, turn_ms: float = 0.0) -> tuple[list[str], dict[str, object]]:
    s, log, out = specs(tmp_path, turn_ms=turn_ms), [], {}
    threads = [threading.Thread(target=side, args=(s["A"], a_steps, log, "A", out)),
               threading.Thread(target=side, args=(s["B"], b_steps, log, "B", out))]  # fmt: skip
    threads[1].start()  # B gets ready first: A still takes the first step
    time.sleep(0.05)
    threads[0].start()
    for t in threads:
        t.join(timeout=30)
    return log, out


def test_two_sides_take_their_timed_steps_in_turns_and_finish_together(tmp_path: Path) -> None:
    log, out = run_pair(tmp_path, 6, 6)
    assert log[:12] == ["A", "B"] * 6
    assert sorted(log[12:]) == ["A-after", "B-after"]
    for name in ("A", "B"):
        records, baton = out[name]
        assert len(records) == 6 and baton.alone_steps == 0 and not baton.silent
    # the partner's step is not this side's time: A's steps read its own 2 ms, not B's 30 ms on top
    a_steps = sorted(r["step_s"] for r in out["A"][0])
    assert a_steps[3] < 0.020 and sorted(r["step_s"] for r in out["B"][0])[3] >= 0.030


def test_a_turn_lasts_its_time_so_sides_with_different_steps_read_together(tmp_path: Path) -> None:
    # A's steps take 2 ms, B's 30 ms: in turns of 50 ms A takes about 20 steps a turn, B two, and both
    # sides' timed steps are over after a similar number of turns (in turns of one step each, A would be
    # done after 6 of its steps and take the rest alone)
    log, out = run_pair(tmp_path, 40, 4, turn_ms=50)
    turns = [name for i, name in enumerate(log) if name in "AB" and (i == 0 or log[i - 1] != name)]
    assert turns[:4] == ["A", "B", "A", "B"]
    b_turn = [len(run) for run in "".join(n for n in log if n in "AB").split("A") if run]
    assert b_turn == [2, 2]  # B: at least two steps a turn, and 50 ms (two of its 30 ms steps)
    # A's first turn: about 50 ms of 2 ms steps (sleeps: never shorter, but late to wake on a busy machine)
    assert 5 <= log.index("B") <= 30
    assert sorted(r["step_s"] for r in out["A"][0])[5] < 0.020 <= 0.030 <= min(r["step_s"] for r in out["B"][0])


def test_a_side_with_steps_left_goes_on_alone_and_says_how_many(tmp_path: Path) -> None:
    log, out = run_pair(tmp_path, 3, 7)
    assert log[:6] == ["A", "B"] * 3
    assert log[6:10] == ["B"] * 4  # A waited for B's timed steps to end before its own post-processing
    assert sorted(log[10:]) == ["A-after", "B-after"]
    assert out["B"][1].alone_steps == 4 and out["A"][1].alone_steps == 0
    assert [r["alone"] for r in out["B"][0]] == [0.0] * 3 + [1.0] * 4  # each record says so (the cell counts them)
    assert lockstep_figures(out["B"][1], out["B"][0]) == {"lockstep_alone_steps": 4, "lockstep_partner_silent": False}


def test_a_partner_that_never_comes_is_waited_on_only_up_to_the_timeout(tmp_path: Path) -> None:
    spec = specs(tmp_path, timeout_s=0.3)["A"]
    timer, log = StepTimer(torch.device("cpu")), []
    t0 = time.perf_counter()
    with lockstep(spec, timer) as baton:
        timer.start()
        for _ in range(3):
            step(timer, log, "A")
    assert isinstance(baton, Baton) and baton.silent and baton.alone_steps == 3
    assert time.perf_counter() - t0 < 3


def test_without_a_partner_nothing_changes(tmp_path: Path) -> None:
    timer, log = StepTimer(torch.device("cpu")), []
    with lockstep(None, timer) as baton:
        timer.start()
        step(timer, log, "A")
    assert baton is None and timer.baton is None and len(timer.stop()) == 1


@pytest.mark.parametrize("names", [("A", "B"), ("B", "A")])
def test_each_side_reads_what_the_other_writes(tmp_path: Path, names: tuple[str, str]) -> None:
    ch = make_channels(tmp_path, names)
    assert ch[names[0]] == tuple(reversed(ch[names[1]])) and all(Path(p).is_fifo() for p in ch[names[0]])


def test_a_reading_keeps_only_the_steps_taken_in_turns() -> None:
    steps = [{"step_s": 0.01, "alone": 0.0}, {"step_s": 0.01, "alone": 0.0}, {"step_s": 0.02, "alone": 1.0}]
    raw = {"steps": steps, "repeat_of_step": [0, 0, 0], "warmup_steps": 5}
    kept = in_turns_only(raw)
    assert kept["steps"] == steps[:2] and kept["repeat_of_step"] == [0, 0] and kept["warmup_steps"] == 5
    everything_alone = {"steps": steps[2:], "repeat_of_step": [0]}  # a partner that never came: nothing to drop to
    assert in_turns_only(everything_alone) == everything_alone


def test_the_step_that_opens_a_turn_is_left_out_of_the_reading(tmp_path: Path) -> None:
    log, out = run_pair(tmp_path, 6, 6, turn_ms=1)  # 1 ms: two steps a turn (the least a turn takes)
    assert log[:12] == ["A", "A", "B", "B"] * 3
    for name in ("A", "B"):
        records = out[name][0]
        assert [r["turn_opening"] for r in records] == [1.0, 0.0] * 3
        raw = {"steps": records, "repeat_of_step": [0] * 6}
        assert in_turns_only(raw)["steps"] == [records[i] for i in (1, 3, 5)]
    # turns of one step: every step opens one, so none is marked (and none dropped)
    assert all("turn_opening" not in r for r in run_pair(tmp_path / "one", 2, 2)[1]["A"][0])
