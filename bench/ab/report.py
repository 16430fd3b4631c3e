"""Formatting of a ``bench.ab`` result (typed result in, text out; no torch)."""

from __future__ import annotations

from bench.ab.result import AbReport
from bench.paired.result import PairedResult, Verdict


def budget_hint(v: PairedResult, min_effect_pct: float, seconds_per_round: float | None) -> str:
    """When the interval is still wider than +-min_effect/2: the rounds (and budget) its spread asks for."""
    if v.verdict != Verdict.NO_CHANGE or v.resolved or v.decided(min_effect_pct) or not seconds_per_round:
        return ""  # a verdict was reached, or the interval already rules out the minimum effect
    rounds = v.rounds_to_decide(min_effect_pct)
    if rounds is None:
        return ""
    return (f"; to resolve +-{min_effect_pct / 2:g}% its rounds' spread asks for about {rounds} rounds "
            f"(--budget-s {rounds * seconds_per_round:.0f})")  # fmt: skip


def verdict_line(key: str, v: PairedResult, min_effect_pct: float, seconds_per_round: float | None = None) -> str:
    change = 100.0 * (v.ratio - 1.0)
    if v.verdict == Verdict.FASTER:
        what = f"B is faster than A by {change:.1f}%"
    elif v.verdict == Verdict.SLOWER:
        what = f"B is slower than A by {-change:.1f}%"
    elif v.resolved and (v.ci_high < 1.0 or v.ci_low > 1.0):
        side = "slower" if v.ci_high < 1.0 else "faster"
        what = (f"no change of {min_effect_pct:g}% or more: B is {side} by {abs(change):.1f}%, a real change "
                f"smaller than the minimum effect")  # fmt: skip
    elif v.resolved:
        what = f"no change: the interval rules out a change of {min_effect_pct:g}% or more"
    else:
        reach = 100.0 * max(1.0 - v.ci_low, v.ci_high - 1.0)
        what = (f"no change of {min_effect_pct:g}% or more detected, but the interval cannot rule out one of up "
                f"to {reach:.1f}% (more --budget-s narrows it)")  # fmt: skip
    label = "" if key == "cell" else f"{key}: "
    ci = f"B/A {v.ratio:.3f}, 95% CI {v.ci_low:.3f}-{v.ci_high:.3f}, +-{v.half_width_pct:.1f}%"
    return f"{label}{what} ({ci}){budget_hint(v, min_effect_pct, seconds_per_round)}"


def ab_markdown(report: AbReport) -> str:
    """The run's summary: sides, verdicts, and per round each side's throughput and the paired ratio."""
    m = report.min_effect_pct
    per_round = report.run.seconds / report.run.rounds if report.run.rounds else None
    lines = [
        f"# A/B: {report.sides['A'].given} vs {report.sides['B'].given}",
        "",
        *[f"- {s.describe}" for s in report.sides.values()],
        f"- {report.run.rounds} interleaved rounds ({report.order}) in {report.run.seconds:.0f} s; "
        f"minimum effect {m:g}%",
        *([f"- readings: {report.readings}"] if report.readings else []),
        *[f"- round {x.round} taken again: {x.why} (a stall, not the code)" for x in report.run.retaken],
        "",
        "## Verdict",
        "",
        *[f"- {verdict_line(k, v, m, per_round)}" for k, v in report.results.items()],
        *[f"- note: {n}" for n in report.notes],
    ]
    for key, v in report.results.items():
        early = len(v.per_round) < report.run.rounds  # decided early: the budget went to the other keys
        note = f" (read in {len(v.per_round)} of {report.run.rounds} rounds: decided early)" if early else ""
        lines += ["", f"## Rounds{'' if key == 'cell' else ': ' + key}{note}", "", f"| round | A {v.unit} | "
                  f"B {v.unit} | B/A |", "|---:|---:|---:|---:|"]  # fmt: skip
        for i, (a, b, r) in enumerate(zip(v.a_rate, v.b_rate, v.per_round), start=1):
            lines.append(f"| {i} | {a:,.1f} | {b:,.1f} | {r:.3f} |")
    return "\n".join(lines)
