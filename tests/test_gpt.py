"""The GPT model: shapes, weight tying, causality, parameter count."""

from __future__ import annotations

import pytest
import torch

from trainer_core.gpt import GPT


def test_shapes_tying_and_parameter_count() -> None:
    torch.manual_seed(0)
    m = GPT(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=32, bias=False)
    out = m(torch.randint(0, 50, (3, 10)))
    assert out.shape == (3, 10, 50)
    assert m.lm_head.weight is m.wte.weight  # tied: counted once
    total = sum(p.numel() for p in m.parameters())
    assert m.num_params(non_embedding=False) == total and m.num_params() == total - 16 * 32
    with pytest.raises(ValueError, match="longer than block_size=16"):
        m(torch.zeros(1, 17, dtype=torch.long))


def test_a_position_never_sees_the_future() -> None:
    torch.manual_seed(0)
    m = GPT(vocab_size=20, block_size=8, n_layer=2, n_head=2, n_embd=16).eval()
    a = torch.randint(0, 20, (1, 8))
    b = a.clone()
    b[0, 5:] = (b[0, 5:] + 1) % 20  # change only the last three tokens
    with torch.no_grad():
        assert torch.allclose(m(a)[0, :5], m(b)[0, :5], atol=1e-6)
        assert not torch.allclose(m(a)[0, 5:], m(b)[0, 5:])
