"""Synthetic RAW captures with known noise, for tests, benchmarks and ``dpcal demo``.

Everything here follows paper eq. 1 in normalised units: ``y = clip(alpha * Poisson(x / alpha) +
N(0, sigma^2), 0, 1)`` per CFA plane, then (optionally) conversion to digital numbers with the
sensor's black and white levels.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from dpcal.cfa import per_plane
from dpcal.physics.sensor import sample_poisson_gaussian, to_dn


def gray_chart(
    height: int,
    width: int,
    levels: np.ndarray | list[float],
    *,
    rows: int | None = None,
    border: float = 0.05,
    background: float = 0.18,
) -> tuple[np.ndarray, list[tuple[slice, slice]]]:
    """Clean image of a grid of flat patches at ``levels`` (normalised), on a background.

    Returns the ``(H, W)`` image and the patch rectangles (row slice, column slice), in the
    order of ``levels``. Patch edges fall on even pixels so every patch holds whole 2x2 tiles.
    """
    levels = np.asarray(levels, dtype=np.float64)
    n = len(levels)
    rows = rows or int(np.floor(np.sqrt(n * height / width))) or 1
    cols = int(np.ceil(n / rows))
    img = np.full((height, width), background, dtype=np.float64)
    cell_h, cell_w = height / rows, width / cols
    rects = []
    for i, v in enumerate(levels):
        r, c = divmod(i, cols)
        y0 = int(r * cell_h + border * cell_h) // 2 * 2
        y1 = int((r + 1) * cell_h - border * cell_h) // 2 * 2
        x0 = int(c * cell_w + border * cell_w) // 2 * 2
        x1 = int((c + 1) * cell_w - border * cell_w) // 2 * 2
        img[y0:y1, x0:x1] = v
        rects.append((slice(y0, y1), slice(x0, x1)))
    return img, rects


def synthetic_capture(
    clean: np.ndarray,
    pattern: str,
    alpha: Mapping[str, float] | float,
    sigma: Mapping[str, float] | float,
    *,
    black_level: float | list[float] = 64,
    white_level: float = 1023,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """Noisy Bayer capture in DN of a clean normalised mosaic, clipped at black and white.

    Examples
    --------
    >>> clean, _ = gray_chart(64, 96, [0.1, 0.5, 0.9])
    >>> dn = synthetic_capture(clean, "RGGB", 1e-3, 2e-3, rng=0)
    >>> dn.dtype, dn.shape, int(dn.max()) <= 1023
    (dtype('uint16'), (64, 96), True)
    """
    rng = np.random.default_rng(rng)
    a = per_plane(alpha, pattern, clean.shape)
    s = per_plane(sigma, pattern, clean.shape)
    y = sample_poisson_gaussian(clean, a, s, rng, clip=True)
    return to_dn(y, pattern, black_level, white_level)
