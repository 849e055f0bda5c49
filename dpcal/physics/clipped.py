"""Moments of clipped noisy observations: the clipped normal (Foi 2009), both clipping ends,
and the exact clipped Poisson-Gaussian mixture of the simulator.

A raw value is ``z = clip(y + s * N(0, 1), lo, hi)`` with ``s = sigma(y) = sqrt(a y + b)``
With ``l = (lo - y) / s`` and ``h = (hi - y) / s``:

* ``E  = lo Phi(l) + hi (1 - Phi(h)) + y (Phi(h) - Phi(l)) + s (phi(l) - phi(h))``
* ``E2 = lo^2 Phi(l) + hi^2 (1 - Phi(h)) + (y^2 + s^2)(Phi(h) - Phi(l))
  + 2 y s (phi(l) - phi(h)) + s^2 (l phi(l) - h phi(h))``
* clipped std ``= sqrt(E2 - E^2)``.

``E2 - E**2`` loses
every digit when ``s << y``, so :func:`clipped_std` evaluates the same variance in a
shift-free form: ``var = s^2 g(l, h)`` with ``g`` a function of the standardised bounds only.
Everything is vectorised over numpy broadcasting and computed in float64.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

_SQRT_2PI = np.sqrt(2.0 * np.pi)


def _pdf(t: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * t * t) / _SQRT_2PI


def _prep(mu, s, lo, hi):
    mu = np.asarray(mu, dtype=np.float64)
    s = np.maximum(np.asarray(s, dtype=np.float64), 1e-300)
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    return mu, s, lo, hi, (lo - mu) / s, (hi - mu) / s


def clipped_moments(mu, s, lo=0.0, hi=1.0) -> tuple[np.ndarray, np.ndarray]:
    """First and second raw moments ``(E, E2)`` of ``clip(N(mu, s^2), lo, hi)``.

    Parameters
    ----------
    mu, s : array_like
        Mean and standard deviation of the normal variable before clipping.
    lo, hi : array_like
        Clipping bounds (``lo < hi``), broadcast against ``mu``.

    Returns
    -------
    E, E2 : ndarray

    Examples
    --------
    >>> E, E2 = clipped_moments(0.0, 1.0, hi=np.inf)  # N(0, 1) clipped below at 0
    >>> bool(abs(E - 1 / np.sqrt(2 * np.pi)) < 1e-12)
    True
    >>> float(clipped_moments(0.5, 1e-3)[0])         # far from both bounds: unchanged
    0.5
    """
    mu, s, lo, hi, l, h = _prep(mu, s, lo, hi)
    Pl, Ph_up = ndtr(l), ndtr(-h)  # P(z < lo), P(z > hi) without cancellation
    inside = 1.0 - Pl - Ph_up
    fl, fh = _pdf(l), _pdf(h)
    # Infinite bounds have zero mass beyond them: avoid inf * 0.
    with np.errstate(invalid="ignore"):
        tail_lo = np.where(Pl > 0, lo * Pl, 0.0)
        tail_hi = np.where(Ph_up > 0, hi * Ph_up, 0.0)
        tail_lo2 = np.where(Pl > 0, lo * tail_lo, 0.0)
        tail_hi2 = np.where(Ph_up > 0, hi * tail_hi, 0.0)
    E = tail_lo + tail_hi + mu * inside + s * (fl - fh)
    E2 = tail_lo2 + tail_hi2 + (mu**2 + s**2) * inside + 2 * mu * s * (fl - fh) + s**2 * (_xpdf(l) - _xpdf(h))
    return E, E2


def _xpdf(t: np.ndarray) -> np.ndarray:
    # t * phi(t), 0 at +-inf (avoids inf * 0)
    return np.where(np.isfinite(t), t * _pdf(np.where(np.isfinite(t), t, 0.0)), 0.0)


def _g(l: np.ndarray, h: np.ndarray, skew=None) -> tuple[np.ndarray, np.ndarray]:
    """Standardised clipped mean shift ``m`` and variance ``v`` of ``clip(Z, l, h)``.

    ``Z ~ N(0, 1)``, or with ``skew`` the first-order Edgeworth density
    ``phi(t) (1 + skew/6 He3(t))``, whose clipped moments gain
    ``skew/6 (l phi(l) - h phi(h))`` (mean) and ``skew/3 ((l^2+1) phi(l) - (h^2+1) phi(h))``
    (second moment); unclipped moments are unchanged.
    """
    Pl, Ph_up = ndtr(l), ndtr(-h)
    fl, fh = _pdf(l), _pdf(h)
    lf = np.where(np.isfinite(l), l, 0.0)
    hf = np.where(np.isfinite(h), h, 0.0)
    m = lf * Pl + hf * Ph_up + fl - fh
    m2 = lf**2 * Pl + hf**2 * Ph_up + (1.0 - Pl - Ph_up) + _xpdf(l) - _xpdf(h)
    if skew is not None:
        m = m + skew / 6.0 * (lf * fl - hf * fh)
        m2 = m2 + skew / 3.0 * ((lf * lf + 1.0) * fl - (hf * hf + 1.0) * fh)
    return m, np.maximum(m2 - m * m, 0.0)


def clipped_mean_std(mu, s, lo=0.0, hi=1.0, skew=None) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of ``clip(N(mu, s^2), lo, hi)``, numerically stable.

    ``skew`` (optional, array_like) adds the first-order Edgeworth correction for a skewed
    variable (see :func:`poisson_skew`); ``None`` gives the normal formulas.

    Examples
    --------
    >>> m, sd = clipped_mean_std(1.0, 0.1)           # half saturated
    >>> bool(m < 1.0), bool(0.05 < sd < 0.1)
    (True, True)
    """
    mu, s, lo, hi, l, h = _prep(mu, s, lo, hi)
    m, v = _g(l, h, skew)
    return mu + s * m, s * np.sqrt(v)


def poisson_skew(y, a: float, s) -> np.ndarray:
    """Skewness ``a^2 y / s^3`` of ``a Poisson(y/a) + N(0, b)`` (third cumulant ``a^2 y``).

    Clamped to ``[0, 1]``: beyond that (fewer than about one photon per noise std) the
    first-order correction is no longer an improvement.
    """
    y = np.maximum(np.asarray(y, dtype=np.float64), 0.0)
    return np.clip(a * a * y / np.maximum(np.asarray(s, dtype=np.float64), 1e-100) ** 3, 0.0, 1.0)


def clipped_std(mu, s, lo=0.0, hi=1.0) -> np.ndarray:
    """``sqrt(E2 - E^2)`` of the clipped normal, evaluated stably (see module docstring).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> z = np.clip(rng.normal(0.02, 0.05, 400_000), 0, 1)
    >>> bool(abs(z.std() / clipped_std(0.02, 0.05) - 1) < 0.01)
    True
    """
    return clipped_mean_std(mu, s, lo, hi)[1]


def clipped_mean_slope(mu, s, ds_dmu, lo=0.0, hi=1.0) -> np.ndarray:
    """``d E / d mu`` when ``s`` depends on ``mu`` with slope ``ds_dmu``.

    ``dE/dmu = Phi(h) - Phi(l)`` at fixed ``s`` and ``dE/ds = phi(l) - phi(h)``.
    """
    mu, s, lo, hi, l, h = _prep(mu, s, lo, hi)
    return (1.0 - ndtr(l) - ndtr(-h)) + (_pdf(l) - _pdf(h)) * np.asarray(ds_dmu, dtype=np.float64)


def noise_std(y, a: float, b: float, floor: float = 1e-300) -> np.ndarray:
    """Unclipped noise std ``sqrt(max(a y + b, floor))`` of the Poisson-Gaussian model."""
    return np.sqrt(np.maximum(a * np.asarray(y, dtype=np.float64) + b, floor))


def clipped_curve(y, a: float, b: float, lo=0.0, hi=1.0, skew: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The observable curve of the clipped model: ``(E[z], std[z])`` at true levels ``y``.

    This is the curve Foi's figure plots (std of the clipped data against its mean). With
    ``skew`` (default) the Poisson component's skewness corrects the clipped moments (first
    order Edgeworth): at a few photons per noise std the normal approximation of the Poisson
    law is visibly off near the bounds, and a pure clipped-normal fit underestimates alpha by
    a few percent (measured on simulated captures; see docs/noise.md).

    Examples
    --------
    >>> E, sd = clipped_curve(np.array([0.0, 0.5, 1.0]), 1e-3, 1e-4)
    >>> bool(sd[1] > sd[0] and sd[1] > sd[2])
    True
    """
    s = noise_std(y, a, b)
    return clipped_mean_std(y, s, lo, hi, poisson_skew(y, a, s) if skew else None)


def invert_clipped_mean(u, a: float, b: float, lo=0.0, hi=1.0, iters: int = 30, start=None) -> np.ndarray:
    """True level ``t`` whose clipped mean is ``u`` (``lo < u < hi``), vectorised.

    Safeguarded Newton from ``t = u`` (or ``start``): the clipped mean is increasing in ``t``,
    steps are limited to 4 noise std, and the derivative is floored.

    Examples
    --------
    >>> u = clipped_curve(np.array([-0.005, 0.5, 1.003]), 1e-3, 1e-5)[0]
    >>> np.round(invert_clipped_mean(u, 1e-3, 1e-5), 6)
    array([-0.005,  0.5  ,  1.003])
    """
    t = np.array(u if start is None else start, dtype=np.float64, copy=True)
    for _ in range(iters):
        s = noise_std(t, a, b, floor=1e-24)
        m, _sd = clipped_mean_std(t, s, lo, hi, poisson_skew(t, a, s))
        slope = np.maximum(clipped_mean_slope(t, s, a / (2 * s), lo, hi), 1e-3)
        step = np.clip((m - u) / slope, -4 * s, 4 * s)
        t = t - step
        if np.all(np.abs(step) < 1e-8 * np.maximum(s, 1e-12)):
            break
    return t


def clipped_normal_moments(mu, s):
    """Mean and variance of ``clip(N(mu, s^2), 0, 1)``; ``s == 0`` gives the clipped point mass.

    Examples
    --------
    >>> m, v = clipped_normal_moments(0.0, 1.0)
    >>> round(float(m), 4)   # half the mass at 0, the other half a half-normal capped at 1
    0.3156
    """
    mu, s = np.broadcast_arrays(np.asarray(mu, dtype=np.float64), np.asarray(s, dtype=np.float64))
    safe = np.where(s > 0, s, 1.0)
    m, sd = clipped_mean_std(mu, safe)
    return np.where(s > 0, m, np.clip(mu, 0.0, 1.0)), np.where(s > 0, sd * sd, 0.0)


def clipped_poisson_gaussian_moments(x, alpha, sigma, tail: float = 1e-12):
    """Mean and variance of ``clip(alpha * Poisson(x / alpha) + N(0, sigma^2), 0, 1)``, exactly.

    Sums the clipped-normal moments of each Poisson component ``k`` (mean ``alpha k``, std
    ``sigma``) weighted by its probability, over all ``k`` except a tail of mass below ``tail``.
    ``alpha == 0`` reduces to :func:`clipped_normal_moments` at ``x``.

    Parameters
    ----------
    x, alpha, sigma : float (scalars)

    Returns
    -------
    (mean, var) : floats

    Examples
    --------
    >>> m, v = clipped_poisson_gaussian_moments(0.5, 1e-6, 1e-3)   # almost no clipping
    >>> round(m, 6), round(v / (1e-6 * 0.5 + 1e-6), 3)
    (0.5, 1.0)
    """
    x, alpha, sigma = float(x), float(alpha), float(sigma)
    if alpha <= 0:
        m, v = clipped_normal_moments(x, sigma)
        return float(m), float(v)
    from scipy.stats import poisson

    lam = max(x, 0.0) / alpha
    k0, k1 = poisson.ppf(tail, lam), poisson.ppf(1 - tail, lam)
    k = np.arange(int(max(k0, 0)), int(k1) + 1)
    p = poisson.pmf(k, lam)
    p = p / p.sum()
    m, v = clipped_normal_moments(alpha * k, sigma)
    mean = float(np.sum(p * m))
    second = float(np.sum(p * (v + m**2)))
    return mean, max(second - mean**2, 0.0)
