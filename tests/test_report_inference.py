"""The inference answer on fixed records: per model and batch the fastest runtime that passed parity, against
eager fp32 with an interval, why each other runtime lost (a drifting one is never the answer), the table."""

from __future__ import annotations

from bench.cells.contract import CellRecord, GuardResult
from bench.cells.inference import PARITY_GUARD, InferenceResult
from bench.report.inference import inference_answer, inference_table
from bench.report.tables import summary_markdown


def cell(model: str, runtime: str, ms: float, ok: bool = True, batch: int = 1, precision: str = "fp32") -> CellRecord:
    steps = [ms / 1e3] * 30
    p50 = ms / 1e3
    guard = GuardResult(name=PARITY_GUARD, status="pass" if ok else "fail",
                        detail="ok" if ok else "error 0.05 against fp64 > 2 x eager's 1e-08 + 1e-05")  # fmt: skip
    inf = InferenceResult(runtime=runtime, batch=batch, items_per_call=batch, latency_ms_p50=p50 * 1e3,
                          latency_ms_p90=p50 * 1.03e3, latency_ms_p99=p50 * 1.04e3, items_per_s=batch / p50,
                          calls_timed=30, seconds_timed=sum(steps), export_s=None if runtime == "eager" else 2.0,
                          )  # fmt: skip
    return CellRecord(cell_id=f"{model}-{runtime}-{precision}-bs{batch}", status="ok", precision=precision,
                      axes={"variant": model, "infer.runtime": runtime}, batch_size=batch, step_s=steps,
                      steps_per_repeat=10, samples_per_s=batch / p50, throughput=batch / p50,
                      throughput_unit="samples/s", guards={PARITY_GUARD: guard}, guards_ok=ok, inference=inf,
                      )  # fmt: skip


RECORDS = [
    cell("cnn", "eager", 2.0),
    cell("cnn", "onnxruntime", 1.0),
    cell("cnn", "torchscript", 0.5, ok=False),  # fastest, but its outputs drift
    cell("cnn", "eager", 1.5, precision="bf16"),
    cell("gpt", "eager", 4.0, batch=8),
    CellRecord(cell_id="gpt-onnxruntime-bf16-bs8", status="skipped", reason="runs the fp32 export"),
]


def test_the_answer_is_the_fastest_runtime_that_passed_parity_per_model_and_batch() -> None:
    lines = inference_answer(RECORDS)
    cnn = next(ln for ln in lines if ln.startswith("- **cnn, batch 1**"))
    assert "onnxruntime fp32: 1,000 samples/s" in cnn and "2.00x eager fp32 (95% interval 2.00-2.00" in cnn
    lost = lines[lines.index(cnn) + 1 : lines.index(cnn) + 4]
    assert lost[0].startswith("  - torchscript fp32: outputs drift (parity: error 0.05 against fp64")
    assert "eager bf16: slower: 667 samples/s, 0.67x the fastest" in lost[1] and "eager fp32: slower" in lost[2]
    assert any(ln.startswith("- **gpt, batch 8**: eager fp32") and "reference itself" in ln for ln in lines)


def test_the_table_and_the_summary_open_with_the_answer() -> None:
    rows = inference_table(RECORDS)
    assert (
        rows[0] == ""
        and len(rows) == 3 + 5
        and "| cnn | 1 | torchscript | fp32 | 0.50 |" in rows[5]
        and rows[5].endswith("DRIFT |")
    )
    assert "| 2.00x | 2.0 | ok |" in rows[4]
    text = summary_markdown(RECORDS, {"matrix_name": "inference"})
    assert text.index("## Fastest runtime per model and batch") < text.index("| model | batch | runtime |")
    assert "1 cells skipped: runs the fp32 export (1)" in text
    assert inference_answer([RECORDS[-1]])[-1] == "No inference cell was measured."
