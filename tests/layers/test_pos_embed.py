import math

import pytest
import torch
from torch.testing import assert_close

from vitcap.layers import LearnedPositionEmbedding, SinusoidalPositionEmbedding, build_2d_sincos, sinusoidal_embedding


def test_sinusoidal_has_same_norm_at_every_position() -> None:
    pe = sinusoidal_embedding(torch.arange(500), 32)
    assert pe.shape == (500, 32)
    assert_close(pe.norm(dim=-1), torch.full((500,), math.sqrt(16)))
    # Position 0 is (sin 0, cos 0) = (0, 1) in every pair; distinct positions get distinct vectors.
    assert torch.equal(pe[0], torch.tensor([0.0, 1.0] * 16))
    assert torch.cdist(pe, pe).add(torch.eye(500)).min() > 0.1


def test_sinusoidal_module_continues_past_any_length() -> None:
    module = SinusoidalPositionEmbedding(32)
    assert_close(module(4, offset=1000), sinusoidal_embedding(torch.arange(1000, 1004), 32))
    assert_close(module(3, offset=2), module(6)[2:5])
    assert len(module.state_dict()) == 0  # nothing to store or to outgrow
    # Casting the model to half precision must not round the frequencies (position 1000 would drift).
    assert torch.equal(module.to(torch.bfloat16)(2, offset=1000), sinusoidal_embedding(torch.arange(1000, 1002), 32))


def test_sinusoidal_rejects_odd_width() -> None:
    with pytest.raises(ValueError, match="even"):
        SinusoidalPositionEmbedding(31)


def test_learned_positions_raise_beyond_max_len() -> None:
    module = LearnedPositionEmbedding(max_len=8, dim=16)
    assert torch.equal(module(3, offset=5), module.weight[5:8])
    with pytest.raises(ValueError, match="max_len=8"):
        module(4, offset=5)


def test_2d_sincos_grid() -> None:
    pe = build_2d_sincos(3, 5, 32)
    assert pe.shape == (15, 32)
    # Row-major, laid out [sin(row), sin(col), cos(row), cos(col)]: cells 5 and 9 share grid row 1.
    row_features = torch.cat([torch.arange(0, 8), torch.arange(16, 24)])
    assert torch.equal(pe[5, row_features], pe[9, row_features])
    assert not torch.equal(pe[0, row_features], pe[5, row_features])
    assert torch.equal(pe[2, :8], torch.zeros(8))  # cell (0, 2): sin(row 0) = 0
    assert torch.cdist(pe, pe).add(torch.eye(15)).min() > 0.1
    with pytest.raises(ValueError, match="divisible by 4"):
        build_2d_sincos(2, 2, 30)
