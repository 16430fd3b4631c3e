"""Model registry: built-in models by name (``@register_model``), or a user factory given as
``package.module:factory`` (its keyword arguments come from ``model.kwargs``, checked against its signature)."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from trainer_core.config import ModelConfig
from trainer_core.errors import ModelError
from trainer_core.gpt import GPT
from trainer_core.imports import import_callable

MODEL_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a model class or factory under ``name`` (``model.name: <name>``)."""

    def add(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in MODEL_REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        MODEL_REGISTRY[name] = factory
        return factory

    return add


@register_model("SimpleMLP")
class SimpleMLP(nn.Module):
    """Fully connected classifier: Linear -> ReLU -> Dropout per hidden layer, then a Linear head."""

    def __init__(
        self, input_dim: int = 2, hidden_dims: Sequence[int] = (32,), output_dim: int = 2, dropout: float = 0.0
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        prev = input_dim
        for h in hidden_dims:
            layers += [nn.Linear(prev, h), nn.ReLU(), nn.Dropout(dropout)]
            prev = h
        layers.append(nn.Linear(prev, output_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@register_model("SimpleCNN")
class SimpleCNN(nn.Module):
    """The seeds' MNIST CNN: two 3x3 convs (1->32->64) each followed by ReLU and 2x2 max-pool,
    dropout 0.25, fc 3136->128, dropout 0.5, fc 128->10."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, padding=1)
        self.pool = nn.MaxPool2d(2, 2)
        self.dropout1 = nn.Dropout(0.25)
        self.fc1 = nn.Linear(64 * 7 * 7, 128)
        self.dropout2 = nn.Dropout(0.5)
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))  # 28x28 -> 14x14
        x = self.pool(torch.relu(self.conv2(x)))  # 14x14 -> 7x7
        x = torch.flatten(self.dropout1(x), 1)
        x = self.dropout2(torch.relu(self.fc1(x)))
        return self.fc2(x)


def _conv_bn(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU()
    )


@register_model("FastCNN")
class FastCNN(nn.Module):
    """A small net built to reach a target accuracy in few epochs (the speedrun style of airbench): two
    3x3 conv -> batch-norm -> ReLU -> 2x2 max-pool stages (``width`` then 2x ``width`` channels) and one
    linear layer. Batch norm lets it take a high learning rate. A quarter of SimpleCNN's multiply-adds
    at the default width."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28, width: int = 16) -> None:
        super().__init__()
        side = max(1, image_size // 4)  # two 2x2 pools; other input sizes are pooled to the same grid
        self.features = nn.Sequential(
            _conv_bn(in_channels, width), nn.MaxPool2d(2), _conv_bn(width, 2 * width), nn.MaxPool2d(2)
        )
        self.pool = nn.AdaptiveMaxPool2d(side)
        self.fc = nn.Linear(2 * width * side * side, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


class _BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


@register_model("ResNet18")
class ResNet18(nn.Module):
    """ResNet-18 for small images (CIFAR/MNIST style): 3x3 stride-1 stem and no initial max-pool,
    so 28x28 inputs keep enough resolution. ``width`` scales every stage (64 = the standard net)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 64) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        layers: list[nn.Module] = []
        in_planes = width
        for i, blocks in enumerate((2, 2, 2, 2)):
            planes = width * (2**i)
            for b in range(blocks):
                stride = 2 if (i > 0 and b == 0) else 1
                layers.append(_BasicBlock(in_planes, planes, stride))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))


TORCHVISION_PREFIX = "torchvision:"


@dataclass(frozen=True)
class DataFacts:
    """What the data says about the model it needs (filled into model arguments the config leaves out)."""

    input_shape: tuple[int, ...]
    num_classes: int
    vocab_size: int | None = None
    block_size: int | None = None

    def candidates(self) -> dict[str, Any]:
        """Argument names a factory may take for each fact."""
        out: dict[str, Any] = {
            "num_classes": self.num_classes,
            "output_dim": self.num_classes,
            "classes": self.num_classes,
            "input_dim": math.prod(self.input_shape),
            "in_features": math.prod(self.input_shape),
        }
        if len(self.input_shape) == 3:
            out["in_channels"] = self.input_shape[0]
        if self.vocab_size is not None:
            out["vocab_size"] = self.vocab_size
        if self.block_size is not None:
            out["block_size"] = self.block_size
        return out


def resolve_factory(name: str) -> Callable[..., nn.Module]:
    """A registered name, ``torchvision:<model>`` (a classification builder of torchvision.models), or
    ``package.module:factory`` imported on demand."""
    if name in MODEL_REGISTRY:
        return MODEL_REGISTRY[name]
    if name.startswith(TORCHVISION_PREFIX):
        return _torchvision_builder(name[len(TORCHVISION_PREFIX) :])
    if ":" not in name:
        raise ModelError(
            f"model.name: unknown model {name!r}; expected one of {', '.join(MODEL_REGISTRY)}, "
            "'torchvision:<name>' or 'package.module:factory'"
        )
    return import_callable(name, "model.name", ModelError)


def _torchvision_builder(arch: str) -> Callable[..., nn.Module]:
    import torchvision.models as tvm

    known = tvm.list_models(module=tvm)  # the classification models (not detection, segmentation, video)
    if arch not in known:
        raise ModelError(
            f"model.name: torchvision has no classification model {arch!r} (e.g. {', '.join(known[:6])}, ...)"
        )

    def build(num_classes: int = 1000, in_channels: int = 3, image_size: int | None = None, **kwargs: Any) -> nn.Module:
        if in_channels != 3:
            raise ModelError(
                f"model.name: torchvision:{arch} takes 3-channel images; the data gives {in_channels} "
                "(set data.image_shape: [3, H, W])"
            )
        if image_size is not None and arch.startswith("vit_"):
            kwargs["image_size"] = image_size  # ViT's position embeddings are sized for the input
        return tvm.get_model(arch, weights=None, num_classes=num_classes, **kwargs)  # weights=None: no download

    build.__name__ = f"torchvision:{arch}"
    return build


def check_kwargs(factory: Callable[..., nn.Module], kwargs: dict[str, Any]) -> None:
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        return
    unknown = [k for k in kwargs if k not in sig.parameters]
    if unknown:
        accepted = ", ".join(p for p in sig.parameters if p != "self") or "none"
        raise ModelError(
            f"model.kwargs.{unknown[0]}: unknown argument for {getattr(factory, '__name__', factory)} "
            f"(accepted: {accepted})"
        )


def fact_kwargs(factory: Callable[..., nn.Module], facts: DataFacts | None, given: dict[str, Any]) -> dict[str, Any]:
    """The facts of the data a factory takes as named arguments, unless the config gives them."""
    if facts is None:
        return {}
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return {}
    out = {k: v for k, v in facts.candidates().items() if k in params and k not in given}
    if "image_size" in params and "image_size" not in given and len(facts.input_shape) == 3:
        out["image_size"] = facts.input_shape[1]
    return out


def build_model(cfg: ModelConfig, facts: DataFacts | None = None) -> nn.Module:
    """Instantiate the configured model (on CPU, in fp32; the Trainer moves it), the data's facts filling
    the arguments the config leaves out."""
    factory = resolve_factory(cfg.name)
    check_kwargs(factory, cfg.kwargs)
    try:
        model = factory(**{**fact_kwargs(factory, facts, cfg.kwargs), **cfg.kwargs})
    except (TypeError, ValueError) as e:
        raise ModelError(f"model.kwargs: {cfg.name} rejected its arguments: {e}") from None
    if not isinstance(model, nn.Module):
        raise ModelError(f"model.name: {cfg.name} returned {type(model).__name__}, not a torch.nn.Module")
    return model


register_model("GPT")(GPT)
