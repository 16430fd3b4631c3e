"""Cells run in processes forked from a server that has already imported torch (the work of ``python -m
bench.cell_server``; :mod:`multiprocessing`'s ``forkserver``, preloaded).

Why: ``bench.ab`` takes dozens of readings of a few seconds each, and a fresh interpreter spends about
half of such a reading importing torch (and ``torch._inductor``, which ``use_deterministic_algorithms``
pulls in) before the cell starts. A child forked from the preloaded server starts with those modules
loaded and nothing else done: no torch op has run in the server, so no thread pool, allocator or RNG
state is inherited, and the cell then runs exactly as ``python -m bench.cell`` runs it
(:func:`bench.cell_run.run_cell_file`). Each child is still its own process: what one reading leaves
behind (threads, heap, compiled kernels) never reaches the next.

Protocol (the client is :class:`bench.launcher.CellServer`): one JSON request per input line,
``{"spec": PATH, "result": PATH, "log": PATH, "timeout_s": SECONDS}``, answered by one JSON line,
``{"exitcode": INT, "timed_out": BOOL}`` (a negative exit code: killed by that signal). The child's
stdout and stderr go to the request's log. End of input ends the server.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
from pathlib import Path
from typing import IO

# What a reading imports before its cell starts (bench.cell_run brings torch and trainer_core along).
PRELOAD = ["torch", "torch._inductor", "bench.cell_run"]


def reading(spec: str, result: str, log: str) -> None:
    """The forked child: its output to the cell's log, then the cell."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    from bench.cell_run import run_cell_file

    code = run_cell_file(Path(spec), Path(result))
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)


def serve(requests: IO[str], replies: IO[str]) -> None:
    """Answer each request with a reading in a freshly forked child, one at a time, until end of input."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    for line in requests:
        req = json.loads(line)
        proc = ctx.Process(target=reading, args=(req["spec"], req["result"], req["log"]), name="bench-cell")
        proc.start()
        proc.join(req["timeout_s"])
        timed_out = proc.is_alive()
        if timed_out:
            proc.kill()
            proc.join()
        replies.write(json.dumps({"exitcode": proc.exitcode, "timed_out": timed_out}) + "\n")
        replies.flush()
