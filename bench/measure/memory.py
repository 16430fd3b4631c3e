"""What a cell's configuration needs in memory, on any device.

- The process tree (Linux): the cell process and its data-loader workers, as proportional set size (PSS:
  pages shared between the parent and forked workers count once, split between them), sampled on a thread;
  the kernel's own high-water mark of the cell process (VmHWM) beside it. The baseline is taken before the
  model is built, so ``peak - baseline`` is what the configuration added (model, optimizer, activations,
  workers), not the torch import and the harness. A memory cap (``bench.fit``) reads the tree as it would
  stand alone instead (:func:`standalone_now`), so a probe's answer does not depend on how it was started.
- What torch holds, by kind: parameters, gradients and optimizer state are summed exactly from the tensors
  themselves; activations (with the step's temporaries) are the peak of the allocator's running total during
  one profiled training step (``profile_memory=True`` memory events, CPU and CUDA alike) over the forward,
  and the optimizer's temporaries likewise over its step.
- What a CPU process holds beside those tensors, from the host's own books over a step of its own: the
  file-backed pages it mapped (library code), malloc's blocks that are no tensor of the model's (the
  runtime's), the freed blocks glibc kept (glibc's ``mallinfo2``) and CPython's own arenas; the kernel's
  high-water mark is reset before that step, so the split is checked against the peak of the step it was
  read in.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import re
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import torch

from bench.cells.contract import peak_in_optimizer

MB = 2**20
Footprint = Callable[[int, frozenset[int]], tuple[int, int]]  # (a process's bytes, its descendants'), now
SAMPLE_S = 0.05  # how often the sampler reads the tree: fast enough for a step's peak on a loaded machine


def _kb_fields(path: Path, *fields: str) -> dict[str, int]:
    """The 'Field:   123 kB' lines of a /proc file named in ``fields``, in bytes, from one read (smaps_rollup
    costs the kernel a walk of every mapping); a missing file or line is left out."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:
        name, _, rest = line.partition(":")
        if name in fields:
            try:
                out[name] = int(rest.split()[0]) * 1024
            except (ValueError, IndexError):
                continue
    return out


def _kb_field(path: Path, field: str) -> int | None:
    """A 'Field:   123 kB' line of a /proc file, in bytes (None when the file or line is missing)."""
    return _kb_fields(path, field).get(field)


def pss_bytes(pid: int) -> int | None:
    """Proportional set size of ``pid`` (smaps_rollup), else its resident set size (status VmRSS)."""
    proc = Path("/proc") / str(pid)
    return _kb_field(proc / "smaps_rollup", "Pss") or _kb_field(proc / "status", "VmRSS")


def uss_bytes(pid: int) -> int | None:
    """Unique set size of ``pid``: the resident pages no other process maps (smaps_rollup Private_*)."""
    private = _kb_fields(Path("/proc") / str(pid) / "smaps_rollup", "Private_Clean", "Private_Dirty")
    return None if len(private) < 2 else sum(private.values())


def high_water_bytes(pid: int) -> int | None:
    """The kernel's high-water mark of ``pid``'s resident memory (VmHWM)."""
    return _kb_field(Path("/proc") / str(pid) / "status", "VmHWM")


def children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (loader workers, their helpers), from /proc."""
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            kids = [int(c) for t in (Path("/proc") / str(p) / "task").iterdir()
                    for c in (t / "children").read_text().split()]  # fmt: skip
        except OSError:
            kids = []
        out += kids
        todo += kids
    return out


class TreeSampler:
    """Samples the PSS of this process and of its descendants on a thread; keeps the peaks.

    ``peak_self`` and ``peak_workers`` are each their own maximum; ``peak_total`` is the maximum of their sum
    at one sample (what the machine had to hold at once). Descendants already alive when the sampler is made
    (a compile pool an earlier cell of the same process left behind) belong to whoever started them, not to
    what is measured now, so they are never counted."""

    def __init__(self, pid: int | None = None, every_s: float = SAMPLE_S, footprint: Footprint | None = None) -> None:
        self.pid, self.every_s = pid or os.getpid(), every_s
        self.footprint = footprint or tree_now
        self.elders = frozenset(children(self.pid))
        self.peak_self = self.peak_workers = self.peak_total = 0
        self.samples = 0
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mem-sampler", daemon=True)

    def sample(self) -> None:
        own, workers = self.footprint(self.pid, self.elders)
        self.peak_self, self.peak_workers = max(self.peak_self, own), max(self.peak_workers, workers)
        self.peak_total = max(self.peak_total, own + workers)
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._paused.is_set():
                self.sample()
            self._stop.wait(self.every_s)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No sampling inside (a sample reads /proc's smaps: milliseconds of a core, which timed steps must not
        share); one sample on each side. The cell process's own peak inside is the kernel's VmHWM."""
        self.sample()
        self._paused.set()
        try:
            yield
        finally:
            self._paused.clear()
            self.sample()

    def __enter__(self) -> TreeSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def tensor_bytes(tensors: Iterable[Any]) -> int:
    """Bytes of the distinct tensors among ``tensors`` (a shared or tied tensor counts once); of a sharded
    tensor (FSDP's DTensor parameters, gradients and optimizer state), this rank's shard."""
    seen: dict[int, int] = {}
    for t in tensors:
        if isinstance(t, torch.Tensor):
            local = t.to_local() if hasattr(t, "to_local") else t  # a DTensor wraps no storage of its own
            seen[local.untyped_storage().data_ptr()] = local.untyped_storage().nbytes()
    return sum(seen.values())


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]


class MallocBooks(NamedTuple):
    """glibc's own books over every arena (mallinfo2), bytes: what the process's malloc hands out now (small
    blocks and the large ones it mmapped) and what it keeps of freed blocks instead of returning it."""

    in_use: int
    held: int


class _MallInfo2(ctypes.Structure):
    # struct mallinfo2's size_t fields, in order
    _FIELDS = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
    _fields_ = [(name, ctypes.c_size_t) for name in (*_FIELDS, "keepcost")]


@functools.cache
def _mallinfo2() -> Any:
    """glibc's mallinfo2 (glibc 2.33 and later), else None (musl, macOS, an older glibc)."""
    try:
        fn = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype, fn.argtypes = _MallInfo2, []
    return fn


def malloc_books() -> MallocBooks | None:
    """This process's malloc books now (:class:`MallocBooks`), or None where glibc's mallinfo2 is missing."""
    fn = _mallinfo2()
    if fn is None:
        return None
    info = fn()
    return MallocBooks(in_use=info.uordblks + info.hblkhd, held=info.fordblks)


def reset_high_water() -> bool:
    """Reset the kernel's high-water mark of this process's resident memory to what it holds now (Linux 4.0
    and later: ``/proc/self/clear_refs``), so VmHWM from here on is the peak of what follows; False where
    it cannot be reset."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


ARENAS = re.compile(r"arenas \* [\d,]+ bytes/arena\s*=\s*([\d,]+)")  # a line of sys._debugmallocstats()


def python_arena_bytes() -> int | None:
    """Bytes of CPython's small-object arenas now (its own allocator maps them, outside malloc's books: the
    interpreter's objects, an FX graph's or a compiler's as much as the harness's), from the statistics
    ``sys._debugmallocstats`` writes to the C stderr; None where it says nothing of arenas (another
    interpreter, ``PYTHONMALLOC=malloc``)."""
    stats = getattr(sys, "_debugmallocstats", None)
    if stats is None:
        return None
    with tempfile.TemporaryFile() as out:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(out.fileno(), 2)
            stats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        found = ARENAS.search(out.read().decode(errors="replace"))
    return int(found.group(1).replace(",", "")) if found else None


class HostMark(NamedTuple):
    """Where the host's books stood at one moment, bytes: malloc's (None without glibc), the process's
    file-backed resident pages (status RssFile: library code and data mapped from files), the kernel's
    high-water mark of its resident memory (VmHWM; both None where /proc lacks them) and CPython's
    small-object arenas (None where it does not say)."""

    books: MallocBooks | None
    files: int | None
    high_water: int | None
    python: int | None = None


def host_mark() -> HostMark:
    status = _kb_fields(Path("/proc/self/status"), "RssFile", "VmHWM")
    return HostMark(malloc_books(), status.get("RssFile"), status.get("VmHWM"), python_arena_bytes())


LABEL = "mem:"  # the record_function names the split's step carries around each phase


class _PhaseLabels:
    """A trainer hook: each phase of the step as a profiler annotation, so its allocations can be told apart."""

    def phase(self, name: str) -> Any:
        return torch.profiler.record_function(LABEL + name)

    def on_step_end(self, trainer: Any, result: Any) -> None:
        return None


class _PhaseBooks:
    """A trainer hook: malloc's books as each phase of the step ends, by phase."""

    def __init__(self) -> None:
        self.books: dict[str, MallocBooks] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        yield
        books = malloc_books()
        if books is not None:
            self.books[name] = books

    def on_step_end(self, trainer: Any, result: Any) -> None:
        return None


@contextlib.contextmanager
def hooked(trainer: Any, hook: Any) -> Iterator[Any]:
    """``hook`` on ``trainer`` for the steps inside."""
    trainer.hooks.append(hook)
    try:
        yield hook
    finally:
        trainer.hooks.remove(hook)


def allocation_curve(prof: torch.profiler.profile) -> tuple[list[tuple[int, int]], dict[str, tuple[int, int]]]:
    """The allocator's running total above the profile's start at every allocation or free the profiler saw
    (``profile_memory=True``: kineto's ``[memory]`` events, signed bytes, CPU and CUDA alike), in time order;
    and each labelled phase's (start, end) in ns."""
    assert prof.profiler is not None and prof.profiler.kineto_results is not None
    events = list(prof.profiler.kineto_results.events())
    total, curve = 0, []
    for start, nbytes in sorted((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]"):
        total += nbytes
        curve.append((start, total))
    phases = {e.name()[len(LABEL) :]: (e.start_ns(), e.end_ns()) for e in events if e.name().startswith(LABEL)}
    return curve, phases


def rise(curve: list[tuple[int, int]], start: int, end: int) -> int:
    """How far the running total rose within [start, end] above where it stood at ``start``."""
    before = [total for t, total in curve if t < start]
    level = before[-1] if before else 0
    inside = [total for t, total in curve if start <= t <= end]
    return max(0, max(inside, default=level) - level)


def data_bytes(data: Any) -> int:
    """Bytes of the splits held in memory (tensors and numpy arrays on the loaders' datasets, and on the
    datasets a Subset wraps): the tensor pipeline's whole split; a per-sample pipeline's decoded arrays."""
    seen: dict[int, int] = {}
    for loader in (data.train_loader, data.val_loader, data.test_loader):
        ds = getattr(loader, "dataset", None)
        while ds is not None:
            for v in vars(ds).values():
                if isinstance(v, torch.Tensor):
                    seen[v.untyped_storage().data_ptr()] = v.untyped_storage().nbytes()
                elif hasattr(v, "nbytes") and hasattr(v, "__array_interface__"):
                    seen[v.__array_interface__["data"][0]] = int(v.nbytes)
            ds = getattr(ds, "dataset", None)  # a Subset's parent
    return sum(seen.values())


def step_split(trainer: Any, x: torch.Tensor, y: torch.Tensor, data: float = 0.0) -> dict[str, float]:
    """One training step of ``trainer`` on (x, y), MiB: parameters, gradients and optimizer state (exact tensor
    sizes after the step), activations (how far allocations rose over the forward and loss: the tensors saved
    for backward, all live when it ends), backward (how far they rose over the backward above the activations:
    the gradients of activations and the parameters' gradients as they are made) and temporaries (how far they
    rose in the optimizer step); ``data`` (MiB of the splits held in memory) as given."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with hooked(trainer, _PhaseLabels()), torch.profiler.profile(activities=activities, profile_memory=True) as prof:
        trainer.train_step(x, y)
    curve, phases = allocation_curve(prof)
    fwd, bwd, opt = phases.get("forward"), phases.get("backward"), phases.get("optimizer")
    model, optimizer = trainer.model, trainer.optimizer
    return {
        "data": data,
        "params": tensor_bytes(model.parameters()) / MB,
        "grads": tensor_bytes(p.grad for p in model.parameters()) / MB,
        "optimizer": tensor_bytes(optimizer_tensors(optimizer)) / MB,
        "activations": (rise(curve, fwd[0], fwd[1]) if fwd else 0) / MB,
        "backward": (rise(curve, bwd[0], bwd[1]) if bwd else 0) / MB,
        "temporaries": (rise(curve, opt[0], opt[1]) if opt else 0) / MB,
    }


class HostStep(NamedTuple):
    """One training step as the host's books saw it: malloc's as each phase ended, all of them as it ended,
    and whether its high-water mark is its own (the kernel's was reset before it)."""

    phases: dict[str, MallocBooks]
    end: HostMark
    own_peak: bool


def host_step(trainer: Any, x: torch.Tensor, y: torch.Tensor) -> HostStep:
    """One more training step with the host's books read around it (no profiler: its event buffers are no
    cost of the run), the kernel's high-water mark reset first so that the step's peak is its own."""
    own_peak = reset_high_water()
    with hooked(trainer, _PhaseBooks()) as hook:
        trainer.train_step(x, y)
    return HostStep(hook.books, host_mark(), own_peak)


def host_split(split: dict[str, float], start: HostMark, step: HostStep) -> dict[str, float]:
    """What a CPU process holds beside torch's tensors (``split``, from a step like ``step``) since ``start``,
    MiB, each from the host's own books: library (file-backed pages it mapped since: code of the kernels the
    first steps ran), runtime (malloc's blocks in use after the step that are not the data, parameters,
    gradients or optimizer state: kernel caches, the autograd engine's and the libraries' own buffers),
    malloc_held (freed blocks glibc kept instead of returning them, around the step's peak) and python
    (CPython's small-object arenas: the interpreter's objects, a compiled graph's among them). A figure whose
    books are missing (no glibc, no /proc) is left out."""
    out: dict[str, float] = {}
    end = step.end
    if start.files is not None and end.files is not None:
        out["library"] = max(0, end.files - start.files) / MB
    if start.python is not None and end.python is not None:
        out["python"] = max(0, end.python - start.python) / MB
    if start.books is None or end.books is None:
        return out
    live = sum(split.get(k, 0.0) for k in ("data", "params", "grads", "optimizer"))
    out["runtime"] = max(0.0, (end.books.in_use - start.books.in_use) / MB - live)
    # The step's allocations come first from what glibc holds, so the lesser of what it held as the peak's
    # phase began and as it ended stayed resident beside the tensors the split counts.
    around = ("backward", "optimizer") if peak_in_optimizer(split) else ("forward", "backward")
    held = [step.phases[p].held for p in around if p in step.phases] or [end.books.held]
    out["malloc_held"] = max(0, min(held) - start.books.held) / MB
    return out


def tree_now(pid: int | None = None, skip: frozenset[int] = frozenset()) -> tuple[int, int]:
    """(the PSS of ``pid``, default this process, and its descendants' PSS sum but those in ``skip``), bytes,
    now."""
    pid = pid or os.getpid()
    return pss_bytes(pid) or 0, sum(pss_bytes(c) or 0 for c in children(pid) if c not in skip)


def standalone_now(pid: int | None = None, skip: frozenset[int] = frozenset()) -> tuple[int, int]:
    """(the anonymous resident memory of ``pid``, default this process, and its descendants' USS sum but those
    in ``skip``), bytes, now: the tree as it would stand on its own. PSS splits a page among every process that
    maps it, so a process forked from a server that imported torch reads less than the same run started alone;
    RSS counts the library pages a new interpreter touches while importing (file-backed: the kernel can drop
    and read them back), which a forked process never maps, so it reads more. Anonymous pages count in full
    either way, and a loader worker adds only the pages it does not share with the process it was forked
    from."""
    pid = pid or os.getpid()
    return anon_bytes(pid) or 0, sum(uss_bytes(c) or 0 for c in children(pid) if c not in skip)


def rss_bytes(pid: int) -> int | None:
    """Resident set size of ``pid`` (status VmRSS)."""
    return _kb_field(Path("/proc") / str(pid) / "status", "VmRSS")


def anon_bytes(pid: int) -> int | None:
    """Resident anonymous and shared-memory pages of ``pid`` (status RssAnon + RssShmem): what the kernel cannot
    reclaim by dropping pages it can read back from a file."""
    rss = _kb_fields(Path("/proc") / str(pid) / "status", "RssAnon", "RssShmem")
    return None if "RssAnon" not in rss else rss["RssAnon"] + rss.get("RssShmem", 0)


def vm_size_bytes() -> int | None:
    """This process's address space (VmSize)."""
    return _kb_field(Path("/proc/self/status"), "VmSize")


def machine_memory_mb() -> float:
    """The machine's physical memory, MiB."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / MB


def device_peak(device: torch.device) -> dict[str, Any]:
    """Peak memory as a record says it: the CUDA allocator's peak on a GPU, else the process's RSS high-water
    mark (peak_mem_mb, mem_kind)."""
    if device.type == "cuda":
        return {"peak_mem_mb": torch.cuda.max_memory_allocated(device) / MB, "mem_kind": "cuda_max_allocated"}
    from bench.measure.timing import peak_rss_bytes

    return {"peak_mem_mb": peak_rss_bytes() / MB, "mem_kind": "rss_high_water"}


def tree_figures(baseline: int, sampler: TreeSampler) -> dict[str, float]:
    """The record's process-tree figures, MiB: baseline, peak (cell process and workers at one sample), the
    workers' own peak, and the kernel's high-water mark of the cell process."""
    hwm = high_water_bytes(os.getpid())
    out = {"mem_baseline_mb": baseline / MB, "mem_peak_mb": max(sampler.peak_total, baseline) / MB,
           "mem_workers_mb": sampler.peak_workers / MB}  # fmt: skip
    return {**out, **({"mem_hwm_mb": hwm / MB} if hwm else {})}
