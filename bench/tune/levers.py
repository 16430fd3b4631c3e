"""A tune winner's levers and the verdicts on them, under either objective (pure logic: the measuring is
the caller's). A lever is an axis on which the winner differs from the start; it must pay: the winner
without it (set back to the start's value) is measured beside the winner, and a lever whose removal is
not significantly slower is dropped. Levers dropped one by one are then dropped together only if the
winner without all of them is not significantly slower either (two levers can each sit inside their
interval and together cost a third).

A ratio here is (speed without / speed with, interval low, interval high): below 1, the lever pays.
"""

from __future__ import annotations

from typing import Any

Ratio = tuple[float, float, float]
Row = dict[str, Any]


def levers_of(start: dict[str, Any], winner: dict[str, Any]) -> list[str]:
    """The axes on which ``winner`` differs from ``start``, in the winner's order."""
    return [k for k in winner if winner[k] != start.get(k)]


def without(winner: dict[str, Any], start: dict[str, Any], lever: str) -> dict[str, Any]:
    """The winner with ``lever`` set back to the start's value."""
    return {**winner, lever: start[lever]}


def judged_by_finals(
    lever: str, start: dict[str, Any], winner: dict[str, Any], final: dict[str, Any] | None
) -> tuple[dict[str, Any], list[Row]]:
    """A winner of one lever: the finals already measured it beside the start (its speedup and interval),
    so they decide; without an interval the winner stands unjudged."""
    if not final or final.get("ci_low") is None:
        return winner, []
    kept = final["ci_low"] > 1.0
    ratio = (1 / final["speedup"], 1 / final["ci_high"], 1 / final["ci_low"])
    row = {"axis": lever, "kept": kept, "without": ratio, "why": "the finals' winner against the start"}
    return (winner if kept else dict(start)), [row]


def lever_row(lever: str, ratio: Ratio | None, failed: str) -> Row:
    """The verdict on one lever measured away from the winner: kept when the winner without it is slower
    (the interval below 1) or could not be measured (``failed`` says why: a guard, the target not reached)."""
    if ratio is None:
        return {"axis": lever, "kept": True, "without": None, "why": f"without it: {failed}"}
    return {"axis": lever, "kept": ratio[2] < 1.0, "without": ratio, "why": "side by side"}


def pruned_by(start: dict[str, Any], winner: dict[str, Any], rows: list[Row]) -> dict[str, Any]:
    """The winner with every lever whose row was not kept set back to the start's value."""
    dropped = {r["axis"] for r in rows if not r["kept"]}
    return {k: (start[k] if k in dropped else v) for k, v in winner.items()}


def settle_together(
    winner: dict[str, Any], pruned: dict[str, Any], rows: list[Row], ratio: Ratio | None, failed: str
) -> tuple[dict[str, Any], list[Row]]:
    """Levers each dropped on its own, once the winner without all of them (``pruned``) was measured beside
    the winner: dropped together when that is not significantly slower (``ratio``'s interval reaches 1);
    else every one stays, and each row says why (``failed``: why ``pruned`` could not be measured)."""
    names = "together: " + ", ".join(r["axis"] for r in rows if not r["kept"])
    if ratio is not None and ratio[2] >= 1.0:
        dropped = {"axis": names, "kept": False, "without": ratio, "why": "side by side", "together": True}
        return pruned, rows + [dropped]
    why = "slower without them together" if ratio is not None else f"together: {failed}"
    kept = [r if r["kept"] else {**r, "kept": True, "why": why, "together": True} for r in rows]
    return winner, kept + [{"axis": names, "kept": True, "without": ratio, "why": why, "together": True}]
