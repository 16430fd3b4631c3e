"""Host-memory allocator policy (``train.malloc``): how glibc's malloc treats the large buffers a
training step allocates and frees.

PyTorch has no caching allocator for CPU tensors: every activation and gradient buffer of a step is a
fresh ``malloc`` and is freed by the end of the step. glibc serves large requests with ``mmap`` and
gives freed memory at the top of the heap back to the kernel, so the next step touches new pages and
the kernel zero-fills each one on its first write (a minor page fault; costly in a VM). glibc's
mmap threshold rises to the size of each mmap'd block freed (capped at 32 MB on 64-bit), so below
the cap how often that happens depends on the process's allocation history: noise between runs.
(docs/measurements.md has the page faults per step and the samples/s of both policies.)

``retain`` keeps freed memory in the process heap instead: no ``mmap`` for large blocks and no trimming
of the heap top, so each step reuses the pages the previous one faulted in. The cost is that the
process's resident memory stays at its high-water mark instead of shrinking between steps, which is
what PyTorch's CUDA caching allocator does for device memory anyway. The setting is process-wide
(DataLoader workers forked later inherit it) and is not undone: ``default`` leaves malloc as it is.
"""

from __future__ import annotations

import ctypes
import platform
import sys
from functools import lru_cache

MALLOC_POLICIES = ("default", "retain")

# mallopt(3) parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_INT_MAX = 2**31 - 1  # mallopt takes a C int; a top-of-heap surplus this large is never reached


@lru_cache(maxsize=1)
def _glibc() -> ctypes.CDLL | None:
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def malloc_unsupported_reason(policy: str) -> str | None:
    """Why ``policy`` cannot be applied in this process (None if it can)."""
    if policy not in MALLOC_POLICIES:
        return f"unknown malloc policy {policy!r} (expected one of {', '.join(MALLOC_POLICIES)})"
    if policy == "retain" and _glibc() is None:
        libc = platform.libc_ver()[0] or "no glibc"
        return f"train.malloc=retain needs glibc's malloc (this is {sys.platform}, {libc})"
    return None


def apply_malloc_policy(policy: str) -> None:
    """Set ``policy`` for the rest of this process. Raises RuntimeError where it cannot be applied."""
    reason = malloc_unsupported_reason(policy)
    if reason:
        raise RuntimeError(reason)
    if policy == "default":
        return
    libc = _glibc()
    assert libc is not None  # checked above
    # Both return 1 on success. M_MMAP_MAX=0: large blocks come from the heap, not from mmap (an
    # mmap'd block goes back to the kernel when freed). M_TRIM_THRESHOLD: never give the heap's free
    # top back. Either one alone leaves a path to fresh pages every step.
    if not (libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, _INT_MAX)):
        raise RuntimeError("train.malloc=retain: glibc's mallopt refused the setting")
