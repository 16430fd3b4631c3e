"""Typed, strict run configuration.

One Pydantic model per YAML section; unknown keys and wrong types are errors that name the file and
the dotted key. Precedence, written down once and applied only in :func:`load_config`:

    CLI ``--set key=value`` (and the CLI's own flags such as ``--seed``)  >  YAML file  >  field defaults
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from trainer_core.errors import ConfigError

# fp16/bf16: autocast (fp32 weights, matmuls/convs in the low dtype); bf16-true: the whole model,
# its inputs, gradients and optimizer state in bf16 (Lightning's "bf16-true", TorchBench's "bf16").
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16", "bf16-true")
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


class _Section(BaseModel):
    """Base for every section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    name: str = Field(
        "SimpleMLP",
        description="Registered model name (SimpleMLP, SimpleCNN, ResNet18, GPT), a torchvision classification "
        "model as 'torchvision:<name>' (weights=None), or an import path 'package.module:factory'.",
    )
    kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments for the model factory, checked against its signature; facts of the data "
        "(classes, input channels and size, vocabulary) fill the arguments not given.",
    )
    loss: str | None = Field(
        None,
        description="Your own loss as 'package.module:function', called as loss(outputs, targets); "
        "None: the workload's.",
    )
    memory_format: Literal["contiguous", "channels_last"] = Field(
        "contiguous", description="Memory format of 4-D parameters and input batches."
    )


class DataConfig(_Section):
    name: str = Field(
        "synthetic_blobs",
        description="Dataset: a name registered in trainer_core/datasets.py (synthetic_blobs, synthetic_images, "
        "mnist, fashion_mnist, image_folder, synthetic_jpegs, text), or 'package.module:factory' returning "
        "(train, val, test) torch Datasets.",
    )
    root: str | None = Field(
        None,
        description="Data folder: IDX files (else $TRAINBENCH_DATA, then /usr/share/datasets/<name>), an image "
        "folder (one subfolder per class, or train/ and val/ of them), or where synthetic_jpegs writes.",
    )
    path: str | None = Field(None, description="text: the UTF-8 text file to train on.")
    tokenizer: Literal["char", "byte"] = Field(
        "char", description="text: characters of the file (vocabulary from the file) or UTF-8 bytes (256)."
    )
    block_size: int | None = Field(
        None, ge=2, description="text: tokens per training window; None: the model's model.kwargs.block_size."
    )
    image_shape: list[int] | None = Field(
        None,
        min_length=3,
        max_length=3,
        description="[C, H, W] of the images the model sees: synthetic_images (default [1, 28, 28]), or the crop "
        "of image_folder and synthetic_jpegs (default [3, 224, 224]).",
    )
    kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments of a dataset factory given by import path."
    )
    download: bool = Field(
        False, description="Allow torchvision to download MNIST/Fashion-MNIST when no local copy is found."
    )
    pipeline: Literal["classic", "tensor", "v2"] = Field(
        "tensor",
        description="'classic': per-sample PIL -> transforms -> ToTensor -> Normalize; 'tensor': the split in memory "
        "as uint8, normalised per batch on the device; 'v2' (image folders): torchvision.io.decode_jpeg + "
        "transforms.v2 on uint8 tensors, normalised per batch on the device.",
    )
    batch_size: int = Field(
        64, ge=1, description="Training batch size per rank (samples per optimizer step in each process)."
    )
    eval_batch_size: int = Field(1000, ge=1, description="Batch size for validation and test evaluation.")
    val_fraction: float = Field(
        0.1, ge=0.0, lt=1.0, description="Share of the training split held out for validation (deterministic split)."
    )
    split_seed: int = Field(0, description="Seed of the train/validation split, independent of the training seed.")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes (0 = load in the main process).")
    pin_memory: bool = Field(
        False, description="Pin host batches for faster, non-blocking host-to-device copies (accelerators only)."
    )
    persistent_workers: bool = Field(False, description="Keep workers alive between epochs (needs num_workers > 0).")
    prefetch_factor: int | None = Field(
        None, ge=1, description="Batches prefetched per worker (needs num_workers > 0; None = torch default)."
    )
    drop_last: bool = Field(False, description="Drop the last incomplete training batch.")
    shuffle: bool = Field(True, description="Shuffle the training split every epoch (seeded by seed and epoch).")
    limit_train_samples: int | None = Field(
        None, ge=1, description="Use only the first N training samples (quick runs and tests)."
    )
    n_samples: int = Field(
        2000, ge=10, description="Synthetic datasets: training samples generated; text: training windows per epoch."
    )
    n_test_samples: int = Field(
        1000, ge=10, description="Synthetic datasets: test samples generated; text: validation windows evaluated."
    )
    n_features: int = Field(2, ge=1, description="synthetic_blobs: input dimension.")
    noise: float = Field(0.8, ge=0.0, description="Synthetic datasets: standard deviation of the Gaussian noise.")

    @field_validator("name")
    @classmethod
    def _known_dataset(cls, v: str, info: ValidationInfo) -> str:
        # The registry's names come in through the validation context (trainer_core.loading passes them): the
        # registry imports this module, so this module cannot import it. Without them, the build checks.
        names = (info.context or {}).get("datasets")
        if names is not None and v not in names and ":" not in v:
            raise ValueError(f"unknown dataset {v!r}; expected one of {', '.join(names)} or 'package.module:factory'")
        return v

    @model_validator(mode="after")
    def _worker_options_need_workers(self) -> DataConfig:
        if self.num_workers == 0 and self.persistent_workers:
            raise ValueError("persistent_workers=true needs num_workers > 0")
        if self.num_workers == 0 and self.prefetch_factor is not None:
            raise ValueError("prefetch_factor needs num_workers > 0")
        return self


class OptimConfig(_Section):
    name: Literal["adam", "adamw", "sgd"] = Field("adam", description="Optimizer.")
    lr: float = Field(1e-3, gt=0, description="Learning rate (peak learning rate for onecycle).")
    weight_decay: float = Field(
        0.0, ge=0, description="Weight decay (AdamW: of matrices and embeddings only, not of biases and norm scales)."
    )
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (ignored by Adam/AdamW).")
    betas: tuple[float, float] = Field((0.9, 0.999), description="Adam/AdamW betas.")
    scheduler: Literal["none", "step", "cosine", "onecycle"] = Field(
        "none", description="LR schedule; every schedule advances once per optimizer step."
    )
    step_size_epochs: int = Field(1, ge=1, description="step: decay the LR every this many epochs.")
    gamma: float = Field(0.1, gt=0, le=1, description="step: multiplicative LR decay.")
    min_lr: float = Field(0.0, ge=0, description="cosine: final learning rate.")
    pct_start: float = Field(0.3, gt=0, lt=1, description="onecycle: share of steps spent warming up.")
    warmup_steps: int = Field(0, ge=0, description="cosine: steps of linear warm-up from lr/100 before the decay.")
    lr_scaling: Literal["none", "linear", "sqrt"] = Field(
        "none",
        description="How lr follows the global batch (data.batch_size x ranks) away from reference_batch_size: "
        "linear (Goyal et al. 2017, SGD), sqrt (Hoffer et al. 2017, Adam), or none; warmup_steps shrink or "
        "grow so warm-up covers the same number of samples.",
    )
    reference_batch_size: int | None = Field(
        None, ge=1, description="The global batch at which lr and warmup_steps hold as written (lr_scaling)."
    )
    foreach: bool | None = Field(
        None, description="Multi-tensor (foreach) optimizer kernels; None = torch's default for the device."
    )
    fused: bool | None = Field(
        None, description="Fused optimizer kernel (one kernel for all parameters); None = torch's default."
    )

    @model_validator(mode="after")
    def _foreach_xor_fused(self) -> OptimConfig:
        if self.foreach and self.fused:
            raise ValueError("foreach and fused cannot both be true (torch uses one implementation)")
        if self.lr_scaling != "none" and self.reference_batch_size is None:
            raise ValueError(f"lr_scaling={self.lr_scaling} needs reference_batch_size (the batch lr was tuned at)")
        return self


class EarlyStoppingConfig(_Section):
    patience: int | None = Field(
        None, ge=1, description="Stop after this many epochs without val-loss improvement (None = off)."
    )
    min_delta: float = Field(0.0, ge=0, description="Smallest decrease of val loss that counts as an improvement.")


class TrainLoopConfig(_Section):
    epochs: int = Field(5, ge=1, description="Number of epochs (upper bound when max_steps is set).")
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many optimizer steps in total (also sets the LR schedule length)."
    )
    grad_clip_norm: float | None = Field(
        None, gt=0, description="Clip the global gradient L2 norm to this value (None = no clipping)."
    )
    early_stopping: EarlyStoppingConfig = Field(
        default_factory=EarlyStoppingConfig, description="Early stopping on validation loss."
    )
    deterministic: bool = Field(
        True, description="Use deterministic algorithms (warn-only) and disable cuDNN autotuning."
    )
    threads: int | None = Field(
        None, ge=1, description="torch intra-op threads (None = torch default); recorded in metadata."
    )
    compile: Literal["off", "default", "reduce-overhead", "max-autotune"] = Field(
        "off", description="torch.compile mode for the training forward/backward ('off' = eager)."
    )
    zero_grad_set_to_none: bool = Field(
        True, description="optimizer.zero_grad(set_to_none=...): free gradients instead of zero-filling them."
    )
    malloc: Literal["default", "retain"] = Field(
        "default",
        description="Host malloc policy, process-wide: 'retain' keeps freed buffers in the heap so each step "
        "reuses pages instead of faulting fresh ones in (glibc only).",
    )
    strategy: Literal["single", "ddp", "fsdp"] = Field(
        "single",
        description="Data parallelism: one process, DistributedDataParallel, or FSDP2 (fully_shard: weights, "
        "gradients and optimizer state sharded) over train.world_size processes; data.batch_size is per rank.",
    )
    world_size: int = Field(
        1, ge=1, description="Processes (ranks) on this node for ddp/fsdp; torchrun's environment overrides it."
    )
    nnodes: int = Field(1, ge=1, description="Nodes for ddp/fsdp (more than 1 needs train.rdzv_endpoint).")
    rdzv_endpoint: str | None = Field(
        None, description="host:port of the rendezvous for multi-node runs (default: a free port on this host)."
    )
    dist_timeout_s: float = Field(
        300.0, gt=0, description="Collective timeout: a rank that waits longer on another fails instead of hanging."
    )

    @model_validator(mode="after")
    def _parallel(self) -> TrainLoopConfig:
        if self.strategy == "single" and (self.world_size > 1 or self.nnodes > 1):
            raise ValueError("world_size/nnodes above 1 need train.strategy ddp or fsdp")
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise ValueError("nnodes above 1 needs train.rdzv_endpoint (host:port reachable from every node)")
        return self


class CheckpointConfig(_Section):
    dir: str = Field("checkpoints", description="Checkpoint folder, relative to the run directory.")
    save_last: bool = Field(True, description="Write last_model.pt after every epoch.")
    save_best: bool = Field(True, description="Write best_model.pt when validation loss improves.")
    keep_best_n: int = Field(0, ge=0, description="Also keep the N best epoch checkpoints as best-epochE.pt (0 = off).")
    every_n_steps: int | None = Field(
        None, ge=1, description="Also write last_model.pt every N optimizer steps (mid-epoch resume point)."
    )


class LoggingConfig(_Section):
    tensorboard: bool = Field(True, description="Write TensorBoard scalars under <run>/tensorboard.")
    jsonl: bool = Field(True, description="Write a JSON-lines log <run>/log.jsonl.")
    log_every_n_steps: int = Field(20, ge=1, description="Step-level scalars are written every N optimizer steps.")
    progress_bar: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Epoch progress: 'auto' = a bar on a TTY, else a line every progress_every_s; "
        "'on' = always the bar; 'off' = none.",
    )
    progress_every_s: float = Field(
        30.0, ge=0, description="Off a TTY, print a one-line progress record this often during an epoch (0 = never)."
    )
    track_grad_norm: bool = Field(True, description="Compute and log the global gradient norm every step.")

    @field_validator("progress_bar", mode="before")
    @classmethod
    def _yaml_on_off(cls, v: Any) -> Any:
        # YAML 1.1 reads a bare on/off as a boolean; take it as the user meant it.
        if isinstance(v, bool):
            return "on" if v else "off"
        return v


class InferConfig(_Section):
    runtime: Literal["eager", "compile", "torchscript", "exported-program", "onnxruntime"] = Field(
        "eager",
        description="What runs the model in an inference cell (bench measure.mode inference): eager PyTorch, "
        "torch.compile, or the model exported (bench.export) and run by TorchScript, torch.export or ONNX Runtime.",
    )


@dataclass(frozen=True)
class ScaledOptim:
    """What :meth:`RunConfig.scaled_optim` resolves: the lr and warm-up steps trained with, the factor
    applied to optim.lr, and how it was found (one line, for records and logs)."""

    lr: float
    warmup_steps: int
    factor: float
    how: str

    def to_dict(self) -> dict[str, Any]:
        return {"lr": self.lr, "warmup_steps": self.warmup_steps, "lr_factor": self.factor, "lr_scaling": self.how}


class RunConfig(_Section):
    """The whole run: top-level scalars plus one section per concern."""

    name: str = Field("run", description="Run name, used for the default run directory.")
    seed: int = Field(42, description="Seed for model init, shuffling, dropout and workers.")
    device: str = Field("auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'.")
    precision: str = Field("fp32", description=f"Numeric precision policy: one of {', '.join(PRECISIONS)}.")
    workload: str = Field(
        "auto",
        description="How a batch becomes a loss and what throughput counts: classification, causal_lm, "
        "'package.module:Class', or auto (causal_lm for text data, else classification).",
    )
    model: ModelConfig = Field(default_factory=ModelConfig, description="Model section.")
    data: DataConfig = Field(default_factory=DataConfig, description="Data section.")
    optim: OptimConfig = Field(default_factory=OptimConfig, description="Optimizer and LR schedule.")
    train: TrainLoopConfig = Field(default_factory=TrainLoopConfig, description="Training loop.")
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig, description="Checkpointing.")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Logging.")
    infer: InferConfig = Field(default_factory=InferConfig, description="Inference cells (not read by training).")

    @field_validator("device")
    @classmethod
    def _device_form(cls, v: str) -> str:
        if not _DEVICE_RE.match(v):
            raise ValueError(f"device {v!r} is not one of auto, cpu, cuda, cuda:N")
        return v

    @field_validator("precision")
    @classmethod
    def _known_precision(cls, v: str) -> str:
        if v not in PRECISIONS:
            raise ValueError(f"unknown precision {v!r}; expected one of {', '.join(PRECISIONS)}")
        return v

    @property
    def global_batch_size(self) -> int:
        """Samples per optimizer step over every rank (data.batch_size is per rank)."""
        ranks = self.train.world_size * self.train.nnodes if self.train.strategy != "single" else 1
        return self.data.batch_size * ranks

    def scaled_optim(self) -> ScaledOptim:
        """The learning rate and warm-up this run trains with: optim.lr and optim.warmup_steps moved from
        optim.reference_batch_size to this run's global batch by optim.lr_scaling (the one place the rule lives)."""
        o, batch = self.optim, self.global_batch_size
        if o.lr_scaling == "none" or o.reference_batch_size is None:
            return ScaledOptim(o.lr, o.warmup_steps, 1.0, "none")
        ratio = batch / o.reference_batch_size
        factor = ratio if o.lr_scaling == "linear" else ratio**0.5
        # The same samples of warm-up: a batch k times larger needs k times fewer steps (at least one if any).
        warmup = max(1, round(o.warmup_steps / ratio)) if o.warmup_steps else 0
        how = f"{o.lr_scaling}: global batch {batch} / reference {o.reference_batch_size} -> lr x{factor:.4g}"
        return ScaledOptim(o.lr * factor, warmup, factor, how)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (stored in checkpoints and metadata)."""
        return self.model_dump(mode="json")


def format_validation_error(err: ValidationError, source: str, overridden: set[str]) -> str:
    parts = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        origin = " (from --set)" if key in overridden else ""
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "value_error":
            pass  # our validators already quote the value
        elif "input" in e and e["type"] not in ("missing",) and not isinstance(e["input"], (dict, list)):
            msg = f"{msg} (got {e['input']!r})"
        parts.append(f"{key}{origin}: {msg}")
    return f"{source}: " + "; ".join(parts)


def parse_override(item: str) -> tuple[str, Any]:
    """Parse ``a.b.c=value``; the value is read as YAML so ``3e-4``, ``true`` and ``[1, 2]`` get types."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. optim.lr=3e-4")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    # YAML 1.1 reads '3e-4' as a string (no dot); accept it as a float like a user means it.
    if isinstance(value, str) and re.fullmatch(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+", value):
        value = float(value)
    return key, value


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of ``raw`` with dotted-key overrides set (intermediate dicts are created)."""
    out = copy.deepcopy(raw)
    for key, value in overrides.items():
        node = out
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"--set {key}: '{'.'.join(parts[: i + 1])}' is a value, not a section")
            node = child
        node[parts[-1]] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, turning every failure into a one-line :class:`ConfigError`."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}: not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of sections at the top level, got {type(data).__name__}")
    return data
