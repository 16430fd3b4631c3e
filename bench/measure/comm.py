"""A data-parallel rank's all-reduce time: DDP's default all-reduce as a timed communication hook."""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.distributed as dist


class CommTimer:
    """DDP's default all-reduce as a communication hook, timed: from a bucket's launch to its completion.
    Buckets overlap the backward, so the sum is the time collectives were in flight, not their cost."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def timed_all_reduce(self, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
        t0 = time.perf_counter()
        tensor = bucket.buffer().div_(dist.get_world_size())
        fut = dist.all_reduce(tensor, async_op=True).get_future()

        def done(f: torch.futures.Future[Any]) -> torch.Tensor:
            self.seconds += time.perf_counter() - t0
            return f.value()[0]

        return fut.then(done)

    @classmethod
    def attach(cls, step_model: torch.nn.Module) -> CommTimer | None:
        """A timer registered on the step module's DDP wrapper, or None for a one-process cell."""
        from torch.nn.parallel import DistributedDataParallel

        ddp = getattr(step_model, "_orig_mod", step_model)
        if not isinstance(ddp, DistributedDataParallel):
            return None
        timer = cls()

        # DDP checks a hook's annotations against the real classes; under postponed annotations they
        # are strings, so the hook it is given carries none.
        def hook(state, bucket):
            return timer.timed_all_reduce(bucket)

        ddp.register_comm_hook(None, hook)
        return timer
