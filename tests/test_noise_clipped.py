import numpy as np
import pytest

from dpcal.physics.clipped import (
    clipped_curve,
    clipped_mean_slope,
    clipped_mean_std,
    clipped_moments,
    clipped_std,
    invert_clipped_mean,
)


@pytest.mark.parametrize("mu", [-0.08, -0.02, 0.0, 0.03, 0.5, 0.97, 1.0, 1.04])
@pytest.mark.parametrize("s", [0.02, 0.06])
def test_moments_match_monte_carlo(mu, s):
    rng = np.random.default_rng(int(1000 * (mu + 1) + 100 * s))
    n = 400_000
    z = np.clip(rng.normal(mu, s, n), 0.0, 1.0)
    E, E2 = clipped_moments(mu, s)
    m, sd = clipped_mean_std(mu, s)
    # Standard errors computed from the sample, not guessed.
    se_mean = z.std() / np.sqrt(n)
    c = z - z.mean()
    se_var = np.sqrt(np.mean(c**4) - np.mean(c**2) ** 2) / np.sqrt(n)
    assert abs(z.mean() - E) <= 4 * se_mean + 1e-12
    assert abs(z.var() - (E2 - E**2)) <= 4 * se_var + 1e-12
    assert np.isclose(m, E, rtol=0, atol=1e-12)
    # the stable form equals the textbook form of docs/method.md
    assert np.isclose(sd, np.sqrt(max(E2 - E**2, 0.0)), rtol=1e-6, atol=1e-10)


def test_general_bounds_and_far_from_bounds():
    m, sd = clipped_mean_std(0.5, 1e-3, lo=-0.1, hi=1.0)
    assert m == pytest.approx(0.5, abs=1e-15) and sd == pytest.approx(1e-3, rel=1e-12)
    # a shifted and scaled problem gives shifted and scaled moments
    m1, s1 = clipped_mean_std(0.1, 0.05, 0.0, 1.0)
    m2, s2 = clipped_mean_std(2 * 0.1 - 1, 2 * 0.05, -1.0, 1.0)
    assert m2 == pytest.approx(2 * m1 - 1, abs=1e-12) and s2 == pytest.approx(2 * s1, rel=1e-10)
    # stable where E2 - E^2 cancels: s = 1e-7 at y = 0.9
    assert clipped_std(0.9, 1e-7) == pytest.approx(1e-7, rel=1e-9)


def test_slope_matches_finite_difference():
    a, b = 2e-3, 1e-4
    y = np.array([-0.02, 0.0, 0.01, 0.5, 0.99, 1.01])
    h = 1e-6
    num = (clipped_curve(y + h, a, b, skew=False)[0] - clipped_curve(y - h, a, b, skew=False)[0]) / (2 * h)
    s = np.sqrt(a * y + b)
    assert np.allclose(clipped_mean_slope(y, s, a / (2 * s)), num, rtol=1e-5, atol=1e-8)


def test_inversion_round_trip():
    a, b = 1e-3, 4e-5
    t = np.array([-0.01, 0.0, 0.002, 0.3, 0.999, 1.005])
    u = clipped_curve(t, a, b)[0]
    assert np.allclose(invert_clipped_mean(u, a, b, iters=60), t, atol=1e-9)


@pytest.mark.parametrize("y", [0.004, 0.02, 0.97, 0.995])
def test_skew_correction_matches_poisson_gaussian(y):
    """Near a bound, the Edgeworth-corrected moments follow clipped Poisson-Gaussian data
    better than the normal formulas (few photons per noise std: alpha = 4e-3)."""
    a, b = 4e-3, 2e-5
    rng = np.random.default_rng(int(y * 1e4))
    n = 2_000_000
    z = np.clip(a * rng.poisson(y / a, n) + rng.normal(0, np.sqrt(b), n), 0, 1)
    E_n, sd_n = clipped_curve(y, a, b, skew=False)
    E_s, sd_s = clipped_curve(y, a, b, skew=True)
    se = z.std() / np.sqrt(n)
    assert abs(z.std() - sd_s) < abs(z.std() - sd_n) or abs(z.std() - sd_s) < 4 * se
    assert abs(z.mean() - E_s) < abs(z.mean() - E_n) + 4 * se
