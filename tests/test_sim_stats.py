"""Simulator output statistics against the clipped Poisson-Gaussian model (docs/method.md sec. 2)."""

import math

import numpy as np
import pytest
import torch

from dpcal.cfa import PATTERNS, PLANES, split_planes
from dpcal.profile import load_profile, new_profile
from dpcal.sim import Simulator
from dpcal.physics.clipped import clipped_normal_moments, clipped_poisson_gaussian_moments


def per_plane_profile():
    """A profile whose four planes have clearly different noise (catches plane mix-ups)."""
    a = {"R": 2e-4, "Gr": 1e-4, "Gb": 1.2e-4, "B": 3e-4}
    s = {"R": 6e-4, "Gr": 3e-4, "Gb": 4e-4, "B": 9e-4}
    return new_profile("planes-test", "dpcal", "test", pattern="GRBG", black_level=[64] * 4, white_level=1023,
                       table=[{"iso": 100, "alpha": a, "sigma": s}], iso_model="linear")


def check_moments(samples, x, alpha, sigma, n_se=5.0):
    """Sample mean and variance vs the exact model, within n_se computed standard errors.

    Returns the z-scores (mean, var) so callers can also show that a wrong model is rejected.
    """
    n = samples.size
    m, v = clipped_poisson_gaussian_moments(x, alpha, sigma)
    d = samples - samples.mean()
    mu4 = float(np.mean(d**4))
    se_mean = math.sqrt(max(v, 1e-30) / n)
    se_var = math.sqrt(max(mu4 - float(np.var(samples)) ** 2, 1e-30) / n)
    z_mean = (samples.mean() - m) / se_mean
    z_var = (np.var(samples, ddof=1) - v) / se_var
    assert abs(z_mean) < n_se, f"x={x} alpha={alpha:.3g} sigma={sigma:.3g}: mean {samples.mean():.5f} vs {m:.5f} ({z_mean:.1f} SE)"
    assert abs(z_var) < n_se, f"x={x} alpha={alpha:.3g} sigma={sigma:.3g}: var {np.var(samples):.6f} vs {v:.6f} ({z_var:.1f} SE)"
    return z_mean, z_var, se_mean, se_var


@pytest.mark.parametrize("mode", ["reference", "realistic"])
@pytest.mark.parametrize("lux", [3.0, 20.0, 200.0])
def test_flat_gray_matches_clipped_poisson_gaussian(mode, lux):
    prof = per_plane_profile()
    kw = {"linearize": "none", "quantize": False} if mode == "realistic" else {}
    sim = Simulator(prof, mode=mode, lux=lux, **kw)
    alpha, sigma, _ = sim.noise_params([lux])
    for i, level in enumerate([0.02, 0.2, 0.5, 0.9, 0.98]):
        img = torch.full((6, 3, 96, 96), level, dtype=torch.float64)
        out = sim(img, generator=torch.Generator().manual_seed(100 + i))
        planes = split_planes(out.mosaic[:, 0].numpy(), sim.pattern)  # (B, 4, h, w)
        for j, p in enumerate(PLANES):
            check_moments(planes[:, j].ravel(), level, alpha[0, j], sigma[0, j])


def test_the_check_has_power():
    # At 3 lux near black, ignoring the clipping (var = alpha x + sigma^2) must be rejected.
    prof = load_profile("nexus6p-rear")
    sim = Simulator(prof, mode="reference", lux=3.0)
    a, s, _ = sim.noise_params([3.0])
    out = sim(torch.full((4, 3, 96, 96), 0.05, dtype=torch.float64), generator=torch.Generator().manual_seed(0))
    y = split_planes(out.mosaic[:, 0].numpy(), "BGGR")[:, 0].ravel()
    _, _, se_mean, se_var = check_moments(y, 0.05, a[0, 0], s[0, 0])
    naive_var = a[0, 0] * 0.05 + s[0, 0] ** 2
    assert abs(np.var(y) - naive_var) > 20 * se_var
    assert abs(y.mean() - 0.05) > 20 * se_mean


@pytest.mark.parametrize("pattern", PATTERNS)
def test_per_plane_noise_follows_pattern(pattern):
    prof = per_plane_profile()
    sim = Simulator(prof, lux=2.0, pattern=pattern, linearize="none", quantize=False)
    a, s, _ = sim.noise_params([2.0])
    out = sim(torch.full((4, 3, 64, 64), 0.4, dtype=torch.float64), generator=torch.Generator().manual_seed(1))
    planes = split_planes(out.mosaic[:, 0].numpy(), pattern)
    for j in range(4):
        check_moments(planes[:, j].ravel(), 0.4, a[0, j], s[0, j])


def test_quantised_output_on_dn_grid():
    sim = Simulator("nexus6p-rear", lux=50.0)  # realistic: quantised to (1023 - 64) steps
    out = sim(torch.rand(2, 3, 32, 32), seeds=[1, 2])
    codes = out.mosaic.double() * 959
    assert torch.allclose(codes, codes.round(), atol=2e-3)
    assert float(out.levels[0, 0]) == 959


@pytest.mark.filterwarnings("ignore::dpcal.profile.OutOfRangeWarning")  # extrapolation is compared on purpose
@pytest.mark.parametrize("profile_id", ["nexus6p-rear", "eld-sonya7s2", "sidd-gp", "pixel"])
def test_vectorised_noise_params_equal_profile_noise(profile_id):
    prof = load_profile(profile_id)
    sim = Simulator(prof, lux=(2, 200))
    lux = np.array([2.0, 3.0, 17.5, 200.0])
    alpha, sigma, iso = sim.noise_params(lux)
    for k, lx in enumerate(lux):
        n = prof.noise(lux=lx)
        assert iso[k] == n.iso
        for j, p in enumerate(PLANES):
            assert alpha[k, j] == n.alpha[p] and sigma[k, j] == n.sigma[p]


def test_lux_range_is_log_uniform():
    from scipy.stats import kstest

    sim = Simulator("nexus6p-rear", lux=(2, 200))
    lux = sim.sample_lux(4000, torch.Generator().manual_seed(0)).numpy()
    assert lux.min() >= 2 and lux.max() <= 200
    u = (np.log(lux) - np.log(2)) / (np.log(200) - np.log(2))
    assert kstest(u, "uniform").pvalue > 1e-3
    assert kstest(lux / 200, "uniform").pvalue < 1e-6  # and not uniform in lux


def test_moment_formulas_against_monte_carlo():
    rng = np.random.default_rng(0)
    for mu, s in [(0.0, 1.0), (0.95, 0.1), (0.3, 0.02)]:
        z = np.clip(rng.normal(mu, s, 400_000), 0, 1)
        m, v = clipped_normal_moments(mu, s)
        assert abs(z.mean() - m) < 5 * math.sqrt(v / z.size) and abs(z.var() / v - 1) < 0.01
    for x, a, s in [(0.05, 0.1248, 0.3155), (0.5, 0.01, 0.02), (0.97, 0.002, 0.01)]:
        z = np.clip(a * rng.poisson(x / a, 400_000) + rng.normal(0, s, 400_000), 0, 1)
        m, v = clipped_poisson_gaussian_moments(x, a, s)
        assert abs(z.mean() - m) < 5 * math.sqrt(v / z.size) and abs(z.var() / v - 1) < 0.015
