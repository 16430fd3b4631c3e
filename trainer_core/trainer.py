"""The Trainer: one training step, one loop, full-state checkpoints and exact resume.

The step is split into named phases (``data``, ``h2d``, ``forward``, ``backward``, ``optimizer``).
A :class:`StepHook` can wrap each phase in a context manager (timers, device syncs, profiler labels),
so a benchmark runner measures *this* loop instead of keeping a second copy of it.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager as ContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from trainer_core import checkpoint as ck
from trainer_core import distributed
from trainer_core.config import RunConfig
from trainer_core.data import find_resumable_sampler
from trainer_core.errors import CheckpointError, ConfigError
from trainer_core.hooks import BaseHook, StepHook, StepResult  # noqa: F401  (re-exported: the hook API)
from trainer_core.phases import PHASES
from trainer_core.precision import resolve_precision
from trainer_core.progress import EpochProgress
from trainer_core.provenance import git_commit, utc_timestamp
from trainer_core.reproducibility import capture_rng_state, restore_rng_state
from trainer_core.run_logger import RunLogger
from trainer_core.workloads import Classification, Workload

_NULL = contextlib.nullcontext()
__all__ = ["PHASES", "BaseHook", "EarlyStopping", "FitResult", "StepHook", "StepResult", "Trainer"]


class EarlyStopping:
    """Stop when validation loss has not improved by ``min_delta`` for ``patience`` epochs."""

    def __init__(self, patience: int | None, min_delta: float = 0.0) -> None:
        self.patience = patience
        self.min_delta = min_delta
        self.best: float = math.inf
        self.bad_epochs = 0
        self.stopped_epoch: int | None = None

    def update(self, epoch: int, val_loss: float) -> bool:
        """Record one epoch's val loss; True when training should stop now."""
        if val_loss < self.best - self.min_delta:
            self.best = val_loss
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
        if self.patience is not None and self.bad_epochs >= self.patience:
            self.stopped_epoch = epoch
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "bad_epochs": self.bad_epochs, "stopped_epoch": self.stopped_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = float(state["best"])
        self.bad_epochs = int(state["bad_epochs"])
        self.stopped_epoch = state["stopped_epoch"]


@dataclass
class FitResult:
    history: list[dict[str, Any]]
    interrupted: bool  # stopped by stop_after_steps; resume from last_model.pt
    early_stopped: bool
    global_step: int
    end_reason: str | None = None  # checkpoint.END_*: why training ended (None: interrupted)


def _grad_norm(params: list[nn.Parameter]) -> torch.Tensor:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    if hasattr(torch.nn.utils, "get_total_norm"):  # torch >= 2.6
        return torch.nn.utils.get_total_norm(grads, 2.0)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.detach()) for g in grads]))


def _build_optimizer(cfg: RunConfig, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    o, lr = cfg.optim, cfg.scaled_optim().lr
    # Only pass the implementation switches the user set: None keeps torch's per-device default.
    impl = {k: v for k, v in (("foreach", o.foreach), ("fused", o.fused)) if v is not None}
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=o.momentum, weight_decay=o.weight_decay, **impl)
    if o.name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=o.betas, weight_decay=o.weight_decay, **impl)
    # AdamW decays matrices and embeddings only, not biases and norm scales (GPT-2, nanoGPT, HF).
    params = list(params)
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": o.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=o.betas, **impl)


def _build_scheduler(
    cfg: RunConfig, opt: torch.optim.Optimizer, steps_per_epoch: int | None
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """Every schedule advances once per optimizer step, so mid-epoch resume needs no special case."""
    o = cfg.optim
    if o.scheduler == "none":
        return None
    if cfg.train.max_steps is not None:
        total = cfg.train.max_steps
    elif steps_per_epoch is not None:
        total = cfg.train.epochs * steps_per_epoch
    else:
        raise ConfigError(f"optim.scheduler={o.scheduler}: needs train.max_steps or a known number of steps per epoch")
    total = max(total, 1)
    if o.scheduler == "step":
        step_size = o.step_size_epochs * (steps_per_epoch or total)
        return torch.optim.lr_scheduler.StepLR(opt, step_size=step_size, gamma=o.gamma)
    if o.scheduler == "cosine":
        warm = min(cfg.scaled_optim().warmup_steps, total - 1)
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total - warm, eta_min=o.min_lr)
        if not warm:
            return cosine
        linear = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.01, total_iters=warm)
        return torch.optim.lr_scheduler.SequentialLR(opt, [linear, cosine], milestones=[warm])
    return torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.scaled_optim().lr, total_steps=total, pct_start=o.pct_start
    )


def _schedule_length(state: dict[str, Any], key: str) -> int | None:
    """A schedule's length entry (``total_steps``, ``T_max``), also inside a SequentialLR's parts."""
    if key in state:
        return state[key]
    return next((sub[key] for sub in state.get("_schedulers", []) if key in sub), None)


class Trainer:
    """Config-driven trainer. ``steps_per_epoch`` sizes the LR schedule (pass ``len(train_loader)``)."""

    def __init__(
        self,
        config: RunConfig,
        model: nn.Module,
        device: torch.device | str,
        *,
        input_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        steps_per_epoch: int | None = None,
        logger: RunLogger | None = None,
        hooks: Iterable[StepHook] = (),
        checkpoint_dir: str | Path | None = None,
        workload: Workload | None = None,
    ) -> None:
        self.config = config
        self.device = torch.device(device)
        self.policy = resolve_precision(config.precision, self.device)
        self.channels_last = config.model.memory_format == "channels_last"
        self.model = self.policy.cast_model(model.to(self.device))
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # The module the training step calls: compiled when train.compile is on. Checkpoints and
        # evaluation use self.model, so state_dict keys never get the compiler's '_orig_mod.' prefix.
        self.dist = distributed.current()
        self.step_model = self._step_module(config)
        if self.policy.scaler is not None and distributed.is_sharded(self.model):
            self.policy.scaler = distributed.sharded_grad_scaler(self.device)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = _build_optimizer(config, self.params)
        self.scheduler = _build_scheduler(config, self.optimizer, steps_per_epoch)
        self.workload = workload if workload is not None else Classification()
        self.input_transform = input_transform
        self.logger = logger
        self.hooks: list[StepHook] = list(hooks)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.early_stopping = EarlyStopping(config.train.early_stopping.patience, config.train.early_stopping.min_delta)
        self.track_grad_norm = config.logging.track_grad_norm or config.train.grad_clip_norm is not None
        # Position and counters (all saved in checkpoints).
        self.epoch = 0
        self.global_step = 0
        self.batch_in_epoch = 0
        self.samples_in_epoch = 0
        self.best_metric = math.inf
        self.best_epoch: int | None = None
        self.loss_history: list[float] = []
        self.history: list[dict[str, Any]] = []
        # items: what throughput counts (samples, or tokens for a language model).
        self.counters: dict[str, float] = {"skipped_steps": 0, "samples_seen": 0, "items_seen": 0, "train_seconds": 0.0}
        self._pending_losses: list[torch.Tensor] = []
        self._pending_norms: list[torch.Tensor] = []
        self._epoch_norms: list[float] = []
        self._best_n: list[tuple[float, Path]] = []
        self._t0 = time.perf_counter()  # start of the current timed stretch of the epoch loop
        self.should_stop = False  # a hook may set this; fit() stops after the current step
        self.end_reason: str | None = None  # why training ended (checkpoint.END_*), saved in checkpoints
        # (loader, (epoch, samples_in_epoch), iterator) of a fit() interrupted by stop_after_steps
        self._live_batches: tuple[DataLoader, tuple[int, int], Iterator[Any]] | None = None

    def _step_module(self, config: RunConfig) -> nn.Module:
        """The module the training step calls. Data-parallel: DistributedDataParallel, which all-reduces
        (averages) the gradients during backward, or the model sharded in place by FSDP2; compiled when
        train.compile is on. Checkpoints and evaluation use self.model, so state_dict keys never get a
        'module.' or '_orig_mod.' prefix."""
        module: nn.Module = self.model
        if self.dist.distributed and config.train.strategy != "single":
            module = distributed.wrap_data_parallel(self.model, config.train.strategy, self.device)
        if config.train.compile != "off":
            mode = None if config.train.compile == "default" else config.train.compile
            module = torch.compile(module, mode=mode)  # compiles lazily, at the first step
        return module

    # ------------------------------------------------------------------------------------ phases
    def _phase(self, name: str) -> ContextManager[Any]:
        if not self.hooks:
            return _NULL
        if len(self.hooks) == 1:
            return self.hooks[0].phase(name)
        stack = contextlib.ExitStack()
        for h in self.hooks:
            stack.enter_context(h.phase(name))
        return stack

    # -------------------------------------------------------------------------------------- step
    def to_device(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # non_blocking only overlaps the copy when the source is pinned; harmless otherwise.
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True)
        if self.input_transform is not None:
            x = self.input_transform(x)
        x = self.policy.cast_input(x)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> StepResult:
        """One optimizer step on one host batch: h2d, forward+loss (autocast), backward, optimizer."""
        with self._phase("h2d"):
            x, y = self.to_device(x, y)
        # Autocast covers forward and loss only; backward runs in the dtypes autocast chose. The loss in
        # fp32 whatever the logits' dtype (autocast already does this for cross-entropy; bf16-true logits
        # would otherwise give a bf16 log-softmax).
        with self._phase("forward"), self.policy.autocast():
            loss = self.workload.loss(self.step_model(x), y)
        with self._phase("backward"):
            self.optimizer.zero_grad(set_to_none=self.config.train.zero_grad_set_to_none)
            scaler = self.policy.scaler
            (scaler.scale(loss) if scaler is not None else loss).backward()
        with self._phase("optimizer"):
            grad_norm, skipped = self._optimizer_step()
        self.global_step += 1
        result = StepResult(
            self.global_step, int(y.shape[0]), loss.detach(), grad_norm, skipped, self.workload.items(y)
        )
        # Losses are kept as device tensors and read in bulk later: a .item() per step would force
        # a host-device sync every step on accelerators.
        self._pending_losses.append(result.loss)
        if grad_norm is not None:
            self._pending_norms.append(grad_norm.detach())
        for h in self.hooks:
            h.on_step_end(self, result)
        return result

    def _optimizer_step(self) -> tuple[torch.Tensor | None, bool]:
        scaler = self.policy.scaler
        clip = self.config.train.grad_clip_norm
        grad_norm = None
        if self.track_grad_norm:
            if scaler is not None:
                scaler.unscale_(self.optimizer)  # norms and clipping must see true gradient values
            if clip is not None:
                grad_norm = torch.nn.utils.clip_grad_norm_(self.params, clip)
            else:
                grad_norm = _grad_norm(self.params)
            grad_norm = distributed.full_tensor(grad_norm)  # FSDP: the norm over every rank's shard
        skipped = False
        if scaler is not None:
            # get_scale() reads the scale on the host (a sync on accelerators, fp16 only): a drop
            # after update() means this step found inf/NaN gradients and was skipped.
            before = scaler.get_scale()
            scaler.step(self.optimizer)
            scaler.update()
            skipped = scaler.get_scale() < before
            if skipped:
                self.counters["skipped_steps"] += 1
        else:
            self.optimizer.step()
        if self.scheduler is not None:
            with warnings.catch_warnings():
                # A skipped fp16 step makes torch warn that the scheduler stepped before the optimizer.
                warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
                self.scheduler.step()
        return grad_norm, skipped

    def train_on_batch(self, x: torch.Tensor, y: torch.Tensor, num_steps: int = 1) -> list[float]:
        """Take ``num_steps`` steps on one batch (overfit checks, guards); returns the losses."""
        self.model.train()
        for _ in range(num_steps):
            self.train_step(x, y)
        start = len(self.loss_history)
        self.flush()
        return self.loss_history[start:]

    def flush(self) -> None:
        """Move pending device-side losses and grad norms into host lists (one sync)."""
        if self._pending_losses:
            losses = torch.stack(self._pending_losses).float()
            if self.dist.distributed and self.config.train.strategy != "single":
                # The global batch's loss (every rank's mean, averaged): what one process would record,
                # and the same history on every rank. A collective: every rank flushes at the same points.
                losses = distributed.mean_across_ranks(losses)
            self.loss_history.extend(losses.cpu().tolist())
            self._pending_losses.clear()
        if self._pending_norms:
            self._epoch_norms.extend(torch.stack(self._pending_norms).float().cpu().tolist())
            self._pending_norms.clear()

    # ------------------------------------------------------------------------------------- eval
    @property
    def loss_fn(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The workload's training loss of (outputs, targets)."""
        return self.workload.loss

    @torch.no_grad()
    def predict(self, loader: DataLoader) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Classification: predicted classes, targets (both on CPU) and the mean loss over ``loader``."""
        preds, targets, loss_sum, n = [], [], 0.0, 0
        for out, y, loss in self._eval_batches(loader):
            loss_sum += float(loss) * y.shape[0]
            n += int(y.shape[0])
            preds.append(out.argmax(dim=1).cpu())
            targets.append(y.cpu())
        if n == 0:
            return torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), float("nan")
        return torch.cat(preds), torch.cat(targets), loss_sum / n

    def evaluate(self, loader: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
        """The workload's metrics over ``loader`` (any iterable of (x, y) batches: loss averaged over
        items, accuracy, ...) and the sample count."""
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        samples = items = 0
        for out, y, loss in self._eval_batches(loader):
            n = self.workload.items(y)
            loss_sum += loss.double() * n
            correct += self.workload.correct(out, y)
            items += n
            samples += int(y.shape[0])
        mean = float(loss_sum) / items if items else float("nan")
        return {**self.workload.summary(mean, int(correct), items), "samples": samples}

    def _eval_batches(
        self, loader: Iterable[tuple[torch.Tensor, torch.Tensor]]
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(outputs, targets, loss) per batch, the model in eval mode and no gradients (restored after)."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                for x, y in loader:
                    x, y = self.to_device(x, y)
                    with self.policy.autocast():
                        out = self.model(x)
                        loss = self.workload.loss(out, y)
                    yield out, y, loss
        finally:
            self.model.train(was_training)

    # -------------------------------------------------------------------------------------- fit
    def _max_steps_reached(self) -> bool:
        return self.config.train.max_steps is not None and self.global_step >= self.config.train.max_steps

    def _epoch_batches(self, loader: DataLoader) -> Iterator[Any]:
        """The rest of the current epoch's batches, starting where a resumed run left off.

        A fit() interrupted by stop_after_steps keeps its iterator: the next fit() on the same loader
        in this process continues it, so repeated short fits (benchmark repeats) do not restart
        DataLoader workers. The result is the same either way (the sampler restarts exactly).
        """
        live = self._live_batches
        self._live_batches = None
        if live is not None and live[0] is loader and live[1] == (self.epoch, self.samples_in_epoch):
            return live[2]
        sampler = find_resumable_sampler(loader)
        if sampler is not None:
            sampler.set_epoch(self.epoch, self.samples_in_epoch)
            return iter(loader)
        it = iter(loader)
        if self.batch_in_epoch:
            warnings.warn("train loader has no ResumableSampler: skipping consumed batches by iterating", stacklevel=3)
            for _ in range(self.batch_in_epoch):
                next(it)
        return it

    def _progress(self, total: int, initial: int) -> EpochProgress:
        log = self.config.logging
        return EpochProgress(
            log.progress_bar, log.progress_every_s, self.epoch + 1, self.config.train.epochs, total, initial
        )

    def fit(
        self, train_loader: DataLoader, val_loader: DataLoader | None = None, *, stop_after_steps: int | None = None
    ) -> FitResult:
        """Train until epochs or max_steps; validate each epoch; early-stop; checkpoint.

        ``stop_after_steps``: stop after that many optimizer steps *in this call* and save
        last_model.pt at the exact position (a planned pre-emption; resume continues from it).
        """
        steps_left = stop_after_steps  # in this call; None: no limit
        early = False
        while self.epoch < self.config.train.epochs and not self._max_steps_reached():
            self.model.train()
            batches = self._epoch_batches(train_loader)
            taken, epoch_done = self._train_epoch(batches, train_loader, steps_left)
            if steps_left is not None:
                steps_left -= taken
            if not epoch_done:
                return self._stop_mid_epoch() if self.should_stop else self._interrupt(train_loader, batches)
            del batches  # shut down this epoch's workers before validation starts its own
            early = self._end_epoch(val_loader)
            if early or self.should_stop:
                break
        return FitResult(self.history, False, early, self.global_step, self.end_reason)

    def _train_epoch(self, batches: Iterator[Any], loader: DataLoader, steps_left: int | None) -> tuple[int, bool]:
        """Steps through the rest of this epoch's batches, at most ``steps_left`` (None: no limit), or until
        max_steps; returns (steps taken, whether the epoch is over)."""
        try:  # after _epoch_batches: a resumed epoch's loader only has the remaining batches
            total_batches = len(loader) + self.batch_in_epoch
        except TypeError:
            total_batches = 0
        bar = self._progress(total_batches, self.batch_in_epoch)
        t0 = self._t0 = time.perf_counter()
        taken, epoch_done = 0, True
        while not self._max_steps_reached():
            if (steps_left is not None and taken >= steps_left) or self.should_stop:
                epoch_done = False  # a hook may end training mid-epoch (a target met at a step's evaluation)
                break
            with self._phase("data"):
                batch = next(batches, None)
            if batch is None:
                break
            x, y = batch
            result = self.train_step(x, y)
            taken += 1
            self.batch_in_epoch += 1
            self.samples_in_epoch += result.batch_size
            # Global counts: every rank takes a batch of the same size per step (data.batch_size is per rank).
            self.counters["samples_seen"] += result.batch_size * self.dist.world_size
            self.counters["items_seen"] = self.counters.get("items_seen", 0) + result.items * self.dist.world_size
            bar.update(self.global_step, result.batch_size)
            t0 = self._after_step(t0)
        self.counters["train_seconds"] += time.perf_counter() - t0
        bar.close()
        return taken, epoch_done

    def _after_step(self, t0: float) -> float:
        """Step-level logging and mid-epoch checkpoints; returns the start of the timed stretch (a
        checkpoint's writing is not training time)."""
        if self.global_step % self.config.logging.log_every_n_steps == 0:
            self._log_step()
        every = self.config.checkpoint.every_n_steps
        if every and self.global_step % every == 0:
            self.counters["train_seconds"] += time.perf_counter() - t0
            self._save_named(ck.LAST_NAME)
            t0 = self._t0 = time.perf_counter()
        return t0

    def _interrupt(self, loader: DataLoader, batches: Iterator[Any]) -> FitResult:
        """stop_after_steps reached mid-epoch: keep the live iterator for a next fit() in this process,
        save last_model.pt at the exact position."""
        self._live_batches = (loader, (self.epoch, self.samples_in_epoch), batches)
        self.flush()
        self._save_named(ck.LAST_NAME)
        if self.logger:
            self.logger.event(
                "interrupted", step=self.global_step, epoch=self.epoch, batch_in_epoch=self.batch_in_epoch
            )
        return FitResult(self.history, True, False, self.global_step)

    def _stop_mid_epoch(self) -> FitResult:
        """A hook set should_stop during the epoch: training ends here, without the epoch's validation."""
        self.flush()
        self.end_reason = ck.END_STOPPED
        if self.logger:
            self.logger.event("stopped", step=self.global_step, epoch=self.epoch, batch_in_epoch=self.batch_in_epoch)
        return FitResult(self.history, False, False, self.global_step, self.end_reason)

    def _log_step(self) -> None:
        self.flush()
        if self.logger is None or not self.loss_history:
            return
        values = {"loss": self.loss_history[-1], "lr": self.optimizer.param_groups[0]["lr"]}
        if self._epoch_norms:
            values["grad_norm"] = self._epoch_norms[-1]
        elapsed = self.counters["train_seconds"] + (time.perf_counter() - self._t0)
        if elapsed > 0:
            values["samples_per_second"] = self.counters["samples_seen"] / elapsed
        self.logger.scalars("train", self.global_step, values, epoch=self.epoch)

    def _end_epoch(self, val_loader: DataLoader | None) -> bool:
        """Validate, record history, update early stopping and checkpoints; True if training stops."""
        self.flush()
        start = self.global_step - self.batch_in_epoch
        losses = self.loss_history[start:]
        val = self.evaluate(val_loader) if val_loader is not None else {"loss": float("nan"), "accuracy": float("nan")}
        train_s = self.counters["train_seconds"]
        record = {
            "epoch": self.epoch + 1,
            "global_step": self.global_step,
            "train_loss": sum(losses) / len(losses) if losses else float("nan"),
            "val_loss": val["loss"],
            "val_accuracy": val["accuracy"],
            "lr": self.optimizer.param_groups[0]["lr"],
            "grad_norm_mean": sum(self._epoch_norms) / len(self._epoch_norms) if self._epoch_norms else None,
            "skipped_steps": int(self.counters["skipped_steps"]),
            "train_seconds_total": train_s,
            "samples_per_second": self.counters["samples_seen"] / train_s if train_s > 0 else None,
        }
        # Metrics of the workload beyond loss and accuracy (a language model's perplexity), and its throughput unit.
        record.update({f"val_{k}": v for k, v in val.items() if k not in ("loss", "accuracy", "samples")})
        if self.workload.unit != "samples":
            items = self.counters.get("items_seen", 0)
            record[f"{self.workload.unit}_per_second"] = items / train_s if train_s > 0 else None
        self.history.append(record)
        self._epoch_norms = []
        for h in self.hooks:
            if hasattr(h, "on_epoch_end"):
                h.on_epoch_end(self, record)
        if self.logger:
            self.logger.scalars(
                "epoch",
                self.epoch + 1,
                {k: v for k, v in record.items() if k != "epoch" and isinstance(v, (int, float))},
            )
        improved = val_loader is not None and math.isfinite(val["loss"]) and val["loss"] < self.best_metric
        if improved:
            self.best_metric = val["loss"]
            self.best_epoch = self.epoch + 1
        stop = val_loader is not None and self.early_stopping.update(self.epoch + 1, val["loss"])
        if stop and self.logger:
            self.logger.event(
                "early_stop", epoch=self.epoch + 1, best_epoch=self.best_epoch, best_val_loss=self.best_metric
            )
        # Advance the position *before* saving so last_model.pt resumes at the next epoch's start, and
        # record why training ends here (if it does) so a resume can tell a finished run from one to continue.
        self.epoch += 1
        self.batch_in_epoch = 0
        self.samples_in_epoch = 0
        self.end_reason = self._end_reason(stop)
        if improved and self.config.checkpoint.save_best:
            self._save_named(ck.BEST_NAME)
            self._keep_best_n(val["loss"])
        if self.config.checkpoint.save_last:
            self._save_named(ck.LAST_NAME)
        return stop

    def _end_reason(self, early_stopped: bool) -> str | None:
        if early_stopped:
            return ck.END_EARLY_STOPPED
        if self._max_steps_reached():
            return ck.END_MAX_STEPS
        if self.epoch >= self.config.train.epochs:
            return ck.END_EPOCHS
        return ck.END_STOPPED if self.should_stop else None

    def completion(self) -> str | None:
        """Why this run (restored from a checkpoint) has nothing left to do under its current config,
        in words; None when it has. A run ended by early stopping or by a hook stays complete until
        :meth:`reopen` is called, even if the config now allows more epochs."""
        t = self.config.train
        if self.end_reason == ck.END_EARLY_STOPPED:
            return f"early-stopped after epoch {self.epoch}, best epoch {self.best_epoch}"
        if self.end_reason == ck.END_STOPPED:
            return f"stopped by a hook after epoch {self.epoch}"
        if t.max_steps is not None and self.global_step >= t.max_steps:
            return f"train.max_steps={t.max_steps} reached (step {self.global_step})"
        if self.epoch >= t.epochs:
            return f"all {t.epochs} epochs done"
        return None

    def reopen(self) -> None:
        """Let a run that early stopping (or a hook) ended train on: its patience starts afresh."""
        if self.end_reason in (ck.END_EARLY_STOPPED, ck.END_STOPPED):
            self.end_reason = None
            self.early_stopping.bad_epochs = 0
            self.early_stopping.stopped_epoch = None

    # ------------------------------------------------------------------------------- checkpoints
    def _save_named(self, name: str) -> None:
        if self.checkpoint_dir is not None:
            t0 = time.perf_counter()
            self.save_checkpoint(self.checkpoint_dir / name)
            # Kept apart so a clock around the whole run (time to target) can leave checkpoint writes out.
            self.counters["checkpoint_seconds"] = (
                self.counters.get("checkpoint_seconds", 0.0) + time.perf_counter() - t0
            )

    def _keep_best_n(self, val_loss: float) -> None:
        n = self.config.checkpoint.keep_best_n
        if not n or self.checkpoint_dir is None:
            return
        path = self.checkpoint_dir / f"best-epoch{self.epoch}.pt"
        self.save_checkpoint(path)
        self._best_n.append((val_loss, path))
        self._best_n.sort(key=lambda t: t[0])
        for _, old in self._best_n[n:]:
            if self.dist.is_main:
                old.unlink(missing_ok=True)
        self._best_n = self._best_n[:n]

    def state_dict(self) -> dict[str, Any]:
        """The full training state as one dict of named entries (keys from :mod:`checkpoint`). Data-parallel:
        a collective (every rank's RNG states are gathered; FSDP's shards are gathered into whole tensors,
        on rank 0 only), so every rank calls it at the same point and rank 0 writes it."""
        self.flush()
        rng = distributed.all_gather_object(capture_rng_state())
        return {
            ck.KEY_FORMAT: ck.FORMAT_VERSION,
            ck.KEY_MODEL: distributed.full_model_state(self.model, rank0_only=True),
            ck.KEY_OPTIMIZER: distributed.full_optimizer_state(self.model, self.optimizer),
            ck.KEY_SCHEDULER: self.scheduler.state_dict() if self.scheduler is not None else None,
            ck.KEY_SCALER: self.policy.scaler.state_dict() if self.policy.scaler is not None else None,
            ck.KEY_EPOCH: self.epoch,
            ck.KEY_GLOBAL_STEP: self.global_step,
            ck.KEY_BATCH_IN_EPOCH: self.batch_in_epoch,
            ck.KEY_SAMPLES_IN_EPOCH: self.samples_in_epoch,
            ck.KEY_BEST_METRIC: self.best_metric,
            ck.KEY_BEST_EPOCH: self.best_epoch,
            ck.KEY_EARLY_STOPPING: self.early_stopping.state_dict(),
            ck.KEY_RNG: rng[0],
            ck.KEY_RNG_PER_RANK: rng if len(rng) > 1 else None,
            ck.KEY_BUFFERS_PER_RANK: distributed.buffers_per_rank(self.model),
            ck.KEY_LOSS_HISTORY: list(self.loss_history),
            ck.KEY_HISTORY: [dict(h) for h in self.history],
            ck.KEY_COUNTERS: dict(self.counters),
            ck.KEY_CONFIG: self.config.to_dict(),
            ck.KEY_TORCH_VERSION: str(torch.__version__),  # TorchVersion is not a weights_only-safe type
            ck.KEY_GIT_COMMIT: git_commit(),
            ck.KEY_TIMESTAMP: utc_timestamp(),
            ck.KEY_END_REASON: self.end_reason,
        }

    def save_checkpoint(self, path: str | Path) -> Path:
        """Write the state atomically: rank 0 writes, every rank waits until it is on disk."""
        path = Path(path)
        state = self.state_dict()
        if self.dist.is_main:
            ck.atomic_save(state, path)
        distributed.barrier()
        return path

    def load_checkpoint(self, path: str | Path) -> dict[str, Any]:
        """Restore everything saved by :meth:`save_checkpoint`; mismatches raise :class:`CheckpointError`."""
        state = ck.load_checkpoint_file(path, map_location=self.device)
        self.load_state_dict(state, source=str(path))
        return state

    def load_state_dict(self, state: dict[str, Any], source: str = "<checkpoint>") -> None:
        saved_model_cfg = state[ck.KEY_CONFIG].get("model", {})
        current_model_cfg = self.config.to_dict()["model"]
        if saved_model_cfg.get("name") != current_model_cfg["name"]:
            raise CheckpointError(
                f"{source}: checkpoint holds model {saved_model_cfg.get('name')!r}, "
                f"config asks for {current_model_cfg['name']!r}"
            )
        try:
            distributed.load_full_model_state(self.model, state[ck.KEY_MODEL])
        except RuntimeError as e:
            raise CheckpointError(f"{source}: model weights do not fit: {ck.describe_state_dict_mismatch(e)}") from None
        try:
            distributed.load_full_optimizer_state(self.model, self.optimizer, state[ck.KEY_OPTIMIZER])
        except (ValueError, KeyError, RuntimeError) as e:
            raise CheckpointError(f"{source}: optimizer state does not fit ({e})") from None
        for key, obj, label in (
            (ck.KEY_SCHEDULER, self.scheduler, "scheduler"),
            (ck.KEY_SCALER, self.policy.scaler, "scaler"),
        ):
            saved = state[key]
            if (saved is None) != (obj is None):
                raise CheckpointError(
                    f"{source}: checkpoint {'has' if saved is not None else 'has no'} {label} state "
                    f"but this config {'uses none' if obj is None else 'uses one'}"
                )
            if obj is not None:
                if obj is self.scheduler:
                    self._check_schedule_length(saved, source)
                obj.load_state_dict(saved)
        self._check_world_size(state, source)
        self.epoch = int(state[ck.KEY_EPOCH])
        self.global_step = int(state[ck.KEY_GLOBAL_STEP])
        self.batch_in_epoch = int(state[ck.KEY_BATCH_IN_EPOCH])
        self.samples_in_epoch = int(state[ck.KEY_SAMPLES_IN_EPOCH])
        self.best_metric = float(state[ck.KEY_BEST_METRIC])
        self.best_epoch = state[ck.KEY_BEST_EPOCH]
        self.early_stopping.load_state_dict(state[ck.KEY_EARLY_STOPPING])
        self.loss_history = [float(v) for v in state[ck.KEY_LOSS_HISTORY]]
        self.history = [dict(h) for h in state[ck.KEY_HISTORY]]
        self.counters = {k: float(v) for k, v in state[ck.KEY_COUNTERS].items()}
        self.end_reason = state.get(
            ck.KEY_END_REASON, ck.END_EARLY_STOPPED if self.early_stopping.stopped_epoch else None
        )
        self._pending_losses.clear()
        self._pending_norms.clear()
        self._live_batches = None
        self._best_n = self._kept_best_n()
        per_rank = state.get(ck.KEY_RNG_PER_RANK)
        mine = per_rank[self.dist.rank] if per_rank and len(per_rank) == self.dist.world_size else state[ck.KEY_RNG]
        restore_rng_state(mine)
        buffers = state.get(ck.KEY_BUFFERS_PER_RANK)
        if buffers and len(buffers) == self.dist.world_size:  # FSDP: this rank's own running statistics
            distributed.load_buffers(self.model, buffers[self.dist.rank])

    def _check_world_size(self, state: dict[str, Any], source: str) -> None:
        """A position inside an epoch counts this rank's samples of a sharded order: it means the same
        thing only with the same number of ranks (an epoch boundary is the same for any number)."""
        train = state[ck.KEY_CONFIG].get("train", {})
        saved = int(train.get("world_size", 1)) * int(train.get("nnodes", 1))
        if saved != self.dist.world_size and int(state[ck.KEY_SAMPLES_IN_EPOCH]) > 0:
            raise CheckpointError(
                f"{source}: saved mid-epoch by {saved} rank(s); resume it with {saved} "
                f"(this run has {self.dist.world_size}), or from an epoch-end checkpoint"
            )

    def _check_schedule_length(self, saved: dict[str, Any], source: str) -> None:
        """A restored schedule keeps the length it was built for; refuse a config that asks for another
        one (more epochs or steps), which would otherwise follow the old curve past its end (cosine)
        or fail there (onecycle)."""
        fresh = self.scheduler.state_dict() if self.scheduler is not None else {}
        for key in ("total_steps", "T_max"):
            if _schedule_length(saved, key) != _schedule_length(fresh, key):
                raise CheckpointError(
                    f"{source}: optim.scheduler={self.config.optim.scheduler} was sized for "
                    f"{_schedule_length(saved, key)} steps; this config (train.epochs={self.config.train.epochs}, "
                    f"train.max_steps={self.config.train.max_steps}) sizes it for {_schedule_length(fresh, key)}: "
                    "a schedule cannot be stretched mid-run. Resume with the run's own length, or start a new run"
                )

    def _kept_best_n(self) -> list[tuple[float, Path]]:
        """The best-epoch files a resumed run already holds, with their validation losses from the history."""
        if not self.config.checkpoint.keep_best_n or self.checkpoint_dir is None:
            return []
        kept = [(float(h["val_loss"]), self.checkpoint_dir / f"best-epoch{h['epoch']}.pt") for h in self.history]
        return sorted((v, p) for v, p in kept if p.exists())
