"""Self-contained HTML reports: ``report.html`` in each results folder, and ``bench.history report``.

One file that opens from disk with no network: the data is embedded and plotly.js (from the installed
``plotly`` package) is inlined, so it works on an offline or air-gapped machine, unlike viewers that
load their chart library from the internet. A sortable, filterable table of cells (axes, throughput,
spread, guards, reasons, links to each cell's trace and log) and Plotly charts: throughput against
batch size, data wait, where the step goes (trace phases, else the timer's), top operators, scaling
over ranks, and for the history a trend per cell with its detected change points.

The page's own script reads ``#filter=TEXT`` from its address (a shareable, pre-filtered view) and
puts any script error in ``#errors``, so a headless browser can check it. No torch import.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

from bench.cells.contract import OK, CellRecord, guard_names

PAGE_SCRIPT = """
window.addEventListener("error", e => { document.getElementById("errors").textContent += e.message + "\\n"; });
function applyFilter(text) {
  const terms = text.toLowerCase().split(/\\s+/).filter(Boolean);
  for (const table of document.querySelectorAll("table.cells")) {
    let shown = 0;
    for (const row of table.tBodies[0].rows) {
      const hit = terms.every(t => row.textContent.toLowerCase().includes(t));
      row.style.display = hit ? "" : "none";
      shown += hit ? 1 : 0;
    }
    const counter = document.getElementById(table.id + "-shown");
    if (counter) counter.textContent = shown + " of " + table.tBodies[0].rows.length + " rows";
  }
}
function sortBy(th) {
  const table = th.closest("table"), body = table.tBodies[0], i = th.cellIndex;
  const asc = th.dataset.order !== "asc";
  for (const other of th.parentNode.children) delete other.dataset.order;
  th.dataset.order = asc ? "asc" : "desc";
  const key = r => { const c = r.cells[i]; const v = c.dataset.v ?? c.textContent; const n = parseFloat(v);
                     return isNaN(n) ? v.toLowerCase() : n; };
  const cmp = (x, y) => typeof x === typeof y ? (x < y ? -1 : x > y ? 1 : 0) : (typeof x === "number" ? -1 : 1);
  const rows = Array.from(body.rows).sort((a, b) => cmp(key(a), key(b)) * (asc ? 1 : -1));
  rows.forEach(r => body.appendChild(r));
}
document.addEventListener("DOMContentLoaded", () => {
  for (const th of document.querySelectorAll("table.cells th")) th.addEventListener("click", () => sortBy(th));
  const box = document.getElementById("filter");
  box.addEventListener("input", () => applyFilter(box.value));
  const m = location.hash.match(/^#filter=(.*)$/);
  if (m) box.value = decodeURIComponent(m[1]);
  applyFilter(box.value);
  for (const fig of JSON.parse(document.getElementById("figures").textContent)) {
    Plotly.newPlot(fig.id, fig.data, fig.layout, {responsive: true, displaylogo: false})
      .then(() => document.getElementById(fig.id).dataset.rendered = "yes");
  }
});
"""
STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; font-size: 13px; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: left; max-width: 30em; overflow-wrap: anywhere; }
th { background: #f0f0f0; cursor: pointer; user-select: none; }
th[data-order=asc]::after { content: " \\25B2"; } th[data-order=desc]::after { content: " \\25BC"; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.fail { color: #b00; font-weight: 600; } .warn { color: #a60; }
.chart { width: 100%; max-width: 1100px; height: 420px; }
#filter { width: 30em; padding: 4px; } #errors { color: #b00; }
dl { display: grid; grid-template-columns: max-content auto; gap: 2px 12px; font-size: 13px; }
"""


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _td(value: Any, num: bool = False, cls: str = "", sort: float | None = None) -> str:
    classes = " ".join(c for c in (cls, "num" if num else "") if c)
    attrs = f' class="{classes}"' if classes else ""
    attrs += f' data-v="{sort}"' if sort is not None else ""
    return f"<td{attrs}>{value}</td>"


def table(table_id: str, header: list[str], rows: list[str]) -> str:
    """A sortable table (click a header); the page's filter box hides rows that do not match."""
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    return (
        f'<p><span id="{table_id}-shown"></span></p><table class="cells" id="{table_id}"><thead><tr>{head}</tr>'
        f"</thead><tbody>{''.join(rows)}</tbody></table>"
    )


def page(title: str, body: list[str], figures: list[dict[str, Any]]) -> str:
    """The whole document: style, plotly.js inlined, the body, the figures as embedded JSON."""
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    divs = {f["id"] for f in figures}
    assert all(f'id="{d}"' in "".join(body) for d in divs), "every figure needs its div in the body"
    figs = json.dumps([{"id": f["id"], **json.loads(pio.to_json(f["figure"]))} for f in figures])
    figs = figs.replace("</", "<\\/")  # a '</script>' inside the data must not end the script element
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_esc(title)}</title><style>{STYLE}</style>"
        f"<script>{get_plotlyjs()}</script></head><body><h1>{_esc(title)}</h1><pre id='errors'></pre>"
        "<p><input id='filter' placeholder='filter rows: words that must all appear, e.g. bf16 fail'></p>"
        + "\n".join(body)
        + f"<script type='application/json' id='figures'>{figs}</script>"
        f"<script>{PAGE_SCRIPT}</script></body></html>"
    )


def chart(fig_id: str, heading: str, note: str = "") -> str:
    return (
        f"<h2>{_esc(heading)}</h2>"
        + (f"<p>{_esc(note)}</p>" if note else "")
        + f'<div class="chart" id="{fig_id}"></div>'
    )


def link(target: str | None, base: Path, text: str) -> str:
    """A link relative to the report's folder when the target is below it (the folder can move)."""
    if not target:
        return ""
    path = Path(target)
    href = os.path.relpath(path, base) if path.is_absolute() or path.exists() else target
    return f'<a href="{_esc(href)}">{_esc(text)}</a>'


def cell_rows(records: list[CellRecord], run_dir: Path) -> tuple[list[str], list[str]]:
    """(header, rows) of the cell table: axes, status, throughput, spread, guards, reason, links."""
    axes = list(dict.fromkeys(k for r in records for k in r.axes))
    guards = guard_names(records)
    header = ["cell", "status", "throughput", "unit", "spread %", "data wait %", "added MiB", "activations MiB",
              *axes, *guards, "reason", "files"]  # fmt: skip
    rows = []
    for r in records:
        status = r.status + (" (unstable)" if r.unstable else "")
        cells = [_td(_esc(r.cell_id)), _td(_esc(status), cls="" if r.status == OK and not r.unstable else "warn")]
        cells.append(_td(f"{r.rate:,.1f}" if r.rate else "", num=True, sort=r.rate or -1))
        cells.append(_td(_esc(r.unit if r.rate else "")))
        cells.append(_td(f"{r.repeat_spread_pct:.1f}" if r.repeat_spread_pct is not None else "", num=True))
        cells.append(_td(f"{r.data_wait_pct:.1f}" if r.data_wait_pct is not None else "", num=True))
        acts = (r.mem_split_mb or {}).get("activations")
        cells.append(_td(f"{r.mem_added_mb:,.0f}" if r.mem_added_mb is not None else "", num=True))
        cells.append(_td(f"{acts:,.1f}" if acts is not None else "", num=True))
        cells += [_td(_esc(r.axes.get(k))) for k in axes]
        for g in guards:
            st = r.guard_status(g)
            cells.append(_td(_esc(st), cls="fail" if st in ("fail", "error") else ""))
        cells.append(_td(_esc(r.reason or r.flops_warning or "")))
        log = run_dir / "cells" / f"{r.cell_id}.log"
        files = [link(str(log) if log.exists() else None, run_dir, "log"), link(r.trace_dir, run_dir, "trace")]
        cells.append(_td(" ".join(f for f in files if f)))
        rows.append(_row(*cells))
    return header, rows


ENV_KEYS = ("timestamp", "git_commit", "hostname", "cpu", "gpus", "torch", "cuda", "threads", "python", "platform")


def environment(env: dict[str, Any]) -> str:
    items = "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(env[k])}</dd>" for k in ENV_KEYS if env.get(k) not in (None, ""))
    return f"<h2>Environment</h2><dl>{items}</dl>"


def top_ops(records: list[CellRecord], n: int = 8) -> str:
    """Each profiled cell's operators with the most self time per step (from its trace)."""
    parts = []
    for r in records:
        if r.top_ops:
            rows = "".join(
                f"<tr><td>{_esc(o['name'])}</td><td class='num'>{o['self_ms']:.3f}</td></tr>" for o in r.top_ops[:n]
            )
            parts.append(
                f"<details><summary>{_esc(r.cell_id)}</summary><table><tr><th>operator</th>"
                f"<th>self ms / step</th></tr>{rows}</table></details>"
            )
    return ("<h2>Top operators (torch.profiler)</h2>" + "".join(parts)) if parts else ""


def _inline(text: str) -> str:
    """summary.md's inline marks (**bold**, `code`) as HTML, the rest escaped."""
    out = _esc(text)
    for mark, tag in (("**", "b"), ("`", "code")):
        parts = out.split(mark)
        out = "".join(p if i % 2 == 0 else f"<{tag}>{p}</{tag}>" for i, p in enumerate(parts))
    return out


def markdown_block(lines: list[str], table_id: str) -> str:
    """The answer and tables of summary.md as HTML: headings, bullets, pipe tables and paragraphs."""
    out, rows = [], [ln for ln in lines if ln.startswith("|") and not ln.startswith("|---")]
    header = [c.strip() for c in rows[0].strip("|").split("|")] if rows else []
    body = ["<tr>" + "".join(_td(c.strip()) for c in r.strip("|").split("|")) + "</tr>" for r in rows[1:]]
    for ln in lines:
        if ln.startswith("## "):
            out.append(f"<h2>{_inline(ln[3:])}</h2>")
        elif ln.startswith("- "):
            out.append(f"<li>{_inline(ln[2:])}</li>")
        elif ln.startswith("|") and header and ln == rows[0]:
            out.append(table(table_id, header, body))
        elif ln and not ln.startswith("|"):
            out.append(f"<p>{_inline(ln)}</p>")
    return "\n".join(out)


def answer(records: list[CellRecord], env: dict[str, Any]) -> str:
    """The answer a user came for, first on the page (what summary.md opens with)."""
    from bench.report.tables import fastest_section
    from bench.report.target import target_answer, target_table

    if any(r.inference is not None for r in records):
        from bench.report.inference import inference_answer, inference_table

        return markdown_block(inference_answer(records) + inference_table(records), "inference")
    if any(r.time_to_target is not None for r in records):
        return markdown_block(target_answer(records, env) + target_table(records, env), "target")
    return markdown_block(fastest_section(records), "answer")


def run_report(run_dir: Path, records: list[CellRecord], env: dict[str, Any]) -> Path:
    """``<run_dir>/report.html`` for a finished run: the answer first, then every cell and the figures."""
    from bench.report import figures as hf

    header, rows = cell_rows(records, run_dir)
    body = [answer(records, env), environment(env), "<h2>Cells</h2>" + table("cells", header, rows)]
    figures: list[dict[str, Any]] = []
    phases = hf.phase_breakdown(records)
    for fig_id, heading, fig, note in (
        ("fig-throughput", "Throughput vs batch size", hf.throughput_vs_batch(records), "median step, per cell"),
        ("fig-datawait", "Data wait", hf.data_wait(records), "share of the timed step blocked on the next batch"),
        ("fig-memory", "Memory vs batch size", hf.memory_vs_batch(records), "what each configuration added (PSS)"),
        ("fig-phases", "Where the step goes", phases[0] if phases else None, f"from the {phases[1] if phases else ''}"),
        ("fig-scaling", "Scaling over ranks", hf.scaling(records), "data-parallel cells"),
    ):
        if fig is not None:
            body.append(chart(fig_id, heading, note))
            figures.append({"id": fig_id, "figure": fig})
    body.append(top_ops(records))
    path = run_dir / "report.html"
    path.write_text(page(f"trainbench run {run_dir.name}", body, figures))
    return path


def _row(*cells: str) -> str:
    return "<tr>" + "".join(cells) + "</tr>"


def _plain(*values: Any) -> str:
    return _row(*(_td(_esc(v)) for v in values))


def runs_section(db: Any) -> list[str]:
    """The recorded runs, and the verdicts of bench.ab runs when there are any."""
    from bench.history.db import runs, verdicts

    rows = [
        _plain(
            r["run_id"],
            r["kind"],
            r["recorded_at"],
            (r["git_commit"] or "?")[:10] + ("-dirty" if r["git_dirty"] else ""),
            r["cpu"],
            f"{r['measured']}/{r['cells']}",
        )  # fmt: skip
        for r in runs(db)
    ]
    out = ["<h2>Runs</h2>" + table("runs", ["run", "kind", "recorded", "commit", "CPU", "measured"], rows)]
    ab_rows = [
        _plain(
            v["run_id"],
            v["name"],
            json.loads(v["a"])["given"],
            json.loads(v["b"])["given"],
            f"{v['ratio']:.3f}",
            f"{v['ci_low']:.3f}-{v['ci_high']:.3f}",
            v["verdict"],
            v["rounds"],
        )  # fmt: skip
        for v in verdicts(db)
    ]
    if ab_rows:
        header = ["run", "compared", "A", "B", "B/A", "95% CI", "verdict", "rounds"]
        out.append("<h2>A/B verdicts (bench.ab)</h2>" + table("ab", header, ab_rows))
    return out


def history_report(db: Any, path: Path, window: int = 5, min_effect_pct: float = 5.0, max_charts: int = 60) -> Path:
    """One page for the whole history: runs, one row per (cell, machine) with its latest check, and a
    trend chart per cell (most readings first, at most ``max_charts``) with change points marked."""
    from bench.history.db import series
    from bench.report import figures as hf
    from bench.stats import step_change

    rows, figures, charts = [], [], []
    for i, ((cell_id, machine), points) in enumerate(sorted(series(db).items(), key=lambda kv: -len(kv[1]))):
        v = step_change([p["throughput"] for p in points], window, min_effect_pct)
        what = "not enough readings" if v is None else ("REGRESSION" if v["regression"] else
                                                        "improvement" if v["improvement"] else "ok")  # fmt: skip
        latest = points[-1]["throughput"]
        rows.append(_row(_td(_esc(cell_id)), _td(_esc(machine)), _td(len(points), num=True),
                         _td(f"{latest:,.1f}", num=True, sort=latest), _td(_esc(points[-1]["unit"])),
                         _td(f"{v['change_pct']:+.1f}" if v else "", num=True),
                         _td(_esc(what), cls="fail" if what == "REGRESSION" else "")))  # fmt: skip
        if len(points) >= 2 and len(charts) < max_charts:
            fig, flagged = hf.trend(points, window, min_effect_pct)
            charts.append(chart(f"fig-trend-{i}", f"{cell_id} on {machine}", f"{len(flagged)} change point(s)"))
            figures.append({"id": f"fig-trend-{i}", "figure": fig})
    header = ["cell", "machine", "readings", "latest", "unit", "change vs baseline %", "check"]
    body = [*runs_section(db), "<h2>Cells</h2>" + table("cells", header, rows), *charts]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page("trainbench history", body, figures))
    return path


def folder_report(run_dir: Path) -> Path:
    """``report.html`` for a results folder from its own files (cells.jsonl, env.json)."""
    from bench.cells.store import read_records

    env_path = run_dir / "env.json"
    env = json.loads(env_path.read_text()) if env_path.is_file() else {}
    return run_report(run_dir, read_records(run_dir / "cells.jsonl"), env)
