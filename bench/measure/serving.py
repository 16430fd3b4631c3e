"""Cells run in processes forked from a server that has already imported torch (the work of ``python -m
bench.cell_server``).

Why: ``bench.ab`` takes dozens of readings of a few seconds each, and a fresh interpreter spends about
half of such a reading importing torch (and ``torch._inductor``, which ``use_deterministic_algorithms``
pulls in) before the cell starts. A child forked from the preloaded server starts with those modules
loaded and nothing else done: no torch op has run in the server, so no thread pool, allocator or RNG
state is inherited, and the cell then runs exactly as ``python -m bench.cell`` runs it
(:func:`bench.measure.entry.run_cell_file`). Each child is still its own process: what one reading leaves
behind (threads, heap, compiled kernels) never reaches the next.

The server forks its children itself (``os.fork``) rather than through multiprocessing's forkserver: that
one starts a new interpreter whose import path (Python 3.11 ignores the ``sys_path`` it is given) puts the
working directory first, so a revision's worktree would run this checkout's modules.

Protocol (the client is :class:`bench.launch.server.CellServer`): once its imports are done the server
writes ``{"ready": true}`` (a client renewing servers waits for it, so no import runs beside a reading); then
one JSON request per input line,
``{"spec": PATH, "result": PATH, "log": PATH, "timeout_s": SECONDS}``, answered by one JSON line,
``{"exitcode": INT, "timed_out": BOOL}`` (a negative exit code: killed by that signal). The child's
stdout and stderr go to the request's log. End of input ends the server.
"""

from __future__ import annotations

import importlib
import json
import os
import select
import signal
import sys
import traceback
from pathlib import Path
from typing import IO

# What a reading imports before its cell starts (bench.measure.cell brings torch and trainer_core along).
PRELOAD = ["torch", "torch._inductor", "bench.measure.entry"]
READY = {"ready": True}  # the server's first line, once PRELOAD is imported


def preload() -> None:
    for name in PRELOAD:
        importlib.import_module(name)


def reading(spec: str, result: str, log: str) -> int:
    """In the forked child: its output to the cell's log, no input, then the cell; its exit code."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)  # the requests pipe stays the server's
    os.close(null)
    from bench.measure.entry import run_cell_file

    return run_cell_file(Path(spec), Path(result))


def fork_reading(spec: str, result: str, log: str) -> int:
    """Fork a child that runs the cell and leaves with ``os._exit`` (never through the server's own
    exit path); the child's pid."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        code = reading(spec, result, log)
    except BaseException:  # into the cell's log, as a new interpreter would print it
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def wait_child(pid: int, timeout_s: float, requests: int | None = None) -> tuple[int, bool]:
    """(exit code, timed out) of child ``pid``, killed when it is still running after ``timeout_s``, or as
    soon as ``requests`` (the server's input, a pipe nobody writes to while a cell runs) ends: the parent is
    gone (a tune stopped with a signal), and its cell would go on using the cores of whatever runs next."""
    pidfd = os.pidfd_open(pid)
    try:
        ready, _, _ = select.select([pidfd] + ([requests] if requests is not None else []), [], [], timeout_s)
        done = pidfd in ready
    finally:
        os.close(pidfd)
    if not done:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), not ready  # neither the cell nor the input: the time ran out


def serve(requests: IO[str], replies: IO[str]) -> None:
    """Answer each request with a reading in a freshly forked child, one at a time, until end of input."""
    preload()
    replies.write(json.dumps(READY) + "\n")
    replies.flush()
    for line in requests:
        req = json.loads(line)
        pid = fork_reading(req["spec"], req["result"], req["log"])
        exitcode, timed_out = wait_child(pid, req["timeout_s"], requests.fileno())
        try:
            replies.write(json.dumps({"exitcode": exitcode, "timed_out": timed_out}) + "\n")
            replies.flush()
        except BrokenPipeError:  # the parent is gone: nobody to answer
            return
