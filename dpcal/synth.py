"""Synthetic RAW captures with known noise, for tests, demos and capture planning.

Everything here follows paper eq. 1 in normalised units: ``y = clip(alpha * Poisson(x / alpha) +
N(0, sigma^2), 0, 1)`` per CFA plane, then (optionally) conversion to digital numbers with the
sensor's black and white levels.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from dpcal.cfa import PLANES, plane_map


def poisson_gaussian(
    x: np.ndarray,
    alpha: float | np.ndarray,
    sigma: float | np.ndarray,
    rng: np.random.Generator,
    clip: bool = True,
) -> np.ndarray:
    """Draw ``alpha * Poisson(x / alpha) + N(0, sigma^2)``, optionally clipped to [0, 1].

    ``alpha`` and ``sigma`` broadcast against ``x``; ``alpha == 0`` means no shot noise.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = poisson_gaussian(np.full(100_000, 0.5), 0.01, 0.02, rng, clip=False)
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


def per_plane(values: Mapping[str, float] | float, pattern: str, shape: tuple[int, int]) -> np.ndarray:
    """Expand a per-plane value (``{"R": .., "Gr": .., "Gb": .., "B": ..}`` or a scalar) to a mosaic map."""
    if not isinstance(values, Mapping):
        return np.full(shape, float(values))
    table = np.array([values[p] for p in PLANES], dtype=np.float64)
    return table[plane_map(pattern, *shape)]


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


def to_dn(
    y: np.ndarray, pattern: str, black_level: float | list[float], white_level: float, dtype=np.uint16
) -> np.ndarray:
    """Normalised mosaic -> digital numbers ``round(y * (white - black) + black)``, clipped."""
    bl = np.asarray(black_level, dtype=np.float64)
    black = bl[plane_map(pattern, *y.shape)] if bl.ndim else np.full(y.shape, float(bl))
    dn = np.round(y * (white_level - black) + black)
    info = np.iinfo(dtype)
    return np.clip(dn, info.min, min(info.max, white_level)).astype(dtype)


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
    y = poisson_gaussian(clean, a, s, rng, clip=True)
    return to_dn(y, pattern, black_level, white_level)
