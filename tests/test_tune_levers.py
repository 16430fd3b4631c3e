from __future__ import annotations

from bench.tune.levers import judged_by_finals, lever_row, levers_of, pruned_by, settle_together, without

START = {"lr": 0.01, "batch": 64, "precision": "fp32"}
WINNER = {"lr": 0.02, "batch": 128, "precision": "fp32"}


def test_the_levers_are_the_axes_the_winner_changed_in_its_order() -> None:
    assert levers_of(START, WINNER) == ["lr", "batch"]
    assert levers_of(START, START) == []
    assert without(WINNER, START, "lr") == {"lr": 0.01, "batch": 128, "precision": "fp32"}


def test_a_winner_of_one_lever_is_judged_by_the_finals_interval() -> None:
    one = {**START, "lr": 0.02}
    assert judged_by_finals("lr", START, one, {"speedup": 2.0, "ci_low": 1.5, "ci_high": 2.5}) == (
        one,
        [{"axis": "lr", "kept": True, "without": (0.5, 0.4, 1 / 1.5), "why": "the finals' winner against the start"}],
    )
    assert judged_by_finals("lr", START, one, {"speedup": 1.1, "ci_low": 0.95, "ci_high": 1.3})[0] == START
    assert judged_by_finals("lr", START, one, None) == (one, [])  # no finals: nothing to judge by
    assert judged_by_finals("lr", START, one, {"speedup": 1.1, "ci_low": None, "ci_high": None}) == (one, [])


def test_a_lever_stays_when_slower_without_it_or_unmeasurable_without_it() -> None:
    assert lever_row("lr", (0.5, 0.45, 0.55), "")["kept"]
    assert not lever_row("lr", (0.98, 0.9, 1.05), "")["kept"]
    row = lever_row("lr", None, "a guard failed")
    assert row == {"axis": "lr", "kept": True, "without": None, "why": "without it: a guard failed"}
    rows = [lever_row("lr", (0.98, 0.9, 1.05), ""), lever_row("batch", (0.5, 0.45, 0.55), "")]
    assert pruned_by(START, WINNER, rows) == {"lr": 0.01, "batch": 128, "precision": "fp32"}


def test_levers_dropped_alone_go_together_only_when_that_is_not_slower() -> None:
    rows = [lever_row("lr", (0.98, 0.9, 1.05), ""), lever_row("batch", (1.0, 0.95, 1.04), "")]
    pruned = pruned_by(START, WINNER, rows)
    assert pruned == START
    kept, out = settle_together(WINNER, pruned, rows, (0.99, 0.93, 1.06), "")
    together = {"axis": "together: lr, batch", "kept": False, "without": (0.99, 0.93, 1.06), "why": "side by side"}
    assert kept == START and out[-1] == {**together, "together": True}
    kept, out = settle_together(WINNER, pruned, rows, (0.7, 0.65, 0.75), "")
    assert kept == WINNER and all(r["kept"] and r["why"] == "slower without them together" for r in out)
    kept, out = settle_together(WINNER, pruned, rows, None, "a guard failed")
    assert kept == WINNER and out[-1]["why"] == "together: a guard failed" and out[-1]["without"] is None
