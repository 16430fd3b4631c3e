import torch

from trainer_core.metrics import accuracy, confusion_matrix, per_class_accuracy


def test_confusion_matrix_and_per_class_accuracy() -> None:
    preds = torch.tensor([0, 1, 1, 2, 2, 2])
    targets = torch.tensor([0, 1, 2, 2, 2, 0])
    cm = confusion_matrix(preds, targets, 4)
    assert cm.tolist() == [[1, 0, 1, 0], [0, 1, 0, 0], [0, 1, 2, 0], [0, 0, 0, 0]]
    assert per_class_accuracy(cm) == [0.5, 1.0, 2 / 3, None]
    assert accuracy(cm) == 4 / 6
