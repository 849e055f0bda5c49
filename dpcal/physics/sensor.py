"""Sensor readout in NumPy: Poisson-Gaussian draws and conversion to and from digital numbers.

The torch forms used by the simulator and training are in :mod:`dpcal.physics.noise`; this
module stays free of torch so that capture synthesis and calibration do not import it.
Normalised units: ``(dn - black[plane]) / (white - black[plane])``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from dpcal.cfa import plane_map

__all__ = ["from_dn", "sample_poisson_gaussian", "to_dn"]


def sample_poisson_gaussian(
    x: np.ndarray,
    alpha: float | np.ndarray,
    sigma: float | np.ndarray,
    rng: np.random.Generator,
    clip: bool = True,
) -> np.ndarray:
    """Draw ``alpha * Poisson(x / alpha) + N(0, sigma^2)``, optionally clipped to [0, 1].

    ``alpha`` and ``sigma`` broadcast against ``x``; ``alpha == 0`` means no shot noise;
    negative ``x`` counts as 0.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = sample_poisson_gaussian(np.full(100_000, 0.5), 0.01, 0.02, rng, clip=False)
    >>> bool(abs(y.var() - (0.01 * 0.5 + 0.02**2)) < 2e-4)
    True
    """
    x = np.maximum(np.asarray(x, dtype=np.float64), 0.0)
    alpha = np.broadcast_to(np.asarray(alpha, dtype=np.float64), x.shape)
    sigma = np.broadcast_to(np.asarray(sigma, dtype=np.float64), x.shape)
    safe = np.where(alpha > 0, alpha, 1.0)
    shot = np.where(alpha > 0, safe * rng.poisson(x / safe), x)
    y = shot + sigma * rng.standard_normal(x.shape)
    return np.clip(y, 0.0, 1.0) if clip else y


def _black_map(black: float | Sequence[float], pattern: str, shape: tuple[int, int]) -> np.ndarray:
    bl = np.asarray(black, dtype=np.float64)
    return bl[plane_map(pattern, *shape)] if bl.ndim else np.full(shape, float(bl))


def to_dn(y: np.ndarray, pattern: str, black: float | Sequence[float], white: float, dtype=np.uint16) -> np.ndarray:
    """Normalised mosaic -> digital numbers ``round(black + y * (white - black))``.

    Values below 0 stay below the black level (read noise does that on real sensors); the
    result is clipped to the dtype's range and to ``white``.

    Examples
    --------
    >>> to_dn(np.array([[0.0, 1.0], [0.5, -0.01]]), "RGGB", 64, 1023).tolist()
    [[64, 1023], [544, 54]]
    """
    black_map = _black_map(black, pattern, y.shape)
    dn = np.rint(black_map + np.asarray(y, dtype=np.float64) * (white - black_map))
    info = np.iinfo(dtype)
    return np.clip(dn, info.min, min(info.max, white)).astype(dtype)


def from_dn(dn: np.ndarray, pattern: str, black: float | Sequence[float], white: float) -> np.ndarray:
    """Digital numbers -> normalised float64 mosaic ``(dn - black) / (white - black)`` (not clipped).

    Examples
    --------
    >>> from_dn(to_dn(np.array([[0.25]]), "RGGB", 0, 1023), "RGGB", 0, 1023).round(3).tolist()
    [[0.25]]
    """
    black_map = _black_map(black, pattern, dn.shape)
    return (np.asarray(dn, dtype=np.float64) - black_map) / (white - black_map)
