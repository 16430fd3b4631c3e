"""bench.tune's report (tune.md): the trials, the winner, the side-by-side rounds, each lever on its
own, the accuracy check. Formatting only: the figures are in the tune result (bench.tune.tuning)."""

from __future__ import annotations

from typing import Any

from bench.cells.target import Target


def _mfu(value: float | None) -> str:
    return f"{value:.1f}" if value is not None else ""


def _to_target(result: dict[str, Any]) -> bool:
    return result.get("objective") == "time_to_target"


def _value(result: dict[str, Any], x: float) -> str:
    """A search value as the report shows it: samples/s, or seconds to the target (the value is 1 / s)."""
    return f"{1 / x:.3g}" if _to_target(result) else f"{x:,.0f}"


def _changes(values: dict[str, Any], start: dict[str, Any], sep: str = "=") -> str:
    return ", ".join(f"{k}{sep}{v}" for k, v in values.items() if v != start.get(k))


def trials_section(result: dict[str, Any]) -> list[str]:
    start, rechecked = result["start"], result.get("rechecks") or []
    with_mfu = any(t.get("mfu_pct") is not None for t in result["trials"])
    lines = [
        f"# bench.tune: {result['config']}",
        "",
        f"{len(result['trials'])} configurations tried in {result['search_seconds']:.0f} s"
        + (" (time budget reached)" if result["budget_exhausted"] else "")
        + (
            f"; {len(rechecked)} readings taken again for close calls (within {result['recheck_band']:.0%}), "
            "where the throughput is the geometric mean of the two readings"
            if rechecked
            else ""
        )
        + ".",
        "",
        f"| configuration (changes from start) | status | {result.get('unit', 'samples/s')} | readings | guards |"
        + (" MFU % |" if with_mfu else ""),
        "|---|---|---:|---|---|" + ("---:|" if with_mfu else ""),
    ]
    for t in result["trials"]:
        readings = t.get("readings") or []
        sps = (
            _value(result, t["score"])
            if t.get("score")
            else (f"{t['samples_per_s']:,.0f}" if t.get("samples_per_s") and not _to_target(result) else "")
        )
        both = " / ".join(_value(result, x) for x in readings) if len(readings) > 1 else ""
        g = "" if t["status"] != "ok" else ("ok" if t.get("guards_ok") else "FAILED")
        if g == "ok" and not t.get("score"):
            if _to_target(result):  # a run that ended its epochs short of the target: worth nothing, no failure
                sps = "not reached"
            else:  # a passing first reading scores 0 only when its second one failed
                g += " (second reading FAILED)"
        why = f": {t['reason']}" if t.get("reason") and t["status"] != "ok" else ""
        row = f"| {_changes(t['values'], start) or '(start)'} | {t['status']}{why} | {sps} | {both} | {g} |"
        lines.append(row + (f" {_mfu(t.get('mfu_pct'))} |" if with_mfu else ""))
    unmeasured = len(result["trials"]) < 2
    changes = ", ".join(f"{k}: {start.get(k)} -> {v}" for k, v in result["winner"].items() if v != start.get(k))
    changes = changes or (
        "none: the budget ran out before any other configuration was measured (raise --budget-s)"
        if unmeasured
        else "none (the start is fastest)"
    )
    return lines + ["", f"**Winner**: {changes}"]


def target_final_section(result: dict[str, Any]) -> list[str]:
    """The finals tuned for time to the target: every finalist's seeded runs, side by side, scored by MLPerf's rule."""
    f, start = result["final"], result["start"]
    short = (
        f"; {f['runs']} of the {f['runs_asked']} asked for: no time left" if f.get("runs_asked", 0) > f["runs"] else ""
    )
    lines = ["", f"Finalists trained to the target side by side with the start ({f['runs']} seeded runs each, "
             f"rotating order{short}; MLPerf's rule: the fastest and slowest run dropped):", "",
             "| configuration | s to target | min-max s | epochs | runs reached | luck p |",
             "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in f["finalists"]:
        name = _changes(r["values"], start) or "(start)"
        if not r.get("score_s"):
            lines.append(f"| {name} | {r.get('status')}: {r.get('note') or ''} | | | | |")
            continue
        p = f"{r['p_beyond_target']:.3f}" if r.get("p_beyond_target") is not None else ""
        lines.append(f"| {name} | {r['score_s']:.3g} | {r['min_s']:.3g}-{r['max_s']:.3g} | "
                     f"{r['epochs_to_target']:.2f} | {r['converged']} of {len(r['runs'])} | {p} |")  # fmt: skip
    if f.get("speedup") is not None:
        lines += ["", f"**Speedup to the target of the winner over the start**: {f['speedup']:.2f}x "
                  f"(95% CI {f['ci_low']:.2f}-{f['ci_high']:.2f}, runs resampled)"]  # fmt: skip
    return lines + (["", f["note"]] if f.get("note") else [])


def final_section(result: dict[str, Any]) -> list[str]:
    f, start = result.get("final"), result["start"]
    if not f:
        return []
    if _to_target(result):
        return target_final_section(result)
    short = (
        f"; {f['rounds']} of the {f['rounds_asked']} asked for: no time left in the budget for more"
        if f.get("rounds_asked", f["rounds"]) > f["rounds"]
        else ""
    )
    with_mfu = any(fin.get("mfu_pct") is not None for fin in f["finalists"])
    lines = [
        "",
        f"Finalists re-measured side by side with the start ({f['rounds']} rounds, rotating order{short}):",
        "",
        f"| configuration | {result.get('unit', 'samples/s')} (pooled median) |" + (" MFU % |" if with_mfu else ""),
        "|---|---:|" + ("---:|" if with_mfu else ""),
    ]
    lines += [
        f"| {_changes(fin['values'], start) or '(start)'} | {fin['samples_per_s']:,.0f} |"
        + (f" {_mfu(fin.get('mfu_pct'))} |" if with_mfu else "")
        for fin in f["finalists"]
    ]
    lines += [
        "",
        f"**Speedup of the winner over the start, side by side**: "
        f"{f['speedup']:.2f}x (95% CI {f['ci_low']:.2f}-{f['ci_high']:.2f}, bootstrap over rounds and steps)",
    ]
    if f.get("speedup_per_round"):
        lines += ["", "Round by round: " + ", ".join(f"{x:.2f}x" for x in f["speedup_per_round"])]
    return lines + (["", f["note"]] if f.get("note") else [])


def levers_section(result: dict[str, Any]) -> list[str]:
    start, winner, lines = result["start"], result["winner"], []
    if result["contributions"]:
        lines += [
            "",
            "What each lever gives on its own (start + that one change; one reading each, against the start's "
            f"{result.get('unit', 'samples/s')} pooled over its {result.get('start_readings', 1)} readings):",
            "",
            "| lever | from | to | speedup | guards |",
            "|---|---|---|---:|---|",
        ]
        for c in result["contributions"]:
            sp = f"{c['speedup']:.2f}x" if c["speedup"] is not None else c["status"]
            lines.append(f"| {c['axis']} | {c['from']} | {c['to']} | {sp} | {'ok' if c['guards_ok'] else '-'} |")
    if winner.get("data.batch_size") != start.get("data.batch_size") and not _to_target(result):
        lines += [
            "",
            f"Note: the batch size changed ({start.get('data.batch_size')} -> {winner.get('data.batch_size')}). "
            "That changes the optimisation (fewer, larger steps per epoch; the learning rate may need scaling): "
            "check accuracy with --check-accuracy before adopting it.",
        ]
    acc = result.get("accuracy")
    if acc:
        side = {k: f"{acc[k]['val_accuracy']:.4f}, loss {acc[k]['val_loss']:.4f}" for k in ("start", "winner")}
        lines += [
            "",
            f"Same wall time ({acc['seconds']:.0f} s of training each), validation accuracy: "
            f"start {side['start']} ({acc['start']['samples']:,} samples), "
            f"winner {side['winner']} ({acc['winner']['samples']:,} samples)",
        ]
    return lines


def pruning_section(result: dict[str, Any]) -> list[str]:
    """Each lever of the winner taken out on its own: kept only if the winner is slower without it."""
    rows = result.get("pruning") or []
    if not rows:
        return []
    lines = ["", "Every lever must pay: the winner without each one, side by side (without / with, 95% CI):", ""]
    lines += ["| lever | without / with | kept |", "|---|---:|---|"]
    for r in rows:
        w = r.get("without")
        ratio = f"{w[0]:.2f}x ({w[1]:.2f}-{w[2]:.2f})" if w else r["why"]
        if not r["kept"]:
            verdict = "**dropped**: not slower without " + ("them together" if r.get("together") else "it")
        else:  # a lever not slower alone, kept because without it and the others together it is, says why
            verdict = f"kept: {r['why']}" if r.get("together") else "kept"
        lines.append(f"| {r['axis']} | {ratio} | {verdict} |")
    return lines


def objective_lines(result: dict[str, Any]) -> list[str]:
    """What was optimised, said first when it is not samples/s (and when the model may have changed)."""
    if not _to_target(result):
        return []
    target = Target.model_validate(result["target"])
    runs = result.get("search_runs", 1)
    lines = [
        "",
        f"Objective: time to {target.describe()} (MLPerf's clock: evaluations count, setup "
        f"apart), {runs} run{'s' if runs > 1 else ''} per configuration while searching; searched: "
        f"{', '.join(result['space'])}.",
    ]
    if "model.name" in result["space"]:
        lines.append(
            f"The model was allowed to change (--allow-model-change): tried {', '.join(result['space']['model.name'])}."
        )
    return lines


def format_report(result: dict[str, Any]) -> str:
    head = trials_section(result)
    lines = (
        head[:1]
        + objective_lines(result)
        + head[1:]
        + final_section(result)
        + pruning_section(result)
        + levers_section(result)
    )
    lines += ["", f"Winning config: `{result['winner_yaml']}` (python -m bench.train --config {result['winner_yaml']})"]
    return "\n".join(lines) + "\n"
