"""Classification metrics computed from predictions (no formatting here)."""

from __future__ import annotations

import torch


def confusion_matrix(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``cm[t, p]`` = number of samples of true class t predicted as p."""
    idx = targets.long() * num_classes + preds.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(cm: torch.Tensor) -> list[float | None]:
    """Recall per class; None for a class with no samples."""
    totals = cm.sum(dim=1)
    # Python ints: exact counts, then one float division (tensor division would round to float32).
    return [int(cm[i, i]) / int(totals[i]) if totals[i] > 0 else None for i in range(cm.shape[0])]


def accuracy(cm: torch.Tensor) -> float:
    total = int(cm.sum())
    return float(cm.diag().sum()) / total if total else 0.0
