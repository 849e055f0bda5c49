"""``fit_psf``: a spatially varying PSF field from RAW captures of a dpcal PSF chart.

Per capture (a printed chart: one photo each; a display: the frame sequence with the camera
still), on the linear RAW mosaic:

1. **Registration** (:func:`dpcal.chart.locate.locate_chart`): the chart's X-corners, refined to
   a few hundredths of a pixel, fit a homography plus radial lens distortion; its RMS is the
   registration RMS. Estimating against a model of known low order keeps lens distortion and the
   PSF's own shifts apart (a free local warp would absorb the PSFs' off-axis displacements);
   after the kernel fit, the part of the kernels' mean centroid field this model can express is
   moved into it (:func:`_recentre`), since the chart cannot tell the two apart.
2. **Photometry** per CFA plane: black and white levels as smooth fields over the sensor
   (print: fitted to the chart's flat black and white areas with a vignetting model; display:
   the black and white frames), the normalised data ``b = (y - black) / (white - black)``, and
   the noise model ``var(y) = alpha y + sigma^2`` measured on the same flat areas (or taken from
   a profile), which gives the inverse-variance weights. Saturation is refused.
3. **Sharp chart** ``u``: the chart averaged over each sensor pixel's footprint, at full-sensor
   sampling (:func:`dpcal.chart.render.rasterize`), so the CFA sub-sampling stays in the
   forward model.
4. **Pilot** per tile on the half-resolution luminance: a coarse kernel that sets the support
   size (from the data: the radius holding 99 % of the kernel's mass above its noise floor),
   the predicted signal for the noise weights, and the check that the capture matches the chart.
5. **Kernels** per tile and plane (:mod:`dpcal.psf.estimate`): non-negative, sum one,
   smoothness-regularised, noise-weighted least squares with exact normal equations; the
   regularisation weight is a fixed multiple of the one maximising the marginal likelihood
   (evidence) of the tile's data (``EVIDENCE_FACTOR``).
6. **Field model**: tile estimates are mixtures of the grid's node kernels under a local
   field model (:func:`local_field_weights`: quadratic through each inner node and its
   neighbours, linear at the border; it reproduces smooth variation, where bilinear hats would
   over-correct); unmixing them gives the node kernels as samples of the
   field, then a thin-plate smoother across the grid (weight by generalised cross-validation),
   extrapolation to tiles the chart does not cover, and projection onto the simplex. The output
   field is applied bilinearly between these samples (REFERENCE.md section 1).
7. **QA** per tile and plane: weighted residual (reduced chi^2), explained variance, MTF50,
   centroid, support, samples used.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from dpcal.cfa import PLANES, plane_map, plane_offsets
from dpcal.chart.geometry import fit_lens_mapping
from dpcal.chart.locate import ChartLocation, locate_chart
from dpcal.chart.render import rasterize, summed_area
from dpcal.chart.spec import ChartSpec, chart_raster
from dpcal.errors import BadInputError, FitError
from dpcal.psf.estimate import (
    NormalEquations,
    embed_kernel,
    kernel_centroid,
    mtf50,
    project_simplex,
    smoothness_operator,
    solve_kernel,
)
from dpcal.psf.field import PSFField, hat_weights

log = logging.getLogger("dpcal")

SATURATION = 0.995  # normalised value treated as clipped
# Nuisance columns per tile: gain ramps only (residual vignetting within the tile). A free
# offset is left out on purpose: over a noise chart it is nearly collinear with a flat pedestal
# under the kernel (the window mean of a Bernoulli field hardly varies), so noise trades one for
# the other and the kernels come out too wide; the black/white photometry fixes the offset.
N_NUIS = 2
# The kernels' regularisation weight is this multiple of the evidence-optimal one. The
# Laplacian prior leaves high kernel frequencies far freer than lens PSFs are (its spectrum
# falls as |w|^-4, a blur's much faster), so the evidence optimum under-smooths the wide kernels,
# and the field unmixing then amplifies that noise. Measured on two renderers, ISO 100-800,
# sigma 0.8-3.2 px: x3 lowers the worst node's error in every case (e.g. 6.5 -> 5.1 %) and
# leaves the sharp centre unchanged; x10 over-smooths the sharp kernels.
EVIDENCE_FACTOR = 3.0


@dataclasses.dataclass
class FitPSFResult:
    """What :func:`fit_psf` returns: the field, per-tile QA and the registration."""

    field: PSFField
    qa: list[dict]
    registration: list[dict]
    noise: dict
    summary: dict

    def to_dict(self) -> dict:
        return {**self.summary, "registration": self.registration, "noise": self.noise, "tiles": self.qa}


@dataclasses.dataclass
class _Prepared:
    name: str
    b: np.ndarray  # normalised data in chart units (NaN: unusable)
    u: np.ndarray  # sharp chart, pixel-area integrated (NaN: off the chart)
    valid: np.ndarray  # rows whose whole K x K window lies on the chart and whose data is usable
    black: np.ndarray  # per-pixel black level (normalised raw units)
    scale: np.ndarray  # per-pixel white - black
    in_noise: np.ndarray  # pixel maps into the noise field
    loc: ChartLocation


# ----------------------------------------------------------------------------------------------
# node grid


def node_grid(width: int, height: int, gx: int, gy: int, origin: tuple[int, int] = (0, 0)) -> tuple[np.ndarray, np.ndarray]:
    """Node coordinates at the centres of a ``gx x gy`` partition of a ``width x height`` region.

    The region's top-left pixel is ``origin`` (default: the whole sensor from (0, 0)).

    Examples
    --------
    >>> node_grid(800, 600, 4, 3)[0]
    array([ 99.5, 299.5, 499.5, 699.5])
    """
    xs = origin[0] + (np.arange(gx) + 0.5) * width / gx - 0.5
    ys = origin[1] + (np.arange(gy) + 0.5) * height / gy - 0.5
    return xs, ys


def _tile_bounds(width: int, height: int, gx: int, gy: int, origin: tuple[int, int] = (0, 0)):
    ex = origin[0] + np.round(np.arange(gx + 1) * width / gx).astype(int)
    ey = origin[1] + np.round(np.arange(gy + 1) * height / gy).astype(int)
    return ex, ey


def local_field_weights(nodes: np.ndarray, tile: int, coords: np.ndarray) -> np.ndarray:
    """Weights ``(len(nodes), len(coords))`` of the node kernels in tile ``tile``'s field model.

    Within an inner tile (and its margin) the PSF is modelled as the quadratic through the
    tile's node and its two neighbours (Lagrange weights); in a border tile, as the line
    through the outer node and its neighbour, extrapolated outward (a quadratic extrapolation
    amplifies the noise of the outer kernels). The weights sum to 1 and are 1 at the tile's own
    node, so the node kernels are samples of the field. Bilinear hats would mix a tile's
    neighbours in three times as strongly as a smooth field does; unmixing with them biases
    the nodes where the PSF changes smoothly.

    Examples
    --------
    >>> local_field_weights(np.array([0.0, 10.0, 20.0]), 1, np.array([5.0, 15.0]))
    array([[ 0.375, -0.125],
           [ 0.75 ,  0.75 ],
           [-0.125,  0.375]])
    >>> local_field_weights(np.array([0.0, 10.0, 20.0]), 0, np.array([-5.0, 5.0]))
    array([[ 1.5,  0.5],
           [-0.5,  0.5],
           [ 0. ,  0. ]])
    """
    nodes = np.asarray(nodes, float)
    x = np.asarray(coords, float)
    n = len(nodes)
    w = np.zeros((n, len(x)))
    if n == 1:
        w[0] = 1.0
        return w
    if n == 2 or tile in (0, n - 1):
        a, b = (0, 1) if tile == 0 else (n - 1, n - 2)
        t = (x - nodes[a]) / (nodes[b] - nodes[a])
        w[a], w[b] = 1 - t, t
        return w
    trip = (tile - 1, tile, tile + 1)
    for a in trip:
        others = [nodes[o] for o in trip if o != a]
        w[a] = (x - others[0]) * (x - others[1]) / ((nodes[a] - others[0]) * (nodes[a] - others[1]))
    return w


def coverage_box(prepared) -> tuple[int, int, int, int]:
    """Bounding box ``(x0, y0, x1, y1)`` of the sensor pixels with usable chart data."""
    any_valid = np.zeros_like(prepared[0].valid)
    for p in prepared:
        any_valid |= p.valid
    cols = np.nonzero(any_valid.any(0))[0]
    rows = np.nonzero(any_valid.any(1))[0]
    if len(cols) == 0:
        raise FitError("no sensor pixel sees the chart with a whole kernel around it")
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


# ----------------------------------------------------------------------------------------------
# photometry


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
    keep = np.ones(len(t), bool)
    coef = np.zeros(A.shape[1])
    for _ in range(4):
        coef, *_ = np.linalg.lstsq(A[keep], t[keep], rcond=None)
        r = t - A @ coef
        mad = np.median(np.abs(r[keep])) * 1.4826 + 1e-12
        keep = np.abs(r) < 4 * mad
    return coef


def _photometry_print(y: np.ndarray, u: np.ndarray, pattern: str, radius: int):
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
        yb_all, xb_all = yy[sub_b_mask], xx[sub_b_mask]
        printed = sub_y[sub_b_mask] < 0.5 * wmod(yb_all, xb_all)
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
        keep = np.ones(len(Yb), bool)
        for _ in range(4):
            cb, *_ = np.linalg.lstsq(Ab[keep], vb[::stepb][keep], rcond=None)
            r = vb[::stepb] - Ab @ cb
            keep = np.abs(r) < 4 * (np.median(np.abs(r[keep])) * 1.4826 + 1e-12)
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
        var = _clipped_var(d) / 2
        pts.append((float(np.median(m)), float(var)))
    (lb, vb), (lw, vw) = pts
    alpha = max((vw - vb) / max(lw - lb, 1e-6), 1e-9)
    s2 = max(vb - alpha * lb, 1e-12)
    out.update(alpha=float(alpha), sigma=float(np.sqrt(s2)), levels=[lb, lw], variances=[vb, vw])
    return out


def _clipped_var(d: np.ndarray) -> float:
    """Variance after iterative 5-sigma clipping (robust to defects, exact on quantised data)."""
    d = np.asarray(d, np.float64)
    keep = np.ones(len(d), bool)
    for _ in range(5):
        m, sd = d[keep].mean(), d[keep].std()
        new = np.abs(d - m) < 5 * sd + 1e-12
        if np.array_equal(new, keep):
            break
        keep = new
    return float(d[keep].var())


def _photometry_display(black_y: np.ndarray, white_y: np.ndarray, u: np.ndarray, pattern: str):
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
        pts.append((float(np.median(img[m])), float(_clipped_var(d) / 2)))
    (lb, vb), (lw, vw) = pts
    alpha = max((vw - vb) / max(lw - lb, 1e-6), 1e-9)
    s2 = max(vb - alpha * lb, 1e-12)
    return {"alpha": float(alpha), "sigma": float(np.sqrt(s2)), "levels": [lb, lw], "variances": [vb, vw]}


# ----------------------------------------------------------------------------------------------
# preparation of one capture


def _auto_supersample(loc: ChartLocation) -> int:
    """Footprint subdivision from the chart's local rotation/shear against the sensor axes."""
    m = loc.mapping
    w, h = m.image_size
    pts = np.array([[x, y] for x in np.linspace(0, w - 1, 5) for y in np.linspace(0, h - 1, 5)])
    P = m.inverse(pts)
    e = 0.5
    jx = (m.inverse(pts + [e, 0]) - m.inverse(pts - [e, 0])) / (2 * e)
    jy = (m.inverse(pts + [0, e]) - m.inverse(pts - [0, e])) / (2 * e)
    ang = np.maximum(np.abs(np.arctan2(jx[:, 1], jx[:, 0])), np.abs(np.arctan2(jy[:, 0], jy[:, 1])))
    deg = float(np.degrees(np.nanmax(ang)))
    del P
    return 1 if deg < 5.0 else 2 if deg < 10.0 else 3


def _in_rect_mask(loc: ChartLocation, rect, size) -> np.ndarray:
    """Sensor pixels whose chart position lies inside ``rect`` (computed on a coarse grid)."""
    import cv2

    w, h = size
    g = 4
    xs = np.arange(0, w + g, g, dtype=float)
    ys = np.arange(0, h + g, g, dtype=float)
    X, Y = np.meshgrid(xs, ys)
    P = loc.mapping.inverse(np.stack([X, Y], -1))
    x0, y0, x1, y1 = rect
    inside = ((P[..., 0] >= x0) & (P[..., 0] < x1) & (P[..., 1] >= y0) & (P[..., 1] < y1)).astype(np.uint8)
    return cv2.resize(inside, (len(xs) * g, len(ys) * g), interpolation=cv2.INTER_NEAREST)[:h, :w] > 0


def _mismatch_mask(b: np.ndarray, u: np.ndarray, radius: int, limit: float = 0.3) -> np.ndarray:
    """Pixels near areas whose local mean differs from the chart's by more than ``limit`` of
    the black-white contrast. Means over windows several kernels wide do not depend on the
    PSF, so a sharp or blurred capture of the right chart never trips this."""
    import cv2

    s = max(9, 4 * radius + 1)
    ok = (np.isfinite(u) & np.isfinite(b)).astype(np.float32)
    n = cv2.boxFilter(ok, -1, (s, s), normalize=False)
    db = cv2.boxFilter(np.where(ok > 0, b - u, 0).astype(np.float32), -1, (s, s), normalize=False)
    bad = (np.abs(db) > limit * np.maximum(n, 1)) & (n > 0.5 * s * s)
    if not bad.any():
        return bad
    k = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    return cv2.dilate(bad.astype(np.uint8), k) > 0


def _window_valid(u: np.ndarray, radius: int) -> np.ndarray:
    import cv2

    ok = np.isfinite(u).astype(np.uint8)
    return cv2.erode(ok, np.ones((2 * radius + 1, 2 * radius + 1), np.uint8), borderValue=0) > 0


# ----------------------------------------------------------------------------------------------
# pilot (half resolution)


def _half(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[0] // 2 * 2, img.shape[1] // 2 * 2
    a = img[:h, :w]
    return 0.25 * (a[0::2, 0::2] + a[0::2, 1::2] + a[1::2, 0::2] + a[1::2, 1::2])


def _evidence_lambda(Q: np.ndarray, q: np.ndarray, D: np.ndarray, n_rows: int, bwb_red: float) -> float:
    """Regularisation weight maximising the marginal likelihood of a Gaussian linear model.

    Model: weighted data with noise scale ``s^2`` (profiled out), conjugate prior
    ``kappa ~ N(0, s^2 (lam D)^-1)``; ``Q``, ``q``, ``bwb_red`` are the normal equations with the
    nuisance parameters eliminated. With the generalised eigen-decomposition ``Q v = mu D v``
    everything is a function of ``mu`` and the projections of ``q``.
    """
    from scipy.linalg import eigh

    mu, V = eigh(Q, D, driver="gvd")  # divide and conquer: several times faster here
    mu = np.maximum(mu, 0)
    z2 = (V.T @ q) ** 2  # V is D-orthonormal
    n = len(q)
    best = (-np.inf, 1.0)
    scale = np.median(mu[mu > 0]) if np.any(mu > 0) else 1.0
    for lam in scale * np.logspace(-7, 1, 81):
        # b^T (I + A (lam D)^-1 A^T)^-1 b, and log det(I + (lam D)^-1 Q) = sum log(mu + lam) - n log lam
        fit_term = bwb_red - np.sum(z2 / (mu + lam))
        if fit_term <= 0:
            continue
        # log evidence with the noise scale profiled out (conjugate prior, n_rows data)
        ev = -0.5 * n_rows * np.log(fit_term) - 0.5 * np.sum(np.log(mu + lam)) + 0.5 * n * np.log(lam)
        if ev > best[0]:
            best = (ev, lam)
    return float(best[1])


def _reduce(ne: NormalEquations):
    """Schur complement eliminating the nuisance parameters: (Q, q, b^T W b reduced)."""
    k2 = ne.s * ne.s
    G = ne.G
    if ne.n_nuis:
        Gnn_inv = np.linalg.pinv(G[k2:, k2:])
        Q = G[:k2, :k2] - G[:k2, k2:] @ Gnn_inv @ G[k2:, :k2]
        q = ne.r[:k2] - G[:k2, k2:] @ Gnn_inv @ ne.r[k2:]
        bwb = ne.bwb - ne.r[k2:] @ Gnn_inv @ ne.r[k2:]
    else:
        Q, q, bwb = G[:k2, :k2], ne.r[:k2], ne.bwb
    return 0.5 * (Q + Q.T), q, float(bwb)


def _rows_im2col(u_reg: np.ndarray, s: int, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Windows (n, s*s) of ``u_reg`` whose top-left corners are at (ys, xs), as float32."""
    from numpy.lib.stride_tricks import sliding_window_view

    sw = sliding_window_view(u_reg, (s, s))
    return np.ascontiguousarray(sw[ys, xs].reshape(len(ys), s * s), dtype=np.float32)


def _support_radius(k: np.ndarray, limit: float, noise: float | None = None) -> tuple[int, float]:
    """Support radius of a (noisy) kernel estimate, and its mass share beyond ``limit``.

    The kernel is smoothed (3x3 mean) so single noise speckles fall below the threshold
    ``max(2 x noise, 1 % of the peak)`` (``noise``: the coefficients' posterior standard
    deviation, else the RMS of the outer quarter of the support); the radius is the
    largest Chebyshev distance from the centre of an above-threshold pixel. The second value is
    the share of the above-threshold mass farther than ``limit`` from the centre (a PSF wider
    than the kernel to be estimated: defocus).
    """
    from scipy.ndimage import uniform_filter

    s = k.shape[0]
    c = s // 2
    yy, xx = np.mgrid[0:s, 0:s]
    ring = np.maximum(np.abs(yy - c), np.abs(xx - c))
    sm = uniform_filter(k, 3, mode="constant")
    if noise is None:
        outer = ring >= max(1, int(round(0.75 * c)))
        noise = 1.5 * float(np.sqrt(np.mean(sm[outer] ** 2))) if outer.any() else 0.0
    thr = max(2 * noise, 0.01 * sm.max())
    above = sm > thr
    if not above.any():
        return 1, 0.0
    r = int(ring[above].max())
    kk = np.where(above, k, 0.0)
    beyond = float(kk[ring > limit].sum() / max(kk.sum(), 1e-30))
    return min(r, c), beyond


# ----------------------------------------------------------------------------------------------
# the fit


def fit_psf(
    captures: Sequence,
    chart: ChartSpec,
    *,
    kernel_size: int = 31,
    grid: tuple[int, int] = (8, 6),
    nodes: str = "coverage",
    profile=None,
    distortion: tuple[str, ...] = ("k1", "k2"),
    regularization: float | None = None,
    prior: str = "laplacian",
    field_iterations: int = 3,
    smooth: bool = True,
    pool_green: bool = True,
    pilot_rows: int = 6000,
    max_rows: int | None = None,
    supersample: int | None = None,
    progress: bool = False,
) -> FitPSFResult:
    """Estimate a PSF field (one kernel per grid node and CFA plane) from chart captures.

    Parameters
    ----------
    captures : sequence of RawImage or paths
        Print charts: one or more photos of the chart (each registered separately). Display
        charts: the frame sequence in the spec's order (geometry, black, white, noise...).
    chart : ChartSpec
        The chart's spec (:func:`dpcal.chart.load_chart`); must be a PSF chart.
    kernel_size : int
        Output kernel size (odd); the estimated support is chosen per tile from the data and
        is at most this.
    grid : (gx, gy)
        Number of nodes along x and y; nodes sit at the centres of an even partition of
        ``nodes``.
    nodes : {"coverage", "sensor"}
        Partition the bounding box of the sensor area that sees the chart (default: every node
        has data around it; the field extends constantly beyond the outer nodes), or the whole
        sensor (nodes the chart does not reach are extrapolated).
    profile : Profile or str, optional
        Take the noise model for the weights from this profile at each capture's ISO instead
        of measuring it on the chart's flat areas.
    distortion : tuple of str
        Lens distortion terms of the registration model.
    regularization : float, optional
        Fixed regulariser weight (relative to the data); default: per tile,
        ``EVIDENCE_FACTOR`` times the maximum-evidence weight.
    prior : {"laplacian", "gradient"}
        Tikhonov smoothness prior on each kernel (second or first derivatives).
    field_iterations : int
        Sweeps of the field-model solve that makes tile kernels consistent with the bilinear
        field (0: independent tiles).
    smooth : bool
        Smooth the node kernels across the grid (thin-plate penalty, weight by generalised
        cross-validation; GCV keeps it off where the field is not smooth).
    pool_green : bool
        Shrink the Gr and Gb kernels toward their mean by the empirical-Bayes factor (no
        pooling when they differ by more than their noise).
    pilot_rows : int
        Rows per tile for the half-resolution pilot.
    max_rows : int, optional
        Cap on rows per tile and plane (default: all).
    supersample : int, optional
        Pixel footprint subdivision for rendering the sharp chart (default: from the pose).
    progress : bool
        Show a progress bar on stderr.

    Returns
    -------
    FitPSFResult

    Raises
    ------
    BadInputError
        Wrong kind of chart, no chart in view, chart out of frame, saturated capture,
        inconsistent captures, or a chart that does not match the capture.
    FitError
        Kernels that do not fit (defocus beyond ``kernel_size``), or too little data.
    """
    from dpcal.io.raw import RawImage, read_raw

    if chart.kind != "psf":
        raise BadInputError(f"{chart.path or 'the chart'} is a {chart.kind} chart; fit-psf needs a PSF chart "
                            "(`dpcal make-chart psf`)")
    K = int(kernel_size)
    if K < 3 or K % 2 == 0:
        raise BadInputError(f"--kernel-size must be odd and at least 3, got {K}")
    gx, gy = int(grid[0]), int(grid[1])
    if gx < 1 or gy < 1:
        raise BadInputError(f"--grid must be at least 1 1, got {gx} {gy}")
    raws = [c if isinstance(c, RawImage) else read_raw(c) for c in captures]
    if not raws:
        raise BadInputError("give at least one capture")
    h, w = raws[0].dn.shape
    pattern = raws[0].pattern
    for r in raws[1:]:
        if r.dn.shape != (h, w) or r.pattern != pattern:
            raise BadInputError(f"{r.path}: captures differ in size or CFA pattern ({r.dn.shape[1]}x{r.dn.shape[0]} "
                                f"{r.pattern} vs {w}x{h} {pattern})")
    R = K // 2
    prof = None
    if profile is not None:
        from dpcal.profile import load_profile

        prof = load_profile(profile)

    # --- registration, photometry, sharp chart ------------------------------------------
    prepared = _prepare(raws, chart, pattern, R, distortion, supersample, prof)
    noise_report = {p.name: p.noise for p in prepared}

    # --- tiles -----------------------------------------------------------------------------
    if nodes == "sensor":
        box = (0, 0, w, h)
    elif nodes == "coverage":
        box = coverage_box(prepared)
    else:
        raise BadInputError(f"nodes must be 'coverage' or 'sensor', got {nodes!r}")
    bw, bh = box[2] - box[0], box[3] - box[1]
    xs_nodes, ys_nodes = node_grid(bw, bh, gx, gy, box[:2])
    ex, ey = _tile_bounds(bw, bh, gx, gy, box[:2])
    order = {"laplacian": 2, "gradient": 1}.get(prior)
    if order is None:
        raise BadInputError(f"prior must be 'laplacian' or 'gradient', got {prior!r}")
    pilot = _pilot(prepared, ex, ey, K, pilot_rows, order)
    _check_match(pilot, chart)
    main = _main(prepared, pilot, ex, ey, xs_nodes, ys_nodes, K, pattern, regularization, max_rows, progress, order)

    # --- field model ----------------------------------------------------------------------
    _joint_field(main, gx, gy, xs_nodes, ys_nodes, K, iterations=field_iterations, progress=progress)
    delta = _recentre(main, prepared, xs_nodes, ys_nodes, chart, distortion)
    psf, qa = _field_model(main, gx, gy, K)
    smoothing = _smooth_field(psf, main, gx, gy, pool_green=pool_green, enabled=smooth)
    _shift_kernels(psf, delta)
    _kernel_qa(psf, qa)
    node_xy = np.stack(np.meshgrid(xs_nodes, ys_nodes), -1)
    reg = [dict(capture=p.name, **p.loc.summary()) for p in prepared]
    rms = float(np.sqrt(np.mean([r["registration_rms_px"] ** 2 for r in reg])))
    rel = [t for t in qa]
    summary = {
        "registration_rms_px": rms,
        "registration_model_rms_px": float(np.sqrt(np.mean([r["registration_model_rms_px"] ** 2 for r in reg]))),
        "kernel_size": K,
        "grid": [gx, gy],
        "planes": list(PLANES),
        "sensor_size": [w, h],
        "pattern": pattern,
        "captures": [p.name for p in prepared],
        "median_reduced_chi2": float(np.median([t["reduced_chi2"] for t in rel if t["reduced_chi2"] is not None]))
        if any(t["reduced_chi2"] is not None for t in rel) else None,
        "tiles_extrapolated": int(sum(1 for t in rel if t["extrapolated"])),
        "node_region": list(box),
        "field_model": smoothing,
        "prior": prior,
        "recentred_px": float(np.abs(delta).max()),
    }
    meta = {"method": "dpcal fit-psf", "chart": str(chart.path) if chart.path else None,
            "registration_rms_px": rms, "captures": summary["captures"], "pattern": pattern}
    field = PSFField(psf.astype(np.float32), node_xy, PLANES, (w, h), meta)
    return FitPSFResult(field, qa, reg, noise_report, summary)


def _frame_roles(chart: ChartSpec, n: int) -> list[int]:
    if chart.medium == "print":
        i = chart.noise_frames()[0]
        return [i] * n
    roles = [f["role"] for f in chart.frames]
    if n < 4:
        raise BadInputError(f"a display chart needs the frame sequence (checkerboard, black, white and at least one "
                            f"noise frame, in that order); got {n} capture(s)")
    if n > len(roles):
        raise BadInputError(f"got {n} captures but the chart has only {len(roles)} frames")
    return list(range(n))


def _prepare(raws, chart, pattern, R, distortion, supersample, prof) -> list[_Prepared]:
    h, w = raws[0].dn.shape
    frames = _frame_roles(chart, len(raws))
    out = []
    if chart.medium == "print":
        for raw in raws:
            y = raw.normalized()
            loc = locate_chart(y, pattern, chart, frame=frames[0], distortion=distortion, kernel_radius=R)
            ss = supersample or _auto_supersample(loc)
            chart_img = chart_raster(chart, frames[0])
            u = rasterize(chart_img, loc.mapping, supersample=ss)
            # Flat areas: away from edges by the kernel radius, but keep something of every square.
            sq_px = chart.square * float(np.median(loc.mapping.scale_at(chart.corners)))
            black, white, nstats = _photometry_print(y, u, pattern, max(2, min(R + 2, int(0.3 * sq_px))))
            out.append(_finish(raw, y, u, black, white, nstats, loc, chart, R, prof))
        return out
    # display: geometry from the checkerboard frame, photometry from black/white frames
    geo, blk, wht = raws[0], raws[1], raws[2]
    loc = locate_chart(geo.normalized(), pattern, chart, frame=0, distortion=distortion, kernel_radius=R)
    ss = supersample or _auto_supersample(loc)
    sat = summed_area(np.ones((chart.height, chart.width)))
    on = rasterize(np.ones((chart.height, chart.width)), loc.mapping, supersample=1, sat=sat)
    black, white, nstats = _photometry_display(blk.normalized(), wht.normalized(), on, pattern)
    for raw, fr in zip(raws[3:], frames[3:]):
        if chart.frames[fr]["role"] != "noise":
            raise BadInputError(f"{raw.path}: capture {fr + 1} should show frame {chart.frames[fr]['file']} "
                                f"({chart.frames[fr]['role']}); give the frames in the chart's order")
        u = rasterize(chart_raster(chart, fr), loc.mapping, supersample=ss)
        out.append(_finish(raw, raw.normalized(), u, black, white, nstats, loc, chart, R, prof))
    return out


def _finish(raw, y, u, black, white, nstats, loc, chart, R, prof) -> _Prepared:
    h, w = y.shape
    scale = (white - black).astype(np.float32)
    if np.nanmin(scale[np.isfinite(u)]) <= 0.01:
        raise BadInputError(f"{raw.path}: the chart's white is barely above its black in places; "
                            "the capture is far too dark or lit unevenly")
    b = ((y - black) / scale).astype(np.float32)
    sat = y >= SATURATION
    b[sat] = np.nan
    valid = _window_valid(u, R) & np.isfinite(b)
    # Where the capture plainly contradicts the chart (parts not printed, cut off at the page
    # edge; glare; an occluder), the chart model cannot explain the data: leave those out.
    mismatch = _mismatch_mask(b, u, R)
    valid &= ~mismatch
    in_noise = _in_rect_mask(loc, chart.noise["rect"], (w, h))
    frac_sat = float(np.mean(sat[in_noise])) if in_noise.any() else 0.0
    if frac_sat > 0.02:
        raise BadInputError(f"{raw.path}: the capture is saturated: {100 * frac_sat:.0f} % of the noise field is "
                            "clipped; reduce the exposure")
    noise = dict(nstats)
    if prof is not None:
        iso = raw.iso or 100.0
        nz = prof.noise(iso=iso)
        noise = {p: {"alpha": nz.alpha[p], "sigma": nz.sigma[p], "source": f"profile {prof.id} at ISO {iso:g}"}
                 for p in PLANES}
    # Quantisation noise (1 DN, uniform) is a floor under any measured or published noise.
    q2 = (1.0 / max(raw.white_level - min(raw.black_level), 1.0)) ** 2 / 12
    for p in PLANES:
        if noise[p].get("alpha") is None:
            raise FitError(f"{raw.path}: cannot measure the noise in plane {p} (too little flat chart area)")
        noise[p] = dict(noise[p], sigma=float(np.sqrt(noise[p]["sigma"] ** 2 + q2)))
    p = _Prepared(str(raw.path), b, u, valid, black.astype(np.float32), scale, in_noise, loc)
    on_chart = np.isfinite(u)
    p.mismatch_fraction = float(mismatch[on_chart].mean()) if on_chart.any() else 0.0  # type: ignore[attr-defined]
    if p.mismatch_fraction > 0.01:  # type: ignore[attr-defined]
        log.warning("%s: %.0f %% of the chart area does not look like the chart (not printed, cut off at the page "
                    "edge, glare or an occluder); left out of the fit", raw.path, 100 * p.mismatch_fraction)
    p.noise = noise  # type: ignore[attr-defined]
    p.pattern = raw.pattern  # type: ignore[attr-defined]
    return p


# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _PilotTile:
    kernel_half: np.ndarray | None  # (Kh, Kh) at half resolution
    kernel_full: np.ndarray | None  # upsampled to full resolution (K x K)
    radius: int  # support radius at full resolution
    border: float
    r2: float | None  # explained variance in the noise field
    n: int


def _upsample_kernel(kh: np.ndarray, K: int) -> np.ndarray:
    """A half-resolution kernel on the full-resolution K x K grid (offset q <-> q / 2), bilinear."""
    from scipy.ndimage import map_coordinates

    ch = (kh.shape[0] - 1) / 2
    q = np.arange(K) - (K - 1) / 2
    yy, xx = np.meshgrid(ch + q / 2, ch + q / 2, indexing="ij")
    out = np.maximum(map_coordinates(kh, [yy, xx], order=1, mode="constant", cval=0.0), 0)
    return out / max(out.sum(), 1e-12)


def _sigma_max(k: np.ndarray) -> float:
    """Standard deviation of a kernel along its major axis (second moments about the centroid)."""
    c = np.arange(k.shape[0]) - (k.shape[0] - 1) / 2
    X, Y = np.meshgrid(c, c)
    m = max(float(k.sum()), 1e-30)
    mx, my = kernel_centroid(k)
    cxx = float((k * (X - mx) ** 2).sum()) / m
    cyy = float((k * (Y - my) ** 2).sum()) / m
    cxy = float((k * (X - mx) * (Y - my)).sum()) / m
    return math.sqrt(max(0.5 * (cxx + cyy) + math.hypot(0.5 * (cxx - cyy), cxy), 0.0))


def _pilot(prepared: list[_Prepared], ex, ey, K: int, pilot_rows: int, prior_order: int = 2) -> dict:
    """Half-resolution luminance kernels per tile (noise-field rows only)."""
    rng = np.random.default_rng(0)
    # The pilot looks a little beyond the kernel size, to notice PSFs that do not fit in it.
    Kh = (K + 1) // 2 + 4
    Kh += 1 - Kh % 2
    rh = Kh // 2
    gx, gy = len(ex) - 1, len(ey) - 1
    halves = []
    for p in prepared:
        bh = _half(np.where(np.isfinite(p.b), p.b, np.nan))
        uh = _half(p.u)
        vh = _half(p.valid.astype(np.float32)) == 1.0
        nh = _half(p.in_noise.astype(np.float32)) == 1.0
        halves.append((bh, np.pad(uh, rh, constant_values=np.nan), vh & nh & np.isfinite(bh)))
    D = smoothness_operator(Kh, prior_order)
    out = {}
    # The central tile first: its evidence-optimal regularisation serves all pilot tiles (the
    # pilot only needs a sound kernel shape, and the eigen-decomposition is its costliest step).
    order = sorted(((j, i) for j in range(gy) for i in range(gx)),
                   key=lambda t: (t[0] - (gy - 1) / 2) ** 2 + (t[1] - (gx - 1) / 2) ** 2)
    lam = None
    for (j, i) in order:
        ne = NormalEquations.empty(Kh, 0)
        tot_var = 0.0
        n_tot = 0
        for bh, pad, vh in halves:
            y0, y1, x0, x1 = ey[j] // 2, ey[j + 1] // 2, ex[i] // 2, ex[i + 1] // 2
            ys, xs = np.nonzero(vh[y0:y1, x0:x1])
            if len(ys) == 0:
                continue
            sel = rng.choice(len(ys), size=min(pilot_rows, len(ys)), replace=False)
            ys, xs = ys[sel] + y0, xs[sel] + x0
            A = _rows_im2col(pad, Kh, ys, xs)
            if not np.all(np.isfinite(A)):
                ok = np.all(np.isfinite(A), 1)
                A, ys, xs = A[ok], ys[ok], xs[ok]
            bb = bh[ys, xs]
            ne.add(A, bb, np.ones(len(bb), np.float32))
            tot_var += float(((bb - bb.mean()) ** 2).sum())
            n_tot += len(bb)
        if ne.n < 4 * Kh * Kh:
            out[(j, i)] = _PilotTile(None, None, -1, 0.0, None, ne.n)
            continue
        Q, q, bwb = _reduce(ne)
        if lam is None:
            lam = _evidence_lambda(Q, q, D, ne.n, bwb)
        sol = solve_kernel(ne, lam, D)
        kh = sol.kernel
        # posterior standard deviation of the (normalised) coefficients
        try:
            Lc = np.linalg.cholesky(Q + lam * D)
            var = (np.linalg.inv(Lc) ** 2).sum(0) * max(sol.reduced_chi2, 1e-12)
            noise = float(np.sqrt(np.mean(var))) / max(sol.gain, 1e-12)
        except np.linalg.LinAlgError:
            noise = None
        radius_h, border = _support_radius(kh, (K // 2) / 2 + 0.5, noise)
        r2 = 1.0 - sol.chi2 / max(tot_var, 1e-12)
        kf = _upsample_kernel(kh, K)
        # The threshold rule cuts a wide PSF's tails where the pilot is noisy; a support of at
        # least 3.5 sigma (second moments of the pilot, which noise only inflates) keeps them.
        radius = max(2 * radius_h + 2, math.ceil(3.5 * _sigma_max(kf)))
        out[(j, i)] = _PilotTile(kh, kf, min(K // 2, radius), border, r2, ne.n)
    return out


def _recentre(main: dict, prepared: list[_Prepared], xs_nodes, ys_nodes, chart: ChartSpec,
              distortion) -> np.ndarray:
    """Displacement ``(gy, gx, 2)`` to take out of the node kernels: the part of the PSFs'
    centroid field that the camera model can express.

    The X-corners locate the chart as blurred by the PSF, so an asymmetric (e.g. comatic) PSF
    moves them by an amount between its peak and its centroid, and the kernels keep the rest.
    A chart cannot observe absolute shifts that the camera model (homography + distortion)
    can express, so dpcal's convention is that these are zero on average: the camera model is
    refitted to the corner-based mapping displaced by the tile kernels' mean centroid field,
    and the kernels are later shifted by the resulting displacement (smooth, from a dozen model
    parameters, so it adds almost no noise). Lateral colour and displacements the model cannot
    express stay in the kernels.
    """
    gy, gx = len(ys_nodes), len(xs_nodes)
    cent = np.zeros((gy, gx, 2))
    have = np.zeros((gy, gx), bool)
    for (j, i), t in main.items():
        cs = [kernel_centroid(e[0].kernel) for e in t["solutions"] if e is not None]
        if cs:
            cent[j, i] = np.mean(cs, axis=0)
            have[j, i] = True
    if have.sum() < 2:
        return np.zeros((gy, gx, 2))
    m = prepared[0].loc.mapping
    x0, y0, x1, y1 = chart.noise["rect"]
    P = np.stack(np.meshgrid(np.linspace(x0, x1, 32), np.linspace(y0, y1, 24)), -1).reshape(-1, 2)
    X = m.forward(P)
    # the centroid field between tile centres, from the tiles with data only
    wx = hat_weights(xs_nodes, X[:, 0])
    wy = hat_weights(ys_nodes, X[:, 1])
    wgt = np.einsum("jn,in,ji->n", wy, wx, have.astype(float))
    c = np.einsum("jn,in,jic->nc", wy, wx, cent * have[..., None]) / np.maximum(wgt, 1e-12)[:, None]
    keep = wgt > 0.5
    fit = fit_lens_mapping(P[keep], X[keep] + c[keep], m.image_size, distortion=tuple(distortion), init=m,
                           outlier_px=1e9)
    nodes = np.stack(np.meshgrid(xs_nodes, ys_nodes), -1)
    return fit.mapping.forward(m.inverse(nodes)) - nodes


def _shift_kernels(psf: np.ndarray, delta: np.ndarray) -> None:
    """Shift every node's kernels by ``-delta`` (sub-pixel, Fourier; in place, kept on the simplex)."""
    from scipy.ndimage import fourier_shift

    k = psf.shape[-1]
    pad = k // 2
    for j in range(psf.shape[0]):
        for i in range(psf.shape[1]):
            dx, dy = delta[j, i]
            for c in range(psf.shape[2]):
                big = np.pad(psf[j, i, c], pad)
                sh = np.real(np.fft.ifft2(fourier_shift(np.fft.fft2(big), (-dy, -dx))))[pad:pad + k, pad:pad + k]
                psf[j, i, c] = project_simplex(sh)


def _check_match(pilot: dict, chart: ChartSpec) -> None:
    r2 = [t.r2 for t in pilot.values() if t.r2 is not None]
    if not r2:
        raise FitError("the chart's noise field covers too little of any tile; fill more of the frame with the chart "
                       "or use a coarser --grid")
    med = float(np.median(r2))
    if med < 0.2:
        causes = ("the frames given in another order than the chart's sequence (checkerboard, black, white, "
                  "noise), or the camera moved between them" if chart.medium == "display" else
                  "a print cut off at the page edge or printed scaled (print chart.pdf at 100 %; check its 100 mm "
                  "bar)")
        raise BadInputError(
            f"the capture's noise pattern does not match {chart.path or 'the chart spec'} (chart id {chart.chart_id}; "
            f"explained variance {med:.2f}). Likely causes: {causes}; no chart, or another chart or seed, in view "
            "(compare the id printed under the chart); or a capture far out of focus"
        )
    borders = [(t.border, key) for key, t in pilot.items() if t.kernel_half is not None]
    worst, key = max(borders)
    if worst > 0.05:
        raise FitError(
            f"the PSF is wider than the kernel: {100 * worst:.0f} % of its mass lies beyond the kernel's radius in "
            f"tile (row {key[0]}, column {key[1]}); refocus (strong defocus?), or use a larger --kernel-size"
        )


@dataclasses.dataclass
class _TileData:
    """One capture's data for one tile: the chart region and the rows of each plane."""

    ry0: int  # region origin (sensor px); the region is the tile plus a margin of K // 2
    rx0: int
    u: np.ndarray  # sharp chart over the region (0 off the chart; rows never reach it)
    rows: list  # per plane: (ry, rx) region coordinates of the rows
    w: list  # per plane: row weights
    nuis: list  # per plane: nuisance columns (n, N_NUIS)


def _main(prepared, pilot, ex, ey, xs_nodes, ys_nodes, K, pattern, regularization, max_rows, progress,
          prior_order: int = 2) -> dict:
    """Per-tile, per-plane normal equations, first (per-tile) kernel solutions, and row data."""
    import cv2

    gx, gy = len(ex) - 1, len(ey) - 1
    h, w = prepared[0].b.shape
    R = K // 2
    radii = [t.radius for t in pilot.values() if t.radius >= 0]
    default_r = max(radii) if radii else R
    fallback = np.mean([t.kernel_full for t in pilot.values() if t.kernel_full is not None], axis=0)
    offs = plane_offsets(pattern)
    rng = np.random.default_rng(1)
    out = {}
    tiles = [(j, i) for j in range(gy) for i in range(gx)]
    it = tiles
    if progress:
        from tqdm import tqdm

        it = tqdm(tiles, desc="fit-psf: tiles", file=__import__("sys").stderr, leave=False)
    Ds: dict[int, np.ndarray] = {}
    for (j, i) in it:
        pt = pilot[(j, i)]
        r = pt.radius if pt.radius >= 0 else default_r
        s = 2 * r + 1
        if s not in Ds:
            Ds[s] = smoothness_operator(s, prior_order)
        kpil = (pt.kernel_full if pt.kernel_full is not None else fallback).astype(np.float32)
        x0, x1, y0, y1 = ex[i], ex[i + 1], ey[j], ey[j + 1]
        nes = [NormalEquations.empty(s, N_NUIS, gx * gy) for _ in PLANES]
        tot = [0.0] * 4
        datas = []
        for p in prepared:
            ry0, ry1, rx0, rx1 = y0 - R, y1 + R, x0 - R, x1 + R
            u_reg = np.full((ry1 - ry0, rx1 - rx0), np.nan, np.float32)
            sy0, sy1, sx0, sx1 = max(ry0, 0), min(ry1, h), max(rx0, 0), min(rx1, w)
            u_reg[sy0 - ry0 : sy1 - ry0, sx0 - rx0 : sx1 - rx0] = p.u[sy0:sy1, sx0:sx1]
            u_reg = np.where(np.isfinite(u_reg), u_reg, 0.0).astype(np.float32)
            # Predicted signal (pilot kernel) for the weights and the gain-ramp columns.
            pred = cv2.filter2D(u_reg, -1, kpil[::-1, ::-1].copy(), borderType=cv2.BORDER_CONSTANT)
            td = _TileData(ry0, rx0, u_reg, [], [], [])
            for c, name in enumerate(PLANES):
                dy, dx = offs[name]
                ly0, lx0 = (dy - y0) % 2, (dx - x0) % 2
                vy, vx = np.nonzero(p.valid[y0 + ly0 : y1 : 2, x0 + lx0 : x1 : 2])
                ty = ly0 + 2 * vy  # tile-local rows
                tx = lx0 + 2 * vx
                if max_rows and len(ty) > max_rows:
                    sel = np.sort(rng.choice(len(ty), max_rows, replace=False))
                    ty, tx = ty[sel], tx[sel]
                if len(ty) == 0:
                    td.rows.append((ty, tx))
                    td.w.append(np.zeros(0, np.float32))
                    td.nuis.append(np.zeros((0, N_NUIS), np.float32))
                    continue
                bb = p.b[y0 + ty, x0 + tx]
                sp = pred[ty + R, tx + R]
                scale = p.scale[y0 + ty, x0 + tx]
                blk = p.black[y0 + ty, x0 + tx]
                nz = p.noise[name]
                ypred = np.maximum(blk + scale * sp, 0)
                wts = (scale**2 / (nz["alpha"] * ypred + nz["sigma"] ** 2)).astype(np.float32)
                xt = ((x0 + tx) - xs_nodes[i]) / max(x1 - x0, 1)
                yt = ((y0 + ty) - ys_nodes[j]) / max(y1 - y0, 1)
                nuis = np.stack([xt * sp, yt * sp], 1).astype(np.float32)
                hx = local_field_weights(xs_nodes, i, (x0 + tx).astype(float))
                hy = local_field_weights(ys_nodes, j, (y0 + ty).astype(float))
                hats = (hy[:, None, :] * hx[None, :, :]).reshape(gy * gx, -1).T
                # Gram in chunks of rows (bounded memory, cache-friendly).
                chunk = max(1024, 2_000_000 // (s * s))
                for a in range(0, len(ty), chunk):
                    sl = slice(a, a + chunk)
                    A = _rows_im2col(u_reg, s, ty[sl] + R - r, tx[sl] + R - r)
                    A = np.concatenate([A, nuis[sl]], 1)
                    nes[c].add(A, bb[sl], wts[sl], hats[sl])
                tot[c] += float(np.sum(wts * (bb - np.average(bb, weights=wts)) ** 2))
                td.rows.append((ty + R, tx + R))
                td.w.append(wts)
                td.nuis.append(nuis)
            datas.append(td)
        sols: list = [None] * 4
        D = Ds[s]
        # One regularisation weight per tile, by maximum evidence on the plane with the most data
        # weight: it is a prior precision on the (normalised) kernel, the same for all planes.
        usable = [c for c in range(4) if nes[c].n >= 4 * s * s]
        lam = float(regularization) if regularization is not None else None
        if lam is None and usable:
            ref = max(usable, key=lambda c: nes[c].wsum)
            Q, q, bwb = _reduce(nes[ref])
            lam = EVIDENCE_FACTOR * _evidence_lambda(Q, q, D, nes[ref].n, bwb)
        for c in usable:
            sol = solve_kernel(nes[c], lam, D)
            sols[c] = (sol, nes[c], tot[c], lam)
        out[(j, i)] = {"s": s, "r": r, "solutions": sols, "data": datas, "D": D}
    return out


def _joint_field(main: dict, gx: int, gy: int, xs_nodes, ys_nodes, K: int, iterations: int = 6,
                 progress: bool = False) -> None:
    """Make the tile kernels consistent with the field model (in place).

    For each tile the moment equations of its local field model are solved (weights
    :func:`local_field_weights`, source-indexed like the bilinear field): the residual of
    ``y = sum_g h_g * (w_g . u)`` over the tile's rows must be orthogonal to the tile's
    regressors (up to the regulariser). With the neighbours' kernels fixed, that is the tile's
    own problem with the linear term corrected by ``U^T W d``, where
    ``d = sum_{g' != g} (w_g' u) * (kappa_g' - kappa_g)`` is computed by FFT over the tile's
    region. Relaxed block-Jacobi sweeps (relaxation 1 / mean own weight) converge in a few
    iterations; at the fixed point the equations hold exactly, also at the chart's border where
    the data are not stationary.
    """
    from scipy import fft as sfft

    R = K // 2
    tiles = list(main)
    # Current kernels (normalised), per node and plane; nodes without a solution stay None.
    cur: dict = {}
    for key, t in main.items():
        for c in range(4):
            e = t["solutions"][c]
            cur[(key, c)] = embed_kernel(e[0].kernel, K) if e is not None else None
    _fill_missing(cur, gx, gy)
    shapes = [t["data"][0].u.shape for t in main.values() if t["data"]]
    if not shapes:
        return
    P = (sfft.next_fast_len(max(s[0] for s in shapes)), sfft.next_fast_len(max(s[1] for s in shapes)))

    def kfft(k):
        pad = np.zeros(P, np.float32)
        pad[:K, :K] = k
        return sfft.rfft2(np.roll(pad, (-R, -R), axis=(0, 1)), workers=-1)

    # Transforms that do not change across sweeps: the chart region and its hat-windowed parts.
    cache: dict = {}
    for (j, i) in tiles:
        t = main[(j, i)]
        if all(e is None for e in t["solutions"]):
            continue
        nbrs = [(jj, ii) for jj in range(max(0, j - 1), min(gy, j + 2)) for ii in range(max(0, i - 1), min(gx, i + 2))
                if (jj, ii) != (j, i)]
        per_capture = []
        for td in t["data"]:
            hr, wr = td.u.shape
            up = np.zeros(P, np.float32)
            up[:hr, :wr] = td.u
            UF = sfft.rfft2(up, workers=-1)
            hx = local_field_weights(xs_nodes, i, td.rx0 + np.arange(wr, dtype=float))
            hy = local_field_weights(ys_nodes, j, td.ry0 + np.arange(hr, dtype=float))
            XF = {}
            for (jj, ii) in nbrs:
                if not (np.any(hx[ii]) and np.any(hy[jj])):
                    continue
                wu = np.zeros(P, np.float32)
                wu[:hr, :wr] = td.u * np.outer(hy[jj], hx[ii]).astype(np.float32)
                XF[(jj, ii)] = sfft.rfft2(wu, workers=-1)
            per_capture.append((UF, XF))
        cache[(j, i)] = per_capture

    it = range(iterations)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="fit-psf: field model", file=__import__("sys").stderr, leave=False)
    for _ in it:
        KF = {key: kfft(k.astype(np.float32)) for key, k in cur.items()}
        new = dict(cur)
        for (j, i) in tiles:
            t = main[(j, i)]
            if (j, i) not in cache:
                continue
            s, r = t["s"], t["r"]
            corr = [np.zeros(s * s) for _ in range(4)]
            corr_n = [np.zeros(N_NUIS) for _ in range(4)]
            lag = np.arange(s) - r
            for td, (UF, XF) in zip(t["data"], cache[(j, i)]):
                for c in range(4):
                    e = t["solutions"][c]
                    ry, rx = td.rows[c]
                    if e is None or len(ry) == 0 or not XF:
                        continue
                    own = KF[((j, i), c)]
                    acc = None
                    for key, X in XF.items():
                        term = X * (KF[(key, c)] - own)
                        acc = term if acc is None else acc + term
                    dimg = sfft.irfft2(acc, s=P, workers=-1)
                    z = (td.w[c] * e[0].gain * dimg[ry, rx]).astype(np.float32)
                    zimg = np.zeros(P, np.float32)
                    zimg[ry, rx] = z
                    cimg = sfft.irfft2(np.conj(sfft.rfft2(zimg, workers=-1)) * UF, s=P, workers=-1)
                    corr[c] += cimg[np.ix_(lag % P[0], lag % P[1])].ravel()
                    corr_n[c] += td.nuis[c].T.astype(np.float64) @ z
            for c in range(4):
                e = t["solutions"][c]
                if e is None:
                    continue
                sol, ne, tot, lam = e
                # r - [U^T W d; N^T W d], then the tile's own solve
                ne2 = dataclasses.replace(ne, r=ne.r - np.concatenate([corr[c], corr_n[c]]))
                prev_entry = (t.get("solutions_joint") or [None] * 4)[c] or e
                prev_sol = prev_entry[0]
                sol2 = solve_kernel(ne2, lam, t["D"], warm=prev_sol)
                cself = float(ne.hat_sum[j * gx + i] / max(ne.wsum, 1e-30))
                omega = min(1.0 / max(cself, 0.3), 2.5)
                prev = cur[((j, i), c)]
                step = prev + omega * (embed_kernel(sol2.kernel, K) - prev)
                new[((j, i), c)] = project_simplex(step)
                t["solutions_joint"] = t.get("solutions_joint", [None] * 4)
                t["solutions_joint"][c] = (sol2, ne2, tot, lam)
        _fill_missing(new, gx, gy, keep=lambda key: main[key[0]]["solutions"][key[1]] is not None)
        cur = new
    for key, t in main.items():
        t["kernels"] = [cur[(key, c)] for c in range(4)]


def _fill_missing(cur: dict, gx: int, gy: int, keep=None) -> None:
    """Kernels for nodes without data: harmonic extension over the grid from nodes with data."""
    for c in range(4):
        known = {k[0]: v for k, v in cur.items() if k[1] == c and v is not None and (keep is None or keep(k))}
        if len(known) == gx * gy or not known:
            continue
        nodes = [(j, i) for j in range(gy) for i in range(gx)]
        idx = {n: a for a, n in enumerate(nodes)}
        Lm = np.zeros((len(nodes), len(nodes)))
        rhs = np.zeros((len(nodes),) + next(iter(known.values())).shape)
        for n in nodes:
            a = idx[n]
            if n in known:
                Lm[a, a] = 1
                rhs[a] = known[n]
                continue
            j, i = n
            nb = [(j + dj, i + di) for dj, di in ((0, 1), (0, -1), (1, 0), (-1, 0)) if 0 <= j + dj < gy and 0 <= i + di < gx]
            Lm[a, a] = len(nb)
            for m in nb:
                Lm[a, idx[m]] = -1
        sol = np.linalg.solve(Lm, rhs.reshape(len(nodes), -1)).reshape(rhs.shape)
        for n in nodes:
            if n not in known:
                cur[(n, c)] = project_simplex(sol[idx[n]])


def _field_model(main: dict, gx: int, gy: int, K: int):
    """The node kernels (after :func:`_joint_field`) and per-tile fit QA (the kernels' own QA,
    MTF50 and centroid, is added by :func:`_kernel_qa` once they are final)."""
    psf = np.zeros((gy, gx, 4, K, K))
    qa = []
    for (j, i), t in main.items():
        sols = t.get("solutions_joint") or t["solutions"]
        for c, name in enumerate(PLANES):
            psf[j, i, c] = t["kernels"][c]
            row = {"row": j, "col": i, "plane": name, "support": t["s"]}
            entry = sols[c]
            if entry is None:
                row.update(samples=0, reduced_chi2=None, explained_variance=None, gain=None, extrapolated=True)
            else:
                sol, ne, tot, lam = entry
                row.update(samples=int(sol.n), reduced_chi2=float(sol.reduced_chi2),
                           explained_variance=float(1 - sol.chi2 / max(tot, 1e-30)), gain=float(sol.gain),
                           extrapolated=False, regularization=float(lam))
            qa.append(row)
    return psf, qa


def _kernel_qa(psf: np.ndarray, qa: list[dict]) -> None:
    """Add MTF50 (radial, x, y) and centroid of each kernel as written to its QA row."""
    for row in qa:
        k = psf[row["row"], row["col"], PLANES.index(row["plane"])]
        m = mtf50(k)
        row.update(mtf50=m["radial"], mtf50_x=m["x"], mtf50_y=m["y"], centroid_px=list(kernel_centroid(k)))


def _second_difference_penalty(gx: int, gy: int) -> np.ndarray:
    """Thin-plate penalty on a grid: squared second differences along x, y and mixed."""
    rows = []
    G = gx * gy
    for j in range(gy):
        for i in range(1, gx - 1):
            v = np.zeros(G)
            v[j * gx + i - 1], v[j * gx + i], v[j * gx + i + 1] = 1, -2, 1
            rows.append(v)
    for i in range(gx):
        for j in range(1, gy - 1):
            v = np.zeros(G)
            v[(j - 1) * gx + i], v[j * gx + i], v[(j + 1) * gx + i] = 1, -2, 1
            rows.append(v)
    for j in range(gy - 1):
        for i in range(gx - 1):
            v = np.zeros(G)
            v[j * gx + i], v[j * gx + i + 1], v[(j + 1) * gx + i], v[(j + 1) * gx + i + 1] = 1, -1, -1, 1
            rows.append(np.sqrt(2) * v)
    L = np.asarray(rows) if rows else np.zeros((0, G))
    return L.T @ L


def _smooth_field(psf: np.ndarray, main: dict, gx: int, gy: int, *, pool_green: bool, enabled: bool) -> dict:
    """Smooth field model across the grid (in place on ``psf``); returns what was done.

    1. Gr/Gb pooling: shrink both toward their mean by ``rho = 1 - noise / observed`` of their
       difference (empirical Bayes; the noise comes from the spatial smoothing residuals).
    2. Per plane, a thin-plate smoother over the grid, ``(W + mu P)^-1 W`` applied to every
       kernel coefficient (``W``: the tiles' data weights, 0 for tiles without data), with
       ``mu`` minimising generalised cross-validation.
    3. Projection of every kernel onto the simplex.
    """
    G = gx * gy
    gyx = psf.shape[:2]
    kk = psf.shape[-1]
    flat = psf.reshape(G, 4, kk * kk).copy()
    wts = np.zeros((4, G))
    for (j, i), t in main.items():
        for c in range(4):
            e = (t.get("solutions_joint") or t["solutions"])[c]
            if e is not None:
                wts[c, j * gx + i] = e[1].wsum
    wts /= np.maximum(wts.max(axis=1, keepdims=True), 1e-30)
    P = _second_difference_penalty(gx, gy)
    report: dict = {"smoothing": {}, "green_pooling": None}

    def smoother(c, mu):
        W = np.diag(wts[c])
        return np.linalg.solve(W + mu * P + 1e-9 * np.eye(G), W)

    def gcv(c, X):
        have = wts[c] > 0
        best = (np.inf, 0.0, None)
        if not enabled or P.size == 0 or have.sum() < 4:
            return 0.0, np.eye(G), None
        for mu in np.concatenate([[0.0], np.logspace(-4, 3, 36)]):
            S = smoother(c, mu)
            fit = S @ X
            res = ((X - fit) ** 2).sum(1)[have] @ wts[c][have]
            tr = np.trace(S[np.ix_(have, have)])
            n = have.sum()
            if tr >= n - 0.5:
                continue
            score = res / (1 - tr / n) ** 2
            if score < best[0]:
                best = (score, mu, S)
        mu, S = best[1], best[2]
        have_res = ((X - S @ X) ** 2).sum(1)[have]
        dof = max(have.sum() - np.trace(S[np.ix_(have, have)]), 1.0)
        noise = float((have_res @ wts[c][have]) / dof / max(wts[c][have].mean(), 1e-30))
        return mu, S, noise

    # 1. Gr/Gb pooling, using the noise level the smoothing residuals imply.
    noise = {}
    for c in range(4):
        _, _, noise[c] = gcv(c, flat[:, c])
    if pool_green and noise.get(1) is not None and noise.get(2) is not None:
        both = (wts[1] > 0) & (wts[2] > 0)
        if both.any():
            d = flat[both, 1] - flat[both, 2]
            observed = float((d**2).sum(1).mean())
            expected = noise[1] + noise[2]
            rho = float(np.clip(1 - expected / max(observed, 1e-30), 0.0, 1.0))
            m = 0.5 * (flat[:, 1] + flat[:, 2])
            flat[:, 1] = m + rho * (flat[:, 1] - m)
            flat[:, 2] = m + rho * (flat[:, 2] - m)
            report["green_pooling"] = {"rho": rho, "observed": observed, "expected_from_noise": expected}
    # 2. Spatial smoothing per plane.
    for c, name in enumerate(PLANES):
        mu, S, _ = gcv(c, flat[:, c])
        have = wts[c] > 0
        if S is not None:
            out = S @ flat[:, c]
            # Nodes without data keep their extrapolated kernels unless the smoother reaches them.
            flat[:, c] = np.where(have[:, None] | (mu > 0), out, flat[:, c])
        report["smoothing"][name] = float(mu)
    # 3. Back onto the simplex.
    psf[...] = project_simplex(flat.reshape(gyx + (4, kk, kk)))
    return report


def attach_to_profile(profile_path: str | os.PathLike, field_path: str | os.PathLike) -> dict:
    """Point a profile file's ``psf.file`` at a PSF field (relative path when possible).

    Parameters
    ----------
    profile_path : path to a profile ``.json`` (bundled profiles are read-only: copy one first)
    field_path : path to the field ``.npz``

    Returns
    -------
    dict
        The profile's new ``psf`` block.

    Raises
    ------
    BadProfileError
        The profile file is missing or invalid.
    """
    from dpcal.profile import load_profile

    pp = Path(profile_path)
    if pp.suffix != ".json" or not pp.is_file():
        from dpcal.errors import BadProfileError

        raise BadProfileError(f"{pp}: --attach needs a profile .json file (copy a bundled one with "
                              "`dpcal profile show ID --json > my.json` first)")
    prof = load_profile(pp)
    fp = Path(field_path).resolve()
    try:
        rel = os.path.relpath(fp, pp.resolve().parent)
    except ValueError:  # another drive
        rel = str(fp)
    doc = dict(prof.doc)
    doc["psf"] = {"file": rel}
    from dpcal.profile import Profile

    Profile(doc, pp).save(pp)
    return doc["psf"]


def compare_fields(est: PSFField, truth: PSFField) -> np.ndarray:
    """Relative L2 error ``[gy, gx, planes]`` of ``est`` against ``truth`` at ``est``'s nodes.

    ``truth`` is evaluated where ``est`` has its nodes (:meth:`PSFField.kernel_at`: the bilinear
    blend the simulator applies there), so fields on different grids compare fairly.
    """
    from dpcal.psf.estimate import relative_l2

    gy, gx = est.psf.shape[:2]
    out = np.zeros((gy, gx, len(est.planes)))
    for j in range(gy):
        for i in range(gx):
            x, y = est.node_xy[j, i]
            for c, p in enumerate(est.planes):
                out[j, i, c] = relative_l2(est.psf[j, i, c], truth.kernel_at(x, y, p))
    return out
