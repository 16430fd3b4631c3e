"""The work of a cell process (``python -m bench.cell``, or a child of ``bench.cell_server``): the spec from
its file, measured in this process (:mod:`bench.measure.cell`) or in the ranks of a data-parallel cell
(:mod:`bench.measure.ranks`), the record to its file."""

from __future__ import annotations

import traceback
from pathlib import Path

from bench.cells.contract import FAILED, CellRecord, CellSpec
from bench.fit.probe import probe_cell
from bench.infer.cell import inference_cell
from bench.measure.cell import measure_cell
from bench.measure.ranks import is_multi_rank, run_ranks
from bench.target.runs import target_cell
from trainer_core.loading import validate_config


def run_cell(spec: CellSpec) -> CellRecord:
    """Measure then guard one cell: in this process, or in the ranks of a data-parallel cell; a
    time-to-target cell trains its seeds' runs to the target (:mod:`bench.target.runs`); an inference cell
    times its runtime's forward calls (:mod:`bench.infer.cell`)."""
    config = validate_config(spec.config, source=f"cell {spec.cell_id}")
    if spec.measure.mode == "time_to_target":
        return target_cell(spec)
    if spec.measure.mode == "inference":
        return inference_cell(spec)
    if spec.measure.mode == "fit":
        return probe_cell(spec)
    return run_ranks(spec) if is_multi_rank(config) else measure_cell(spec)


def run_cell_file(spec_path: Path, result_path: Path) -> int:
    """The work of a cell process (``python -m bench.cell``, or a child of ``bench.cell_server``): the
    spec from its file, the record to its file, including on failure (with the reason) whenever Python
    is still alive. Returns the process's exit code."""
    spec = CellSpec.model_validate_json(spec_path.read_text())
    try:
        record, code = run_cell(spec), 0
    except Exception as e:  # the launcher records this as a failed cell and carries on
        first = (str(e).strip().splitlines() or [""])[0][:400]
        record = CellRecord.not_measured(FAILED, f"{type(e).__name__}: {first}", spec.cell_id, spec.axes)
        traceback.print_exc()
        code = 1
    result_path.write_text(record.to_json() + "\n")
    return code
