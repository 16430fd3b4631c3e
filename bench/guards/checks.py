"""Correctness guards run on every matrix cell, in the cell's own precision, device and batch size.

What each guard checks, and what it holds fixed so that its verdict does not depend on where an LR
schedule starts (a one-cycle schedule begins at lr/25: a guard trained there asks about the
schedule, not about the model):

- overfit:     a tiny batch is memorised (final loss below a precision-aware share of the initial
               loss). The LR is held constant at the optimizer's configured rate (``optim.lr``: the
               peak of onecycle, the start of cosine and step), reached after a short linear warm-up
               where the schedule has one; model, precision, optimizer, its betas/momentum/weight
               decay and gradient clipping are the cell's own.
- finite:      every loss and gradient norm seen while measuring is finite (fp16 steps that the
               GradScaler skipped are counted, not failed: skipping them is how fp16 training works).
               It sees the measured steps exactly as the cell ran them, schedule included.
- determinism: two short runs from one seed are bit-identical. Both runs share every setting,
               schedule included, so its start cannot change the verdict.
- resume:      k steps, save, restore into fresh objects, k more steps == 2k steps straight; the
               scheduler's state is part of what is saved and compared, as in any resumed run.

Guards are a registry: ``@register_guard("name")`` on a function ``(GuardContext) -> GuardResult``
is all it takes to add one: matrix validation (``guards.enabled``), the tables' columns and
bench.compare's guard regressions all read the registry or the records. A failing guard never raises;
an exception inside one is reported as that guard's ``error``.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import tempfile
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.cells.contract import ERROR, FAIL, NONDETERMINISTIC, PASS, GuardResult, GuardsConfig, guards_ok
from bench.measure.timing import CELL_OVERRIDES
from trainer_core import distributed
from trainer_core.config import RunConfig, apply_overrides
from trainer_core.factory import Run, build_run
from trainer_core.loading import validate_config
from trainer_core.trainer import BaseHook, StepResult, Trainer

__all__ = [
    "ERROR",
    "FAIL",
    "GUARDS",
    "NONDETERMINISTIC",
    "PASS",
    "QUICK_GUARDS",
    "FiniteWatch",
    "GuardContext",
    "GuardResult",
    "check_guards",
    "constant_lr",
    "guard_warmup_steps",
    "guards_ok",
    "register_guard",
    "run_guards",
]


class FiniteWatch(BaseHook):
    """Collects every step's grad norm and skip flag (tensors stay on the device until checked)."""

    def __init__(self) -> None:
        self.norms: list[torch.Tensor] = []
        self.skipped: list[bool] = []

    def on_step_end(self, trainer: Trainer, result: StepResult) -> None:
        if result.grad_norm is not None:
            self.norms.append(result.grad_norm.detach().float().reshape(()))
            self.skipped.append(result.skipped)


@dataclass
class GuardContext:
    """What a guard may use: the cell's config (as the cell ran it), the guard settings, the device, and
    the cell's own Trainer and step watch after its measured steps (guards that train build their own runs)."""

    config: RunConfig
    settings: GuardsConfig
    device: torch.device
    trainer: Trainer | None = None
    watch: FiniteWatch | None = None


GuardFn = Callable[[GuardContext], GuardResult]
GUARDS: dict[str, GuardFn] = {}  # registration order is the order guards run and appear in tables


GUARD_APPLIES: dict[str, Callable[[RunConfig], bool]] = {}  # guards that only some cells can run


def register_guard(name: str, applies: Callable[[RunConfig], bool] | None = None) -> Callable[[GuardFn], GuardFn]:
    """Register ``fn`` as the guard ``name`` (run on every cell whose ``guards.enabled`` lists it and, with
    ``applies``, whose config it applies to; a cell it does not apply to has no verdict for it)."""

    def add(fn: GuardFn) -> GuardFn:
        if name in GUARDS:
            raise ValueError(f"guard {name!r} is registered twice")
        GUARDS[name] = fn
        if applies is not None:
            GUARD_APPLIES[name] = applies
        return fn

    return add


def constant_lr(config: RunConfig) -> RunConfig:
    """``config`` with its LR schedule held at ``optim.lr`` (every schedule here peaks or starts there)."""
    if config.optim.scheduler == "none":
        return config
    return config.model_copy(update={"optim": config.optim.model_copy(update={"scheduler": "none"})})


def guard_warmup_steps(config: RunConfig, steps: int) -> int:
    """Steps of linear warm-up (from lr/100) the overfit guard takes before it holds the peak lr: the
    config's own warm-up squeezed into at most a quarter of the guard's steps; none where the schedule has
    none. A transformer at a high lr needs its warm-up: held at the peak from the first step, AdamW can
    spend most of a short guard's steps recovering from its first updates, which no real run of the
    config does."""
    o = config.optim
    if o.scheduler == "onecycle":
        declared = steps  # one-cycle always rises to its peak
    elif o.scheduler == "cosine":
        declared = config.scaled_optim().warmup_steps
    else:
        declared = 0
    return min(declared, steps // 4)


@register_guard("overfit")
def guard_overfit(ctx: GuardContext) -> GuardResult:
    """A tiny batch is memorised: final loss below a precision-aware share of the initial loss, or (nearly)
    every prediction on the batch right with the loss at least halved (a loss with a floor above zero, such
    as label smoothing, cannot reach a small share of its initial value however well the batch is learnt;
    nor can a language model's, where windows that start alike continue differently)."""
    config, cfg = ctx.config, ctx.settings
    run = build_run(constant_lr(config))
    warm = guard_warmup_steps(config, cfg.overfit_steps)
    if warm:
        run.trainer.scheduler = torch.optim.lr_scheduler.LinearLR(
            run.trainer.optimizer, start_factor=0.01, total_iters=warm
        )
    x, y = next(iter(run.data.train_loader))
    # Data-parallel: each rank memorises its share, so the job memorises the same few samples one process would.
    ranks = distributed.current().world_size if data_parallel(config) else 1
    n = min(len(y), max(1, cfg.overfit_samples // ranks))
    x, y = run.trainer.workload.tiny_batch(x, y, n)
    losses = run.trainer.train_on_batch(x, y, num_steps=cfg.overfit_steps)
    initial = losses[0]
    final = sum(losses[-5:]) / len(losses[-5:])
    limit = cfg.overfit_ratio.get(config.precision, 0.1)
    ratio = final / initial if initial > 0 else math.inf
    accuracy = run.trainer.evaluate([(x, y)])["accuracy"]  # eval mode: dropout off
    held = f" after a {warm}-step warm-up" if warm else ""
    held += f", {config.optim.scheduler} schedule held at that lr" if config.optim.scheduler != "none" else ""
    detail = (
        f"loss {initial:.4g} -> {final:.4g} ({ratio:.1%} of initial, limit {limit:.0%}; or {MEMORISED_ACCURACY:.0%} "
        f"of predictions right and below {MEMORISED_RATIO:.0%}: {accuracy:.0%} right) in {len(losses)} steps "
        f"on {n * ranks} samples{f' ({n} per rank)' if ranks > 1 else ''} at constant lr {config.optim.lr:g}{held}"
    )
    ok = math.isfinite(final) and (ratio < limit or (accuracy >= MEMORISED_ACCURACY and ratio < MEMORISED_RATIO))
    return GuardResult(name="overfit", status=PASS if ok else FAIL, detail=detail)


MEMORISED_ACCURACY = 0.9  # of 8 samples: all of them; of a language model's 8 windows: 90% of the tokens
MEMORISED_RATIO = 0.5  # with the predictions right, the loss must still have fallen this far


@register_guard("finite")
def guard_finite(ctx: GuardContext) -> GuardResult:
    """Every loss and gradient norm of the measured steps is finite (fp16 steps the GradScaler skipped are counted)."""
    trainer, watch = ctx.trainer, ctx.watch
    if trainer is None or watch is None:
        raise ValueError("the finite guard reads the cell's own measured steps: none were given")
    trainer.flush()
    losses = torch.tensor(trainer.loss_history, dtype=torch.float64)
    bad_losses = int((~torch.isfinite(losses)).sum())
    bad_grads = 0
    if watch.norms:
        finite = torch.isfinite(torch.stack(watch.norms)).cpu()
        skipped = torch.tensor(watch.skipped, dtype=torch.bool)
        bad_grads = int((~finite & ~skipped).sum())
    n_skipped = int(sum(watch.skipped))
    detail = (
        f"{len(losses)} losses, {len(watch.norms)} grad norms checked; {n_skipped} fp16 steps skipped by GradScaler"
    )
    if bad_losses or bad_grads:
        first = next((i for i, v in enumerate(trainer.loss_history) if not math.isfinite(v)), None)
        where = f" (first non-finite loss at step {first + 1})" if first is not None else ""
        return GuardResult(
            name="finite",
            status=FAIL,
            detail=f"{bad_losses} non-finite losses, {bad_grads} non-finite gradient norms{where}; " + detail,
        )
    return GuardResult(name="finite", status=PASS, detail=detail)


def _steps(run: Run, n: int) -> None:
    run.trainer.fit(run.data.train_loader, None, stop_after_steps=n)
    run.trainer.flush()


def _compare(a: Trainer, b: Trainer) -> str | None:
    """None if loss histories and weights are bit-identical, else what differs first."""
    if a.loss_history != b.loss_history:
        i = next(
            (i for i, (u, v) in enumerate(zip(a.loss_history, b.loss_history)) if u != v),
            min(len(a.loss_history), len(b.loss_history)),
        )
        return f"loss differs at step {i + 1}"
    sa, sb = distributed.full_model_state(a.model), distributed.full_model_state(b.model)
    for k in sa:
        if not _identical(sa[k], sb[k]):
            return f"weights differ ({k})"
    return None


def _identical(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit for bit, NaN where the other has NaN (a NaN weight is the finite guard's finding, and two runs
    that both reach it in the same places are deterministic)."""
    if torch.equal(a, b):
        return True
    return (
        a.is_floating_point() and a.shape == b.shape and bool(torch.allclose(a, b, rtol=0.0, atol=0.0, equal_nan=True))
    )


def _gpu_nondeterministic(config: RunConfig, device: torch.device) -> bool:
    return device.type == "cuda" and not config.train.deterministic


@register_guard("determinism")
def guard_determinism(ctx: GuardContext) -> GuardResult:
    """Two short runs from one seed are bit-identical (on a GPU without deterministic algorithms:
    'nondeterministic')."""
    config, k = ctx.config, ctx.settings.short_run_steps
    if _gpu_nondeterministic(config, ctx.device):
        return GuardResult(
            name="determinism",
            status=NONDETERMINISTIC,
            detail="deterministic algorithms are off on this GPU (train.deterministic=false)",
        )
    # Build each run right before stepping it: build_run reseeds the global RNG that dropout draws from.
    first = build_run(config)
    _steps(first, k)
    second = build_run(config)
    _steps(second, k)
    diff = _compare(first.trainer, second.trainer)
    if diff:
        return GuardResult(name="determinism", status=FAIL, detail=f"two runs from seed {config.seed}: {diff}")
    return GuardResult(
        name="determinism", status=PASS, detail=f"two {k}-step runs from seed {config.seed} are bit-identical"
    )


@register_guard("resume")
def guard_resume(ctx: GuardContext) -> GuardResult:
    """k steps, save, restore into fresh objects, k more steps == 2k steps straight."""
    config, k = ctx.config, ctx.settings.short_run_steps
    straight = build_run(config)
    _steps(straight, 2 * k)
    first = build_run(config)
    _steps(first, k)
    with shared_tempdir("trainbench-resume-") as tmp:  # one folder for every rank: rank 0 writes, all read
        path = first.trainer.save_checkpoint(tmp / "mid.pt")
        resumed = build_run(config)
        resumed.trainer.load_checkpoint(path)
        distributed.barrier()  # every rank has read it before rank 0 removes the folder
    _steps(resumed, k)
    diff = _compare(straight.trainer, resumed.trainer)
    if diff:
        status = NONDETERMINISTIC if _gpu_nondeterministic(config, ctx.device) else FAIL
        return GuardResult(
            name="resume", status=status, detail=f"save after {k} steps, restore, {k} more vs {2 * k} straight: {diff}"
        )
    return GuardResult(
        name="resume",
        status=PASS,
        detail=f"save after {k} steps, restore into fresh objects, {k} more == {2 * k} straight",
    )


@contextlib.contextmanager
def shared_tempdir(prefix: str) -> Iterator[Path]:
    """A temporary folder, the same one on every rank of a data-parallel cell (rank 0 makes and removes it)."""
    if not distributed.current().distributed:
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
            yield Path(tmp)
        return
    made = tempfile.mkdtemp(prefix=prefix) if distributed.current().is_main else None
    path = Path(distributed.broadcast_object(made))
    try:
        yield path
    finally:
        distributed.barrier()
        if made:
            shutil.rmtree(made, ignore_errors=True)


def data_parallel(config: RunConfig) -> bool:
    return config.train.strategy != "single" and distributed.current().world_size > 1


# fp16: the initial loss scales both sides try in turn while they skip different steps (an overflow in a
# rank's batch of B that the one batch of N*B does not have is GradScaler at work, not a fault); at a
# scale of 1 a healthy model overflows on neither side.
FP16_EQUIVALENCE_SCALES: tuple[float | None, ...] = (None, 2.0**8, 1.0)


@register_guard("ddp_equivalence", applies=data_parallel)
def guard_ddp_equivalence(ctx: GuardContext) -> GuardResult:
    """N ranks at per-rank batch B for k steps (DDP, or FSDP's shards) reach the weights of one process at
    batch N*B from the same seed: the same samples per step, gradients averaged across ranks. Only the
    order of the gradient sum differs, so the weights agree to a tolerance relative to how far they moved
    (bit-exact where it can)."""
    config, k = ctx.config, ctx.settings.short_run_steps
    world = distributed.current().world_size
    verdict: tuple[str, str] | None = None
    for scale in FP16_EQUIVALENCE_SCALES if config.precision == "fp16" else (None,):
        verdict = _equivalence_try(config, k, world, scale)
        if verdict[0] != "retry":
            break
    status, detail = verdict
    return GuardResult(name="ddp_equivalence", status=FAIL if status == "retry" else status, detail=detail)


def _equivalence_try(config: RunConfig, k: int, world: int, scale: float | None) -> tuple[str, str]:
    """One comparison (every rank gets rank 0's verdict); 'retry' when fp16 skipped different steps."""
    parallel, before = _equivalence_side(config, k, scale)
    after = distributed.full_model_state(parallel.trainer.model)  # FSDP: gathered, a collective on every rank
    verdict = None
    if distributed.current().is_main:  # the one-process reference: no collectives, the other ranks wait
        single = validate_config(
            apply_overrides(
                config.to_dict(),
                {"train.strategy": "single", "train.world_size": 1, "train.nnodes": 1,
                 "data.batch_size": world * config.data.batch_size},
            )
        )  # fmt: skip
        reference, _ = _equivalence_side(single, k, scale)
        skipped = [int(r.trainer.counters["skipped_steps"]) for r in (parallel, reference)]
        at = f" at initial loss scale {scale:g}" if scale is not None else ""
        if skipped[0] != skipped[1]:
            verdict = ("retry", f"fp16{at}: GradScaler skipped {skipped[0]} of {k} steps on the ranks, {skipped[1]} "
                       "in the one process, so their weights cannot be compared")  # fmt: skip
        else:
            status, detail = _equivalence(
                after, reference.trainer.model.state_dict(), before, config.precision, world, k
            )
            verdict = (status, detail + at)
    return distributed.broadcast_object(verdict)


def _equivalence_side(config: RunConfig, k: int, scale: float | None) -> tuple[Run, dict[str, torch.Tensor]]:
    """One side built, frozen (see below) and stepped k times: (its run, its whole weights before the steps)."""
    run = build_run(config)
    freeze_stochastic_layers(run.trainer.model)
    scaler = run.trainer.policy.scaler
    if scale is not None and scaler is not None:
        state = scaler.state_dict()  # before the first step: the scale it will start from
        state["scale"] = scale
        scaler.load_state_dict(state)
    before = {n: t.detach().clone() for n, t in distributed.full_model_state(run.trainer.model).items()}
    _steps(run, k)
    return run, before


def freeze_stochastic_layers(model: torch.nn.Module) -> None:
    """Dropout off, and batch norm normalising with its running statistics, on both sides of the
    comparison: dropout masks cannot match between a batch of B and one of N*B, and DDP normalises each
    rank's batch with its own statistics (not the global batch's) unless the model uses SyncBatchNorm."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.dropout._DropoutNd):
            m.p = 0.0
        elif isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            m.forward = types.MethodType(_frozen_batch_norm, m)


def _frozen_batch_norm(self: torch.nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.batch_norm(
        x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
    )


# The weights' distance from the one-process run, as a share of how far that run moved them (L2 over all
# weights): the sum order of the averaged gradients differs, and Adam's first steps turn a near-zero
# gradient's sign into a full step, so a few weights may differ by up to 2 x lr; a real fault moves all.
DDP_TOLERANCE = {"fp32": 1e-3}
DDP_TOLERANCE_REDUCED = 5e-2  # bf16/fp16: a batch of B and one of N*B run differently shaped kernels


def _equivalence(
    a: dict[str, torch.Tensor],
    b: dict[str, torch.Tensor],
    before: dict[str, torch.Tensor],
    precision: str,
    world: int,
    k: int,
) -> tuple[str, str]:
    """``a``: the ranks' weights after k steps, ``b``: the one process's, ``before``: both sides' start."""
    names = [n for n in a if a[n].is_floating_point()]
    diff = math.sqrt(sum(float((a[n].float() - b[n].float()).pow(2).sum()) for n in names))
    moved = math.sqrt(sum(float((b[n].float() - before[n].float()).pow(2).sum()) for n in names))
    ratio = diff / moved if moved > 0 else math.inf
    limit = DDP_TOLERANCE.get(precision, DDP_TOLERANCE_REDUCED)
    what = "bit-identical" if diff == 0 else f"weights {ratio:.2g} of the one-process run's change apart (L2)"
    detail = (
        f"{world} ranks x batch B vs 1 process x batch {world}B, {k} steps, dropout off and batch-norm "
        f"statistics frozen on both sides: {what} (limit {limit:g})"
    )
    return (PASS if ratio <= limit else FAIL), detail


def enabled_guards(cfg: GuardsConfig) -> list[str]:
    """The guards ``cfg`` names: every registered one when it names none (``enabled: null``)."""
    return list(GUARDS) if cfg.enabled is None else list(cfg.enabled)


def resolved(cfg: GuardsConfig) -> GuardsConfig:
    """``cfg`` with its guards named (as a spec is written: an older revision's cell needs the list)."""
    return cfg.model_copy(update={"enabled": enabled_guards(cfg)})


def run_guards(
    config: RunConfig, cfg: GuardsConfig, device: torch.device, trainer: Trainer, watch: FiniteWatch
) -> list[GuardResult]:
    """Run the enabled guards in registry order; an exception inside a guard is that guard's error, not the cell's."""
    ctx = GuardContext(config, cfg, device, trainer, watch)
    results = []
    enabled = enabled_guards(cfg)
    for name, fn in GUARDS.items():
        if name not in enabled or not GUARD_APPLIES.get(name, lambda _: True)(config):
            continue
        try:
            results.append(fn(ctx))
        except Exception as e:  # a guard that crashes is reported in the row, the run goes on
            results.append(
                GuardResult(name=name, status=ERROR, detail=f"{type(e).__name__}: {e}".splitlines()[0][:300])
            )
    return results


def check_guards(config: RunConfig, cfg: GuardsConfig, steps: int = 5) -> list[GuardResult]:
    """The guards of a matrix cell on ``config``, without its timing: the config set up as a cell runs
    it, ``steps`` steps through the Trainer's loop (what the finite guard reads), then every enabled guard."""
    config = validate_config(apply_overrides(config.to_dict(), CELL_OVERRIDES), source="check_guards")
    watch = FiniteWatch()
    run = build_run(config, hooks=[watch])
    run.trainer.fit(run.data.train_loader, None, stop_after_steps=steps)
    return run_guards(config, cfg, run.device, run.trainer, watch)


# Short guards (8 samples memorised in 60 steps, 2-step runs): what bench.tune and the shipped matrices use.
QUICK_GUARDS = GuardsConfig(enabled=list(GUARDS), overfit_samples=8, overfit_steps=60, short_run_steps=2)
