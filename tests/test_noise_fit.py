"""The likelihood fit on level sets drawn from the exact clipped model."""

import numpy as np
import pytest

from dpcal.errors import FitError
from dpcal.noise.fit import fit_levelsets
from dpcal.noise.levelsets import LevelSets, unbiased_std


def _sets(a, b, levels, n, rng, lo=0.0, hi=1.0):
    t = np.asarray(levels)[:, None]
    z = np.clip(rng.normal(t, np.sqrt(np.maximum(a * t + b, 1e-12)), (len(levels), n)), lo, hi)
    k = len(levels)
    nn = np.full(k, float(n))
    return LevelSets(z.mean(1), unbiased_std(z.var(1, ddof=1), n - 1), nn, 1 / nn, 1 / (2 * (nn - 1)),
                     np.full(k, lo), np.full(k, hi), np.zeros(k, int))


def test_unbiased_and_calibrated_with_clipping_at_both_ends():
    """Over many replicates: no bias beyond its standard error, and honest error bars."""
    a, b = 3e-3, 4e-5
    levels = np.linspace(-0.03, 1.03, 50)
    res = []
    for seed in range(24):
        f = fit_levelsets(_sets(a, b, levels, 2000, np.random.default_rng(seed)))
        res.append((f.alpha, f.alpha_std, f.b, f.b_std))
    res = np.array(res)
    k = len(res)
    # bias within 4 standard errors of the mean of the replicates
    assert abs(res[:, 0].mean() - a) < 4 * res[:, 0].std(ddof=1) / np.sqrt(k)
    assert abs(res[:, 2].mean() - b) < 4 * res[:, 2].std(ddof=1) / np.sqrt(k)
    # reported uncertainties agree with the scatter within a factor 1.6 either way
    for est, rep in ((res[:, 0], res[:, 1]), (res[:, 2], res[:, 3])):
        ratio = rep.mean() / est.std(ddof=1)
        assert 1 / 1.6 < ratio < 1.6, ratio


def test_clipped_sets_are_needed_and_used():
    """Sets near the bounds follow the clipped curve: a naive unclipped fit would be biased."""
    a, b = 4e-3, 2e-4
    rng = np.random.default_rng(5)
    sets = _sets(a, b, np.linspace(-0.05, 1.05, 60), 4000, rng)
    f = fit_levelsets(sets)
    assert abs(f.alpha / a - 1) < 0.03
    # the fitted clipped curve goes through the clipped sets (chi2 near 1)
    assert 0.5 < f.gof["chi2_red"] < 1.6
    near = (f.sets.level < 0.03) | (f.sets.level > 0.97)
    assert near.sum() >= 4
    assert np.all(np.abs(f.fitted_std[near] / f.sets.std[near] - 1) < 0.2)


def test_robust_to_textured_sets():
    a, b = 2e-3, 1e-5
    rng = np.random.default_rng(2)
    sets = _sets(a, b, np.linspace(0.02, 0.98, 80), 3000, rng)
    bad = rng.choice(80, 12, replace=False)  # 15 % of the sets inflated by texture
    sets.std[bad] *= rng.uniform(1.3, 2.5, len(bad))
    f = fit_levelsets(sets)
    assert abs(f.alpha / a - 1) < 0.02
    assert np.mean(f.weights[bad]) < 0.1 and np.mean(np.delete(f.weights, bad)) > 0.8
    plain = fit_levelsets(sets, robust=False)
    assert abs(plain.alpha / a - 1) > abs(f.alpha / a - 1)


def test_refuses_too_few_sets_and_flat_levels():
    rng = np.random.default_rng(0)
    with pytest.raises(FitError, match="usable level set"):
        fit_levelsets(_sets(1e-3, 1e-5, [0.2, 0.4, 0.6], 1000, rng))
    # all sets at nearly one level: alpha and b cannot be separated
    with pytest.raises(FitError, match="undetermined|usable"):
        fit_levelsets(_sets(1e-3, 1e-5, np.full(20, 0.3) + np.linspace(0, 1e-3, 20), 200, rng))
