"""The HTML reports: self-contained (no network), one table row per cell, charts that render, a filter
that works, checked in a real browser (headless Chromium) with the network cut off; plus a screenshot."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from bench.cells.contract import CellRecord, GuardResult
from bench.cells.store import append_record
from bench.history import db as history_db
from bench.report.html import history_report, run_report

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
needs_browser = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium here (.ci/run installs Debian's chromium package as root)"
)
MACHINE = {"hostname": "h", "cpu": "Xeon", "gpus": []}


def _record(cell_id: str, precision: str, bs: int, rate: float, **extra: object) -> CellRecord:
    guards = {
        "finite": GuardResult(name="finite", status="pass"),
        "overfit": GuardResult(name="overfit", status="pass"),
    }
    return CellRecord(cell_id=cell_id, status="ok", axes={"precision": precision, "data.batch_size": bs},
                      throughput=rate, throughput_unit="samples/s", step_s=[bs / rate] * 5, data_wait_pct=2.0,
                      repeat_spread_pct=3.0, guards=guards, guards_ok=True, machine=MACHINE,
                      phase_s={"forward_s": 0.01, "backward_s": 0.02}, **extra)  # fmt: skip


def records() -> list[CellRecord]:
    return [
        _record("fp32-bs64", "fp32", 64, 1000.0),
        _record(
            "fp32-bs128",
            "fp32",
            128,
            1500.0,
            prof_phase_pct={"forward": 30.0, "backward": 60.0, "other": 10.0},
            top_ops=[{"name": "aten::mm", "self_ms": 1.5}],
        ),  # fmt: skip
        _record("bf16-bs64", "bf16", 64, 700.0, unstable=True),
        _record("bf16-bs128", "bf16", 128, 900.0, world_size=2),
        CellRecord(cell_id="fp16-bs64", status="skipped", reason="fp16 is emulated", axes={"precision": "fp16"}),
    ]


def browse(url: str, tmp: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium on the page, with every host name unresolvable: the page must need no network."""
    assert CHROMIUM is not None
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp / 'profile'}",
           "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=20000", "--enable-logging=stderr",
           "--v=0", *flags, url]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def shown_rows(dom: str, table_id: str) -> tuple[int, int]:
    """(rows shown, rows) of a table in a dumped DOM."""
    body = re.search(rf'<table class="cells" id="{table_id}">.*?<tbody>(.*?)</tbody>', dom, re.S)
    assert body is not None, f"no table {table_id}"
    rows = re.findall(r"<tr[^>]*>", body.group(1))
    return sum("display: none" not in r for r in rows), len(rows)


def test_the_run_page_is_self_contained(tmp_path: Path) -> None:
    path = run_report(tmp_path, records(), {"torch": "2.15.0", "cpu": "Xeon", "git_commit": "abc"})
    from plotly.offline import get_plotlyjs

    text = path.read_text()
    assert get_plotlyjs() in text  # the chart library inlined, not loaded
    ours = text.replace(get_plotlyjs(), "")
    assert "<script src" not in ours and not re.search(r"""(src|href)=["']?https?://""", ours)
    assert text.count('class="chart"') == 4  # throughput, data wait, phases, scaling
    assert "aten::mm" in text and "fp32-bs128" in text and "unstable" in text


@needs_browser
@pytest.mark.slow
def test_the_run_page_in_a_real_browser(tmp_path: Path) -> None:
    recs = records()
    path = run_report(tmp_path, recs, {"torch": "2.15.0", "cpu": "Xeon"})
    done = browse(path.as_uri(), tmp_path, "--dump-dom")
    dom = done.stdout
    assert done.returncode == 0 and "Uncaught" not in done.stderr, done.stderr[-2000:]
    assert re.search(r'<pre id="errors"></pre>', dom), "the page reported a script error"
    assert shown_rows(dom, "cells") == (len(recs), len(recs))
    charts = re.findall(r'<div class="chart[^"]*" id="(fig-[a-z]+)"[^>]*data-rendered="yes"', dom)
    assert sorted(charts) == ["fig-datawait", "fig-phases", "fig-scaling", "fig-throughput"]
    assert dom.count('class="main-svg"') >= 4  # Plotly drew its SVG in each
    filtered = browse(path.as_uri() + "#filter=bf16", tmp_path, "--dump-dom").stdout
    assert shown_rows(filtered, "cells") == (2, len(recs))
    assert "2 of 5 rows" in filtered
    shot = tmp_path / "report.png"
    browse(path.as_uri(), tmp_path, f"--screenshot={shot}", "--window-size=1400,2600")
    assert shot.stat().st_size > 20_000


@needs_browser
def test_the_history_page_in_a_real_browser(tmp_path: Path) -> None:
    db = history_db.connect(tmp_path / "h.sqlite")
    for i, rate in enumerate([100.0, 101.0, 99.0, 100.5, 80.0]):  # the last run regressed
        run = tmp_path / f"run-{i}"
        run.mkdir()
        append_record(run / "cells.jsonl", _record("fp32-bs64", "fp32", 64, rate))
        append_record(run / "cells.jsonl", _record("bf16-bs64", "bf16", 64, 700.0 + i))
        history_db.ingest_dir(db, run)
    path = history_report(db, tmp_path / "history.html")
    db.close()
    done = browse(path.as_uri(), tmp_path, "--dump-dom")
    assert done.returncode == 0 and "Uncaught" not in done.stderr, done.stderr[-2000:]
    dom = done.stdout
    assert shown_rows(dom, "cells") == (2, 2) and shown_rows(dom, "runs") == (5, 5)
    assert len(re.findall(r'id="fig-trend-\d+"[^>]*data-rendered="yes"', dom)) == 2
    assert "REGRESSION" in dom and "change point" in dom


def test_memory_against_batch_size_is_charted_and_tabled(tmp_path: Path) -> None:
    from bench.report.figures import memory_vs_batch

    def rec(batch: int, added: float, acts: float) -> CellRecord:
        return CellRecord(cell_id=f"bs{batch}", status="ok", axes={"data.batch_size": batch}, step_s=[0.01] * 4,
                          samples_per_s=100.0, mem_baseline_mb=500.0, mem_peak_mb=500.0 + added, mem_workers_mb=0.0,
                          mem_split_mb={"activations": acts, "params": 1.0})  # fmt: skip

    records = [rec(256, 300.0, 70.4), rec(64, 197.0, 17.6)]
    fig = memory_vs_batch(records)
    assert fig is not None and [list(t.x) for t in fig.data] == [[64, 256], [64, 256]]
    assert list(fig.data[0].y) == [197.0, 300.0] and list(fig.data[1].y) == [17.6, 70.4]
    assert memory_vs_batch([CellRecord(cell_id="x", status="ok", axes={"data.batch_size": 8})]) is None
    html = run_report(tmp_path, records, {}).read_text()
    assert "Memory vs batch size" in html and "added MiB" in html and ">197<" in html
