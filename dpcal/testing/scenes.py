"""Synthetic clean scenes for testing and benchmarking the noise fitters.

:func:`natural_scene` is "natural-ish": smooth illumination gradients, flat objects of random
shapes and levels, sharp edges, and textured regions (which a single-image fitter must
reject). Values are normalised and may exceed [0, 1] (clipping happens in the capture).
"""

from __future__ import annotations

import numpy as np


def natural_scene(
    height: int,
    width: int,
    rng: np.random.Generator | int | None = None,
    *,
    n_objects: int = 40,
    texture: float = 0.35,
    level_range: tuple[float, float] = (-0.02, 1.05),
    lens_blur: float = 0.7,
) -> np.ndarray:
    """Clean ``(H, W)`` float64 scene with flat objects, gradients, edges and texture.

    The scene is seen through a lens: a Gaussian blur of ``lens_blur`` pixels (std) is applied
    last, so no detail is finer than the optics pass (pixel-level white texture cannot be told
    from noise by any single-image method; a real lens does not produce it).

    Parameters
    ----------
    height, width : int
    rng : Generator or seed
    n_objects : int
        Number of ellipses and rectangles.
    texture : float
        Share of the objects that carry strong texture (0 = only flat/smooth objects).
    level_range : (float, float)
        Range of object levels (normalised); values outside [0, 1] clip in a capture.
    lens_blur : float
        Std (pixels) of the final Gaussian blur; 0 for none.

    Examples
    --------
    >>> s = natural_scene(64, 96, rng=0)
    >>> s.shape, bool(s.min() >= -0.1 and s.max() <= 1.2)
    ((64, 96), True)
    """
    import cv2

    rng = np.random.default_rng(rng)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    yn, xn = yy / height, xx / width
    # Sky-like background: a smooth vertical and horizontal gradient.
    img = 0.25 + 0.35 * yn + 0.1 * np.sin(2.0 * xn + 0.5)
    lo, hi = level_range
    for _ in range(n_objects):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry = rng.uniform(0.04, 0.18) * height
        rx = rng.uniform(0.04, 0.18) * width
        if rng.random() < 0.5:
            m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
        else:
            m = (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)
        level = rng.uniform(lo, hi)
        # A gentle shading across the object (illumination is never perfectly uniform).
        shade = 1.0 + 0.05 * ((yy - cy) / height + (xx - cx) / width)
        val = level * shade
        if rng.random() < texture:
            tex = rng.standard_normal((height, width))
            k = float(rng.choice([1.0, 2.0, 4.0]))
            tex = cv2.GaussianBlur(tex, (0, 0), k)
            tex /= tex.std() + 1e-12
            val = val + 0.08 * (0.3 + level) * tex
        img[m] = val[m]
    if lens_blur > 0:
        img = cv2.GaussianBlur(img, (0, 0), lens_blur)
    return img
