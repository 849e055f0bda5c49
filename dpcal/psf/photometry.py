"""Photometry of a PSF chart capture, per CFA plane: black and white levels as smooth fields
over the sensor, and the noise model ``var(y) = alpha y + sigma^2`` for the fit's weights.

Print charts: fitted to the chart's flat black and white areas with a vignetting model
(:func:`photometry_print`). Display charts: the black and white frames (:func:`photometry_display`).
Saturation is refused.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from dpcal._robust import clipped_lstsq, clipped_variance
from dpcal.cfa import PLANES, plane_map, plane_offsets
from dpcal.errors import BadInputError, FitError

SATURATION = 0.995  # normalised value treated as clipped


def _flat_masks(u: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels whose whole (2 radius + 1)^2 neighbourhood of the chart is flat black / flat white."""
    import cv2

    k = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    white = cv2.erode((u > 0.999).astype(np.uint8), k) > 0
    black = cv2.erode((u < 0.001).astype(np.uint8), k) > 0
    return black, white


def _design(x: np.ndarray, y: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Smooth photometric model terms: 1, r^2, r^4, x, y, xy (normalised coordinates)."""
    w, h = size
    R = 0.5 * math.hypot(w, h)
    xn = (x - (w - 1) / 2) / R
    yn = (y - (h - 1) / 2) / R
    r2 = xn * xn + yn * yn
    return np.stack([np.ones_like(xn), r2, r2 * r2, xn, yn, xn * yn], -1)


def _fit_surface(y: np.ndarray, yy: np.ndarray, xx: np.ndarray, size, log_model: bool) -> np.ndarray:
    """Robust LS fit of the smooth model to samples; returns coefficients."""
    A = _design(xx.astype(float), yy.astype(float), size)
    t = np.log(np.maximum(y, 1e-6)) if log_model else y
    return clipped_lstsq(A, t, k=4.0, iterations=4)


def photometry_print(y: np.ndarray, u: np.ndarray, pattern: str, radius: int):
    """Black/white fields per plane from the chart's flat areas; noise model from the same."""
    h, w = y.shape
    fb, fw = _flat_masks(u, radius)
    pm = plane_map(pattern, h, w)
    black = np.zeros((h, w), np.float32)
    white = np.zeros((h, w), np.float32)
    stats = {}
    ys_full, xs_full = np.mgrid[0:h:8, 0:w:8]
    for c, name in enumerate(PLANES):
        dy, dx = plane_offsets(pattern)[name]
        sub_y, sub_w_mask, sub_b_mask = y[dy::2, dx::2], fw[dy::2, dx::2], fb[dy::2, dx::2]
        yy, xx = np.mgrid[dy:h:2, dx:w:2]
        nw, nb = int(sub_w_mask.sum()), int(sub_b_mask.sum())
        if nw < 200 or nb < 200:
            raise FitError(f"too little flat black ({nb}) or white ({nw}) chart area is visible in plane {name} "
                           "to measure the photometry; is the whole chart in view?")
        vw = sub_y[sub_w_mask]
        sat = float(np.mean(vw >= SATURATION))
        if sat > 0.02:
            raise BadInputError(f"the capture is saturated: {100 * sat:.0f} % of the chart's white areas are "
                                f"clipped in plane {name}; reduce the exposure")
        # Subsample for the fits (they are smooth).
        step = max(1, nw // 20000)
        cw = _fit_surface(vw[::step], yy[sub_w_mask][::step], xx[sub_w_mask][::step], (w, h), True)
        wmod = lambda Y, X: np.exp(_design(X.astype(float), Y.astype(float), (w, h)) @ cw)  # noqa: E731
        # Chart areas that should be black but image nearly white were not printed (a page cut
        # off by the printer's margin takes the black frame with it): not black samples.
        printed = sub_y[sub_b_mask] < 0.5 * wmod(yy[sub_b_mask], xx[sub_b_mask])
        unprinted = 1.0 - float(printed.mean()) if printed.size else 0.0
        sub_b_mask = sub_b_mask.copy()
        sub_b_mask[sub_b_mask] = printed
        nb = int(sub_b_mask.sum())
        if nb < 200:
            raise FitError(f"the chart's black areas image nearly white in plane {name}: is the chart in view and "
                           "printed in full (not cut off at the page edge)?")
        vb = sub_y[sub_b_mask]
        stepb = max(1, nb // 20000)
        Yb, Xb = yy[sub_b_mask][::stepb], xx[sub_b_mask][::stepb]
        Ab = np.stack([np.ones(len(Yb)), wmod(Yb, Xb)], -1)
        cb = clipped_lstsq(Ab, vb[::stepb], k=4.0, iterations=4)
        # Evaluate on a coarse grid and interpolate (smooth fields).
        Wg = wmod(ys_full, xs_full)
        Bg = cb[0] + cb[1] * Wg
        import cv2

        Wf = cv2.resize(Wg.astype(np.float32), (Wg.shape[1] * 8, Wg.shape[0] * 8), interpolation=cv2.INTER_LINEAR)[:h, :w]
        Bf = cv2.resize(Bg.astype(np.float32), (Bg.shape[1] * 8, Bg.shape[0] * 8), interpolation=cv2.INTER_LINEAR)[:h, :w]
        sel = pm == c
        white[sel] = Wf[sel]
        black[sel] = Bf[sel]
        # Noise: differences of horizontally adjacent same-plane pixels, both flat.
        stats[name] = _noise_from_flats(sub_y, sub_w_mask, sub_b_mask)
        stats[name]["white_level_centre"] = float(np.exp(cw[0]))
        stats[name]["black_level_centre"] = float(cb[0] + cb[1] * np.exp(cw[0]))
        stats[name]["saturated_fraction"] = sat
        stats[name]["black_unprinted_fraction"] = unprinted
    return black, white, stats


def _noise_from_flats(sub: np.ndarray, wmask: np.ndarray, bmask: np.ndarray) -> dict:
    """alpha, sigma^2 from the variance of adjacent-pixel differences on flat white and black."""
    out = {}
    pts = []
    for mask in (bmask, wmask):
        both = mask[:, 1:] & mask[:, :-1]
        d = (sub[:, 1:] - sub[:, :-1])[both]
        m = 0.5 * (sub[:, 1:] + sub[:, :-1])[both]
        if len(d) < 50:
            return {"alpha": None, "sigma": None}
        var = clipped_variance(d, k=5.0, iterations=5) / 2
        pts.append((float(np.median(m)), float(var)))
    (lb, vb), (lw, vw) = pts
    alpha = max((vw - vb) / max(lw - lb, 1e-6), 1e-9)
    s2 = max(vb - alpha * lb, 1e-12)
    out.update(alpha=float(alpha), sigma=float(np.sqrt(s2)), levels=[lb, lw], variances=[vb, vw])
    return out


def photometry_display(black_y: np.ndarray, white_y: np.ndarray, u: np.ndarray, pattern: str):
    """Black/white fields per plane from the black and white frames (smoothed block medians)."""
    import cv2

    h, w = black_y.shape
    pm = plane_map(pattern, h, w)
    on = np.isfinite(u)
    black = np.full((h, w), np.nan, np.float32)
    white = np.full((h, w), np.nan, np.float32)
    stats = {}
    blk = 8
    for c, name in enumerate(PLANES):
        dy, dx = plane_offsets(pattern)[name]
        fields = []
        for img in (black_y, white_y):
            sub = np.where(on, img, np.nan)[dy::2, dx::2]
            hh, ww = sub.shape[0] // blk * blk, sub.shape[1] // blk * blk
            with warnings.catch_warnings():  # blocks off the screen are all NaN, and filled below
                warnings.simplefilter("ignore", RuntimeWarning)
                med = np.nanmedian(sub[:hh, :ww].reshape(hh // blk, blk, ww // blk, blk), axis=(1, 3))
            med = _fill_nan(med)
            full = cv2.resize(med.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
            fields.append(full)
        sel = pm == c
        black[sel] = fields[0][sel]
        white[sel] = fields[1][sel]
        subw, subb = white_y[dy::2, dx::2], black_y[dy::2, dx::2]
        onp = on[dy::2, dx::2]
        sat = float(np.mean(subw[onp] >= SATURATION)) if onp.any() else 0.0
        if sat > 0.02:
            raise BadInputError(f"the white frame is saturated: {100 * sat:.0f} % of the screen is clipped in "
                                f"plane {name}; reduce the exposure (or the display brightness)")
        nz = _noise_from_pair(subb, subw, onp)
        nz["saturated_fraction"] = sat
        stats[name] = nz
    black[~on] = np.nan
    white[~on] = np.nan
    return black, white, stats


def _fill_nan(a: np.ndarray) -> np.ndarray:
    """Fill NaN cells with the nearest finite value (for block medians at the screen border)."""
    from scipy.ndimage import distance_transform_edt

    bad = ~np.isfinite(a)
    if not bad.any():
        return a
    if bad.all():
        return np.zeros_like(a)
    idx = distance_transform_edt(bad, return_distances=False, return_indices=True)
    return a[tuple(idx)]


def _noise_from_pair(black: np.ndarray, white: np.ndarray, mask: np.ndarray) -> dict:
    """alpha, sigma^2 from adjacent-pixel differences in the black and the white frame."""
    from scipy.ndimage import binary_erosion

    m = binary_erosion(mask, iterations=4)
    pts = []
    for img in (black, white):
        both = m[:, 1:] & m[:, :-1]
        d = (img[:, 1:] - img[:, :-1])[both]
        if len(d) < 50:
            return {"alpha": None, "sigma": None}
        pts.append((float(np.median(img[m])), float(clipped_variance(d, k=5.0, iterations=5) / 2)))
    (lb, vb), (lw, vw) = pts
    alpha = max((vw - vb) / max(lw - lb, 1e-6), 1e-9)
    s2 = max(vb - alpha * lb, 1e-12)
    return {"alpha": float(alpha), "sigma": float(np.sqrt(s2)), "levels": [lb, lw], "variances": [vb, vw]}
