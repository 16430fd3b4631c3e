"""Your own dataset: ``data.name: package.module:factory`` returning ``(train, val, test)`` torch Datasets
(``val`` and ``test`` may be None; ``test`` then reuses ``val``), called with ``data.kwargs``. Items are
``(input, target)`` pairs, batched by the default collate. What a model needs is inferred from the
data: the input shape from the first item, the number of classes from a dataset's ``classes`` or
``num_classes`` attribute, else from its ``targets``, else from the labels of its items.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import Dataset

from trainer_core.config import DataConfig
from trainer_core.data import DataBundle, DatasetInfo, make_loader
from trainer_core.errors import DataError
from trainer_core.imports import import_callable

MAX_LABEL_SCAN = 100_000  # items read to count classes when the dataset does not say


def resolve_dataset_factory(name: str) -> Callable[..., Any]:
    return import_callable(name, "data.name")


def user_dataset_info(name: str) -> DatasetInfo:
    return DatasetInfo(
        name, "tabular", _build, preflight=lambda cfg: resolve_dataset_factory(cfg.name), pipelines=("classic",)
    )


def count_classes(ds: Dataset) -> int:
    for attr in ("num_classes", "classes"):
        value = getattr(ds, attr, None)
        if value is not None:
            return value if isinstance(value, int) else len(value)
    targets = getattr(ds, "targets", None)
    if targets is None:
        targets = [ds[i][1] for i in range(min(len(ds), MAX_LABEL_SCAN))]  # type: ignore[arg-type]
    return int(torch.as_tensor(targets).max()) + 1


def _build(cfg: DataConfig, seed: int, device: torch.device) -> DataBundle:
    parts = resolve_dataset_factory(cfg.name)(**cfg.kwargs)
    if not (isinstance(parts, tuple) and len(parts) == 3):
        raise DataError(f"data.name: {cfg.name} must return (train, val, test) datasets, got {type(parts).__name__}")
    train, val, test = parts
    if train is None or len(train) == 0:
        raise DataError(f"data.name: {cfg.name} returned an empty training set")
    use_pin = cfg.pin_memory and device.type != "cpu"
    common: dict[str, Any] = {"seed": seed, "batched_dataset": False, "use_pin_memory": use_pin}
    train_loader = make_loader(train, cfg, batch_size=cfg.batch_size, train=True, num_workers=cfg.num_workers, **common)
    val_loader = (
        make_loader(val, cfg, batch_size=cfg.eval_batch_size, train=False, num_workers=cfg.num_workers, **common)
        if val
        else None
    )
    test_ds = test if test is not None else val
    test_loader = (
        make_loader(test_ds, cfg, batch_size=cfg.eval_batch_size, train=False, num_workers=cfg.num_workers, **common)
        if test_ds
        else val_loader
    )
    x0 = torch.as_tensor(train[0][0])
    num_classes = count_classes(train)
    names = [str(c) for c in getattr(train, "classes", range(num_classes))]
    meta = {
        "source": cfg.name,
        "name": cfg.name,
        "train_samples": len(train),
        "val_samples": len(val) if val else 0,
        "test_samples": len(test_ds) if test_ds else 0,
        "pin_memory_effective": use_pin,
    }
    return DataBundle(train_loader, val_loader, test_loader, None, num_classes, tuple(x0.shape), names, meta)
