"""Robust fitting helpers shared by the calibration code.

- :func:`clipped_lstsq`: linear least squares refitted on the rows within ``k`` robust standard
  deviations (MAD) of the previous fit (the smooth photometric fields of a PSF chart).
- :func:`clipped_variance`: variance after iterative ``k``-sigma clipping (noise from pixel
  differences, robust to defects).

The other robust loops in dpcal are specific to their problem and stay there: the lens
mapping refits ``scipy.optimize.least_squares`` with a Rayleigh threshold on 2-D residuals
(:func:`dpcal.chart.geometry.fit_lens_mapping`); the noise fit's start is a Cauchy-weighted
IRLS whose variances follow the model (:func:`dpcal.noise.fit.wls_start`); flat regions drop
pixels per level set through running sums (:class:`dpcal.noise.chart.RegionSets`).
``scipy.stats.sigmaclip`` differs from :func:`clipped_variance` (it never re-admits a point and
has no iteration cap), so it is not used where results must stay as they were.
"""

from __future__ import annotations

import numpy as np

__all__ = ["clipped_lstsq", "clipped_variance"]

#: MAD -> standard deviation of a normal distribution
MAD_TO_STD = 1.4826


def clipped_lstsq(A: np.ndarray, t: np.ndarray, *, k: float = 4.0, iterations: int = 4) -> np.ndarray:
    """Coefficients of ``A @ coef ~ t``, refitted ``iterations`` times on rows with
    ``|residual| < k * 1.4826 * MAD`` of the previous fit's kept residuals.

    Examples
    --------
    >>> x = np.arange(20.0)
    >>> t = 2 * x + 1
    >>> t[3] = 100.0  # one outlier
    >>> np.round(clipped_lstsq(np.stack([x, np.ones_like(x)], 1), t), 6)
    array([2., 1.])
    """
    keep = np.ones(len(t), bool)
    coef = np.zeros(A.shape[1])
    for _ in range(iterations):
        coef, *_ = np.linalg.lstsq(A[keep], t[keep], rcond=None)
        r = t - A @ coef
        keep = np.abs(r) < k * (np.median(np.abs(r[keep])) * MAD_TO_STD + 1e-12)
    return coef


def clipped_variance(d: np.ndarray, *, k: float = 5.0, iterations: int = 5) -> float:
    """Variance of ``d`` after iterative ``k``-sigma clipping about the mean (all points are
    re-tested each round; stops when the kept set no longer changes).

    Examples
    --------
    >>> d = np.random.default_rng(0).normal(0, 2, 10_000)
    >>> d[:5] = 1e3  # defects
    >>> round(clipped_variance(d), 1)
    4.0
    """
    d = np.asarray(d, np.float64)
    keep = np.ones(len(d), bool)
    for _ in range(iterations):
        m, sd = d[keep].mean(), d[keep].std()
        new = np.abs(d - m) < k * sd + 1e-12
        if np.array_equal(new, keep):
            break
        keep = new
    return float(d[keep].var())
