"""CFA mosaic, noise and quantisation operators of dpcal.sim (layout, adjointness, gradients)."""

import numpy as np
import pytest
import torch

from dpcal.cfa import PATTERNS, PLANES, color_mask, plane_offsets
from dpcal.physics.cfa import cfa_mask, mosaic, mosaic3, plane_values
from dpcal.physics.noise import make_generators, poisson_gaussian, quantize

DTYPES = [torch.float32, torch.float64]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("device", DEVICES)
def test_mosaic_layout_every_pattern(pattern, device):
    rgb = torch.tensor([0.1, 0.5, 0.9], device=device).view(1, 3, 1, 1).expand(2, 3, 6, 8)
    m = mosaic(rgb, pattern)
    assert m.shape == (2, 1, 6, 8)
    tile = m[0, 0, :2, :2].cpu().numpy()
    expected = {"R": 0.1, "G": 0.5, "B": 0.9}
    for r in range(2):
        for c in range(2):
            assert tile[r, c] == pytest.approx(expected[pattern[2 * r + c]])
    # Four planes in R, Gr, Gb, B order land on their own sites.
    planes = torch.arange(4, dtype=torch.float32, device=device).view(1, 4, 1, 1).expand(1, 4, 6, 8)
    pm = mosaic(planes, pattern)[0, 0].cpu().numpy()
    for i, name in enumerate(PLANES):
        dy, dx = plane_offsets(pattern)[name]
        assert np.all(pm[dy::2, dx::2] == i)
    np.testing.assert_array_equal(cfa_mask(pattern, 6, 8).numpy().astype(bool), color_mask(pattern, 6, 8))


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_mosaic_adjoint(pattern, dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 6, 10, generator=g, dtype=dtype)
    y = torch.rand(2, 1, 6, 10, generator=g, dtype=dtype)
    lhs = (mosaic(x, pattern) * y).sum()
    rhs = (x * mosaic3(y, pattern)).sum()
    assert float(lhs) == pytest.approx(float(rhs), rel=1e-6)
    # mosaic3 keeps each value once, zeros elsewhere (the reference code's layout).
    m3 = mosaic3(y, pattern)
    assert torch.equal(m3.sum(1, keepdim=True), y) and int((m3 != 0).sum()) == y.numel()


def test_mosaic_gradcheck():
    x = torch.rand(1, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: mosaic(t, "GRBG"), (x,))
    p = torch.rand(1, 4, 4, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: mosaic(t, "GBRG"), (p,))


def test_plane_values_odd_sizes():
    v = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    m = plane_values(v, "BGGR", 5, 3)[0, 0]
    assert m.shape == (5, 3)
    assert m[0, 0] == 4 and m[0, 1] == 3 and m[1, 0] == 2 and m[1, 1] == 1 and m[4, 2] == 4


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("device", DEVICES)
def test_noise_dtype_device_and_no_noise_limits(dtype, device):
    x = torch.rand(2, 1, 32, 32, dtype=dtype, device=device) * 0.4 + 0.3
    g = torch.Generator(device=device).manual_seed(3)
    y = poisson_gaussian(x, 0.0, 0.0, generator=g)
    assert y.dtype == dtype and y.device.type == device and torch.equal(y, x)
    # alpha = 0: pure read noise, N(0, 0.05^2); x is 6 sigma from the clip bounds, so unclipped.
    e = (poisson_gaussian(x, torch.zeros(2, 4, dtype=dtype), 0.05, pattern="RGGB", generator=g) - x).double()
    n = e.numel()
    assert abs(float(e.mean())) < 4 * 0.05 / n**0.5
    assert abs(float(e.std()) / 0.05 - 1) < 4 / (2 * n) ** 0.5


def test_per_sample_generators_do_not_depend_on_batching():
    x = torch.rand(3, 1, 16, 16)
    alpha = torch.tensor([0.01, 0.02, 0.05])
    full = poisson_gaussian(x, alpha, 0.02, generator=make_generators([7, 8, 9]))
    one = poisson_gaussian(x[1:2], alpha[1:2], 0.02, generator=make_generators([8]))
    assert torch.equal(full[1:2], one)
    with pytest.raises(ValueError, match="2 generators for a batch of 3"):
        poisson_gaussian(x, alpha, 0.02, generator=make_generators([1, 2]))


def test_poisson_only_at_sites_values_on_alpha_grid():
    # Without Gaussian noise every output is a multiple of alpha: one Poisson count per pixel.
    x = torch.full((1, 1, 32, 32), 0.3, dtype=torch.float64)
    y = poisson_gaussian(x, 0.01, 0.0, generator=torch.Generator().manual_seed(0), clip=False)
    k = y / 0.01
    assert torch.allclose(k, k.round(), atol=1e-9)


def test_noise_gradients():
    # Straight-through for x (d mean / dx = 1), reparameterised for sigma: d y / d sigma = eps.
    x = torch.full((1, 1, 8, 8), 0.5, dtype=torch.float64, requires_grad=True)
    s = torch.tensor(0.01, dtype=torch.float64, requires_grad=True)
    y = poisson_gaussian(x, 1e-3, s, generator=torch.Generator().manual_seed(1), clip=False)
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    g = torch.Generator().manual_seed(1)  # replay the draws: Poisson first, then Gaussian
    torch.poisson(torch.full((1, 1, 8, 8), 500.0, dtype=torch.float64), generator=g)
    eps = torch.randn((1, 1, 8, 8), generator=g, dtype=torch.float64)
    assert float(s.grad) == pytest.approx(float(eps.sum()))
    # Without shot noise the output is smooth in sigma: gradcheck.
    f = lambda sig: poisson_gaussian(x.detach(), 0.0, sig, generator=torch.Generator().manual_seed(5), clip=False)  # noqa: E731
    assert torch.autograd.gradcheck(f, (s,))


@pytest.mark.parametrize("dtype", DTYPES)
def test_quantize(dtype):
    y = torch.rand(2, 1, 6, 6, dtype=dtype, requires_grad=True)
    lv = torch.tensor([[959.0, 959.0, 959.0, 959.0], [4095.0, 4095.0, 4095.0, 16383.0]], dtype=dtype)
    q = quantize(y, lv, pattern="RGGB")
    codes = q.detach() * plane_values(lv, "RGGB", 6, 6)
    assert torch.allclose(codes, codes.round(), atol=1e-6 if dtype == torch.float32 else 1e-9)
    assert float((q - y).detach().abs().max()) <= 0.5 / 959 + 1e-7
    q.sum().backward()  # straight-through
    assert torch.equal(y.grad, torch.ones_like(y))
