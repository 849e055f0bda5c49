"""Synthetic captures with known noise for the noise-calibration tests (not a test module)."""

from __future__ import annotations

import numpy as np

from dpcal.cfa import PLANES
from dpcal.testing.captures import gray_chart, synthetic_capture

#: per-plane noise at ISO 100 (normalised), deliberately different per plane
ALPHA100 = {"R": 2.4e-4, "Gr": 1.5e-4, "Gb": 1.6e-4, "B": 3.0e-4}
SIGMA100 = {"R": 1.1e-3, "Gr": 8.0e-4, "Gb": 8.5e-4, "B": 1.3e-3}
#: levels of the chart patches: clipped at both ends (below 0 and above 1)
CHART_LEVELS = np.linspace(-0.06, 1.06, 30)


def truth(iso: float) -> tuple[dict, dict]:
    """alpha(iso) = alpha100 iso/100; sigma^2 = (sigma100 iso/100)^2 + sigma100^2 (a CTS-type model)."""
    g = iso / 100.0
    alpha = {p: ALPHA100[p] * g for p in PLANES}
    sigma = {p: float(np.sqrt((SIGMA100[p] * g) ** 2 + SIGMA100[p] ** 2)) for p in PLANES}
    return alpha, sigma


def vignetting(h: int, w: int, strength: float = 0.15) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    r2 = ((yy - h / 2) / (h / 2)) ** 2 + ((xx - w / 2) / (w / 2)) ** 2
    return 1.0 - strength * r2 / 2


def chart_clean(h: int = 1224, w: int = 1632, levels=CHART_LEVELS, shading: bool = True) -> np.ndarray:
    clean, _ = gray_chart(h, w, levels)
    if shading:
        clean = clean * vignetting(h, w)
    return clean


def capture(clean, pattern, iso, *, black=64, white=4095, seed=0):
    alpha, sigma = truth(iso)
    return synthetic_capture(clean, pattern, alpha, sigma, black_level=black, white_level=white, rng=seed)


def curve_error(fit, alpha: float, sigma: float, lo: float = 0.05, hi: float = 0.95) -> float:
    """Mean relative error of the fitted sigma(y) curve on [lo, hi]."""
    y = np.linspace(lo, hi, 181)
    true = np.sqrt(alpha * y + sigma**2)
    return float(np.mean(np.abs(fit.sigma_curve(y) / true - 1)))
