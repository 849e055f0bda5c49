"""Mean and variance of clipped noisy observations (REFERENCE.md section 4).

:func:`clipped_normal_moments` is the clipped-normal model (Foi 2009) used by the noise fits;
:func:`clipped_poisson_gaussian_moments` is exact for the simulator's discrete shot noise: a
Poisson mixture of clipped normals, each component using the same closed form.
"""

from __future__ import annotations

import numpy as np

__all__ = ["clipped_normal_moments", "clipped_poisson_gaussian_moments"]


def clipped_normal_moments(mu, s):
    """Mean and variance of ``clip(N(mu, s^2), 0, 1)``.

    With ``lo = -mu/s``, ``hi = (1 - mu)/s``:
    ``E = (1 - Phi(hi)) + mu (Phi(hi) - Phi(lo)) + s (phi(lo) - phi(hi))`` and
    ``E2 = (1 - Phi(hi)) + (mu^2 + s^2)(Phi(hi) - Phi(lo)) + 2 mu s (phi(lo) - phi(hi))
    + s^2 (lo phi(lo) - hi phi(hi))``; variance ``E2 - E^2``. ``s == 0`` gives the clipped
    point mass.

    Examples
    --------
    >>> m, v = clipped_normal_moments(0.0, 1.0)
    >>> round(float(m), 4)   # half the mass at 0, the other half a half-normal capped at 1
    0.3156
    """
    mu = np.asarray(mu, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64)
    from scipy.special import ndtr

    mu, s = np.broadcast_arrays(mu, s)
    safe = np.where(s > 0, s, 1.0)
    lo, hi = -mu / safe, (1.0 - mu) / safe
    pdf = lambda t: np.exp(-0.5 * t * t) / np.sqrt(2 * np.pi)  # noqa: E731
    Plo, Phi_, plo, phi_ = ndtr(lo), ndtr(hi), pdf(lo), pdf(hi)
    inside = Phi_ - Plo
    e = (1 - Phi_) + mu * inside + safe * (plo - phi_)
    e2 = (1 - Phi_) + (mu**2 + safe**2) * inside + 2 * mu * safe * (plo - phi_) + safe**2 * (lo * plo - hi * phi_)
    point = np.clip(mu, 0.0, 1.0)
    e = np.where(s > 0, e, point)
    var = np.where(s > 0, np.maximum(e2 - e**2, 0.0), 0.0)
    return e, var


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
