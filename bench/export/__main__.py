"""``python -m bench.export --checkpoint RUN/checkpoints/best_model.pt --format onnx``: rebuild the model from the
checkpoint's own config, export it, check parity against fp64 on the run's test split, and write the file with a
``manifest.json`` to ``RUN/export/<format>/`` (or ``--out``).

Exit codes: 0 exported and parity passed; 2 bad input (missing or foreign checkpoint, unwritable or existing
``--out``, unknown format); 3 the exporter failed (its message, and which formats would work); 4 numerics (the
exported model's outputs drift from fp64 beyond k x the eager model's own error); 5 runtime (the exported file
would not load or run). Nothing is left at ``--out`` unless the export passed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from bench._cli import make_parser, positive_int, run_cli
from bench.export.exporting import ExportFailure, export_checkpoint
from bench.export.formats import FORMATS
from bench.export.report import format_manifest, format_parity


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("bench.export", "Export a checkpoint and check the exported model's numerics.")
    p.add_argument("--checkpoint", required=True, help="checkpoint file (best_model.pt / last_model.pt)")
    p.add_argument("--format", required=True, choices=list(FORMATS), help="what to export to")
    p.add_argument("--out", type=Path, help="output folder, must not exist (default RUN/export/<format>)")
    p.add_argument("--dynamic-batch", action="store_true", help="batch dim left free; parity at batch 1 and larger")
    p.add_argument("--batch", type=positive_int, help="batch size of a static export (default: the run's)")
    p.add_argument("--device", help="device override (auto, cpu, cuda, cuda:N)")
    return p


def main(args: argparse.Namespace) -> int:
    try:
        out, info = export_checkpoint(
            Path(args.checkpoint), args.format, args.out, args.dynamic_batch, args.batch, args.device
        )
    except ExportFailure as e:
        print(f"bench.export: {e.kind}: {e}", file=sys.stderr)
        if e.parity:
            print(format_parity(e.parity), file=sys.stderr)
        return e.exit_code
    print(format_manifest(info))
    print(f"wrote {out}")
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    return run_cli(main, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(cli())
