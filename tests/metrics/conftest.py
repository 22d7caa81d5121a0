import math

import pytest
import torch


def _grid(n: int, d: int, offset: float, k: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features, latents)``: float64 features that mix ``k`` latents with noise, on a grid of multiples
    of the float32 spacing at ``offset`` (so ``features + offset`` is exact in float32) with a spread about
    a millionth of ``offset``, the regime where raw moments lose every digit."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, k, generator=g, dtype=torch.float64)
    h = z @ torch.randn(k, d, generator=g, dtype=torch.float64) + 0.7 * torch.randn(n, d, generator=g,
                                                                                   dtype=torch.float64)
    step = 2.0 ** (math.floor(math.log2(offset)) - 23)  # the float32 spacing at offset
    return step * torch.round(2 * h), z


def _shifted(h: torch.Tensor, offset: float) -> torch.Tensor:
    """``h + offset`` as float32, checked to be exact."""
    x = (h + offset).float()
    assert torch.equal(x.double() - offset, h)
    return x


@pytest.fixture
def grid_features():
    """``grid_features(n, d, offset, k=3, seed=0) -> (features float64, latents)`` on an offset-exact grid."""
    return _grid


@pytest.fixture
def shifted():
    """``shifted(h, offset)``: the float32 features ``h + offset`` (exact)."""
    return _shifted
