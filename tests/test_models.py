from __future__ import annotations

import pytest
import torch

from trainer_core.config import ModelConfig
from trainer_core.errors import ModelError
from trainer_core.models import FastCNN, ResNet18, SimpleCNN, build_model


@pytest.mark.parametrize(
    ("name", "kwargs", "shape"),
    [
        ("SimpleMLP", {"input_dim": 2, "hidden_dims": [8, 8], "output_dim": 3}, (4, 2)),
        ("SimpleCNN", {}, (4, 1, 28, 28)),
        ("ResNet18", {"width": 8}, (4, 1, 28, 28)),
        ("FastCNN", {}, (4, 1, 28, 28)),
        ("FastCNN", {"in_channels": 3, "image_size": 32, "width": 8}, (4, 3, 32, 32)),
        ("FastCNN", {"in_channels": 3, "image_size": 30}, (4, 3, 30, 41)),
    ],
)
def test_registered_models_give_logits(name: str, kwargs: dict, shape: tuple) -> None:
    model = build_model(ModelConfig(name=name, kwargs=kwargs))
    out = model(torch.randn(*shape))
    assert out.shape == (4, kwargs.get("output_dim", 10))


def test_simple_cnn_matches_the_seeds_architecture() -> None:
    m = SimpleCNN()
    assert (m.conv1.in_channels, m.conv1.out_channels, m.conv1.kernel_size) == (1, 32, (3, 3))
    assert (m.conv2.in_channels, m.conv2.out_channels) == (32, 64)
    assert (m.fc1.in_features, m.fc1.out_features, m.fc2.out_features) == (3136, 128, 10)
    assert (m.dropout1.p, m.dropout2.p) == (0.25, 0.5)


def _multiply_adds(model: torch.nn.Module, shape: tuple[int, ...]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        model(torch.randn(*shape))
    return counter.get_total_flops() // 2


def test_fast_cnn_is_batch_normed_and_a_fraction_of_simple_cnns_cost() -> None:
    m = FastCNN()
    convs = [x for x in m.modules() if isinstance(x, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(1, 16), (16, 32)]
    assert sum(isinstance(x, torch.nn.BatchNorm2d) for x in m.modules()) == 2 and m.fc.in_features == 32 * 7 * 7
    assert _multiply_adds(m, (1, 1, 28, 28)) * 3 < _multiply_adds(SimpleCNN(), (1, 1, 28, 28))


def test_resnet18_small_image_stem_and_depth() -> None:
    m = ResNet18()
    stem_conv = m.stem[0]
    assert stem_conv.kernel_size == (3, 3) and stem_conv.stride == (1, 1)
    assert not any(isinstance(x, torch.nn.MaxPool2d) for x in m.modules())
    convs = [x for x in m.modules() if isinstance(x, torch.nn.Conv2d) and x.kernel_size == (3, 3)]
    assert len(convs) == 17  # stem + 8 blocks x 2 (the 18th layer is the fc)


def test_user_model_by_import_path() -> None:
    model = build_model(ModelConfig(name="user_models:make_tiny", kwargs={"in_features": 3, "classes": 4}))
    assert model(torch.randn(5, 3)).shape == (5, 4)


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("Nope", {}, "unknown model 'Nope'"),
        ("no_such_module_xyz:f", {}, "cannot import module 'no_such_module_xyz'"),
        ("user_models:missing", {}, "has no callable 'missing'"),
        ("SimpleMLP", {"bogus": 1}, r"model.kwargs.bogus: unknown argument for SimpleMLP"),
    ],
)
def test_model_errors_name_the_key(name: str, kwargs: dict, match: str) -> None:
    with pytest.raises(ModelError, match=match):
        build_model(ModelConfig(name=name, kwargs=kwargs))
