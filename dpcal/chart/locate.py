"""Find a dpcal chart in a RAW capture and register it to the sensor.

Pipeline (for the mosaic in normalised units):

1. a demosaic-free luminance: the four CFA planes, each divided by its gain relative to Gr
   (the chart is neutral), averaged per 2x2 block (a symmetric filter: corners do not move);
2. a coarse view (noise averages to grey) in which the chart's black frame is the largest
   dark quadrilateral; its four corners and the chart's key block (tried in the 4
   orientations, scored by correlation with the expected chart) give a first homography;
3. the ring's X-corners predicted by the model, refined with OpenCV's sub-pixel corner
   refinement (gradient orthogonality), checked for the expected black/white polarity, and
   the camera model (homography + radial distortion, :mod:`dpcal.chart.geometry`) refitted;
   three rounds with growing model order and shrinking search windows;
4. the registration RMS: the RMS distance of the refined corners from the fitted model.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from dpcal.cfa import PLANES, split_planes
from dpcal.chart.geometry import LensMapping, MappingFit, dlt_homography, fit_lens_mapping
from dpcal.chart.spec import ChartSpec, chart_raster
from dpcal.errors import BadInputError, FitError

log = logging.getLogger("dpcal")

MIN_SCORE = 0.4  # correlation of the coarse view with the expected chart


@dataclasses.dataclass
class ChartLocation:
    """Where a chart is in a capture.

    Attributes
    ----------
    mapping : LensMapping
        Chart pixels -> sensor pixels (full-sensor, pixel centres on integers).
    fit : MappingFit
        The corner fit (residuals, inliers, ``rms_px``, ``model_rms_px``).
    corners_chart, corners_image : ndarray (n, 2)
        The X-corners used: chart positions and refined sensor positions.
    score : float
        Correlation of the coarse capture with the chart predicted by the coarse model.
    plane_gains : dict
        Gain of each plane relative to Gr (the chart is neutral), from the capture.
    """

    mapping: LensMapping
    fit: MappingFit
    corners_chart: np.ndarray
    corners_image: np.ndarray
    score: float
    plane_gains: dict

    @property
    def rms_px(self) -> float:
        return self.fit.rms_px

    def summary(self) -> dict:
        m = self.mapping
        return {
            "registration_rms_px": self.fit.rms_px,
            "registration_model_rms_px": self.fit.model_rms_px,
            "corners_used": int(self.fit.inliers.sum()),
            "corners_total": int(len(self.corners_chart)),
            "distortion": {"k1": m.k1, "k2": m.k2, "p1": m.p1, "p2": m.p2},
            "homography": m.H.tolist(),
            "coarse_score": self.score,
            "plane_gains": self.plane_gains,
        }


# ----------------------------------------------------------------------------------------------


def plane_gains(mosaic: np.ndarray, pattern: str) -> dict:
    """Sensitivity of each CFA plane relative to Gr on the bright half of the image."""
    pl = split_planes(mosaic, pattern).astype(np.float32)
    gr = pl[1]
    bright = gr > np.percentile(gr, 60)
    if bright.sum() < 16 or np.median(gr[bright]) <= 0:
        raise BadInputError("the capture is dark everywhere; no chart can be seen (check exposure)")
    out = {}
    for i, p in enumerate(PLANES):
        out[p] = float(np.median(pl[i][bright]) / np.median(gr[bright]))
    return out


def luma(mosaic: np.ndarray, pattern: str, gains: dict | None = None) -> np.ndarray:
    """Half-resolution luminance: plane-equalised 2x2 block means.

    Pixel ``(i, j)`` of the result sits at full-sensor position ``(2j + 0.5, 2i + 0.5)``.
    """
    gains = gains or plane_gains(mosaic, pattern)
    pl = split_planes(mosaic, pattern).astype(np.float32)
    g = np.array([gains[p] for p in PLANES], np.float32)
    return (pl / g[:, None, None]).mean(0)


def _to_full(xl: np.ndarray) -> np.ndarray:
    return 2 * np.asarray(xl, float) + 0.5


def _to_luma(x: np.ndarray) -> np.ndarray:
    return (np.asarray(x, float) - 0.5) / 2


# ----------------------------------------------------------------------------------------------
# coarse detection


def _coarse_candidates(lo: np.ndarray, min_area_frac: float = 0.03) -> tuple[list[np.ndarray], bool]:
    """Dark quadrilaterals in the coarse image, largest first (each (4, 2) in lo pixels).

    Also tells whether a large dark outline was cut by the image border (a chart partly out of
    frame, usually).
    """
    import cv2

    v = lo.astype(np.float32)
    lo8 = np.clip(255 * (v - np.percentile(v, 1)) / max(np.percentile(v, 99) - np.percentile(v, 1), 1e-6), 0, 255)
    lo8 = lo8.astype(np.uint8)
    t, _ = cv2.threshold(lo8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    quads = []
    cut = False
    for thr in (t, 0.75 * t, 0.5 * t):
        dark = (lo8 < thr).astype(np.uint8)
        contours, _ = cv2.findContours(dark, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        area_min = min_area_frac * lo.shape[0] * lo.shape[1]
        hh, ww = lo.shape
        for c in contours:
            a = cv2.contourArea(c)
            if a < area_min:
                continue
            xy = c.reshape(-1, 2)
            if xy[:, 0].min() <= 0 or xy[:, 1].min() <= 0 or xy[:, 0].max() >= ww - 1 or xy[:, 1].max() >= hh - 1:
                # touches the image border: not a whole chart frame (but perhaps a cut one)
                x0, y0, bw, bh = cv2.boundingRect(c)
                cut |= bw * bh < 0.98 * ww * hh
                continue
            peri = cv2.arcLength(c, True)
            for eps in (0.01, 0.02, 0.04):
                ap = cv2.approxPolyDP(c, eps * peri, True)
                if len(ap) == 4 and cv2.isContourConvex(ap):
                    quads.append((a, ap.reshape(4, 2).astype(float)))
                    break
        if quads:
            break
    quads.sort(key=lambda t: -t[0])
    out = []
    for _, q in quads:
        # Order clockwise (in image coordinates, y down) starting nearest the top-left.
        ctr = q.mean(0)
        ang = np.arctan2(q[:, 1] - ctr[1], q[:, 0] - ctr[0])
        q = q[np.argsort(ang)]
        start = np.argmin(q.sum(1))
        out.append(np.roll(q, -start, axis=0))
    return out[:6], cut


def _coarse_score(lo: np.ndarray, chart_lo: np.ndarray, H_lo: np.ndarray, smooth: float = 0.0,
                  cache: dict | None = None) -> float:
    """Normalised correlation of the capture with the chart warped by ``H_lo`` (chart_lo px -> lo px).

    Both are smoothed by a Gaussian of ``smooth`` px (residual noise, misalignment from lens
    distortion) and high-passed at ten times that scale (vignetting, uneven light); only the
    chart's structured parts count (``chart_lo`` is NaN in its featureless noise field).
    """
    import cv2

    h, w = lo.shape
    src = np.where(np.isfinite(chart_lo), chart_lo, 0.5).astype(np.float32)
    pred = cv2.warpPerspective(src, H_lo, (w, h), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=-1)
    feat = cv2.warpPerspective(np.isfinite(chart_lo).astype(np.float32), H_lo, (w, h), flags=cv2.INTER_NEAREST,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    inside = pred >= 0
    sm = round(max(smooth, 0.7), 1)
    big = 10 * sm
    pr = np.where(inside, pred, 0).astype(np.float32)
    cache = {} if cache is None else cache
    if sm not in cache:  # the capture's band-pass depends on the scale only
        img = lo.astype(np.float32)
        cache[sm] = cv2.GaussianBlur(img, (0, 0), sm) - cv2.GaussianBlur(img, (0, 0), big)
    img = cache[sm]
    pr = cv2.GaussianBlur(pr, (0, 0), sm) - cv2.GaussianBlur(pr, (0, 0), big)
    mask = cv2.erode(inside.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=int(np.ceil(2 * sm))) > 0
    mask &= feat > 0
    if mask.sum() < 100:
        return -1.0
    a = pr[mask] - pr[mask].mean()
    b = img[mask] - img[mask].mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else -1.0


def coarse_locate(lum: np.ndarray, spec: ChartSpec, frame: int | None = None) -> tuple[np.ndarray, float]:
    """Homography chart px -> luma px from the chart's frame; returns ``(H, score)``.

    Raises
    ------
    BadInputError
        No chart-like quadrilateral, or none that looks like this chart.
    """
    import cv2

    f = max(1, int(round(max(lum.shape) / 800)))
    lo = cv2.resize(lum, (lum.shape[1] // f, lum.shape[0] // f), interpolation=cv2.INTER_AREA)
    # The chart as the coarse view sees it: noise averages to its mean.
    raster = chart_raster(spec, frame)
    cf = max(1, int(round(max(raster.shape) / 600)))
    chart_lo = cv2.resize(raster, (raster.shape[1] // cf, raster.shape[0] // cf), interpolation=cv2.INTER_AREA)
    if spec.kind == "psf" and spec.noise:
        # The noise field carries no coarse structure: leave it out of the comparison.
        x0, y0, x1, y1 = (int(v) for v in spec.noise["rect"])
        chart_lo[y0 // cf : -(-y1 // cf), x0 // cf : -(-x1 // cf)] = np.nan
    fx0, fy0, fx1, fy1 = spec.layout["frame_rect"]
    frame_pts = np.array([[fx0, fy0], [fx1, fy0], [fx1, fy1], [fx0, fy1]], float)
    # lo pixel centre i <-> luma coordinate f*i + (f-1)/2; chart_lo pixel centre j <-> chart cf*(j+0.5).
    S_lo = np.array([[1 / f, 0, -(f - 1) / (2 * f)], [0, 1 / f, -(f - 1) / (2 * f)], [0, 0, 1]])
    S_chart = np.array([[cf, 0, cf / 2], [0, cf, cf / 2], [0, 0, 1]])
    best = (-2.0, None)
    cands, cut = _coarse_candidates(lo)
    if not cands:
        if cut:
            raise BadInputError("no whole chart in the capture: the chart's outline runs into the image border, "
                                "so it is partly out of frame; frame the whole chart with some margin")
        raise BadInputError("no chart found in the capture (no dark frame outline); check that the whole "
                            "chart is in view, in focus and exposed, and that `chart` is the chart shown")
    # The key block (dark, top-left of the gap) and its mirror images (white) decide between
    # orientations that the ring alone cannot tell apart.
    kx0, ky0, kx1, ky1 = spec.layout["key_rect"]
    kc = np.array([(kx0 + kx1) / 2, (ky0 + ky1) / 2])
    ctr = np.array([(fx0 + fx1) / 2, (fy0 + fy1) / 2])
    mirrors = np.array([kc, [2 * ctr[0] - kc[0], kc[1]], [kc[0], 2 * ctr[1] - kc[1]], 2 * ctr - kc])
    key_r = max(0.5, 0.25 * (kx1 - kx0))
    hp_cache: dict = {}
    for q in cands:
        q_luma = q * f + (f - 1) / 2  # lo px -> luma px
        for rot in range(4):
            img_pts = np.roll(q_luma, -rot, axis=0)
            H = dlt_homography(frame_pts, img_pts)
            H_lo = S_lo @ H @ S_chart
            # smooth over about a third of a checker square, as imaged
            sq = spec.square * np.sqrt(abs(np.linalg.det(H_lo[:2, :2]))) / cf
            s = _coarse_score(lo, chart_lo, H_lo, smooth=max(1.0, sq / 3), cache=hp_cache)
            key = _key_contrast(lum, H, mirrors, key_r)
            s_total = s + 0.5 * key
            if s_total > best[0]:
                best = (s_total, H, s)
    _, H, score = best if best[1] is not None else (None, None, -1.0)
    if H is None or score < MIN_SCORE:
        raise BadInputError(
            f"no chart matching {spec.path.name if spec.path else 'the chart spec'} found in the capture "
            f"(best match {score:.2f} < {MIN_SCORE}); check that the whole chart is in view and that `chart` "
            "is the chart that was photographed"
        )
    return H, score


def _key_contrast(lum: np.ndarray, H: np.ndarray, pts_chart: np.ndarray, r_chart: float) -> float:
    """How much darker the key block is than its three mirror positions (0..1 scale), or -1."""
    h, w = lum.shape
    P = np.c_[pts_chart, np.ones(len(pts_chart))] @ H.T
    xy = P[:, :2] / P[:, 2:3]
    scale = np.sqrt(abs(np.linalg.det(H[:2, :2]))) / max(abs(H[2, 2]), 1e-12)
    r = max(1, int(round(r_chart * scale)))
    vals = []
    for x, y in xy:
        xi, yi = int(round(x)), int(round(y))
        if not (r <= xi < w - r and r <= yi < h - r):
            return -1.0
        vals.append(float(np.median(lum[yi - r : yi + r + 1, xi - r : xi + r + 1])))
    others = np.mean(vals[1:])
    spread = max(others, 1e-6)
    return float((others - vals[0]) / spread)


# ----------------------------------------------------------------------------------------------
# corners


def _check_polarity(lum: np.ndarray, pts: np.ndarray, pol: np.ndarray, d: float) -> np.ndarray:
    """True where the quadrants around each point have the expected black/white layout."""
    h, w = lum.shape
    ok = np.zeros(len(pts), bool)
    for k, ((x, y), p) in enumerate(zip(pts, pol)):
        vals = []
        for sx, sy in ((1, 1), (-1, -1), (1, -1), (-1, 1)):
            xi, yi = int(round(x + sx * d)), int(round(y + sy * d))
            if not (0 <= xi < w and 0 <= yi < h):
                vals = None
                break
            r = max(1, int(d / 3))
            vals.append(float(lum[max(0, yi - r) : yi + r + 1, max(0, xi - r) : xi + r + 1].mean()))
        if vals is None:
            continue
        diag, anti = 0.5 * (vals[0] + vals[1]), 0.5 * (vals[2] + vals[3])
        contrast = (diag - anti) if p == 1 else (anti - diag)
        spread = max(abs(vals[0] - vals[1]), abs(vals[2] - vals[3]))
        ok[k] = contrast > 0.2 * max(diag, anti) and spread < contrast
    return ok


def refine_corners(lum: np.ndarray, guess_luma: np.ndarray, win: int) -> np.ndarray:
    """OpenCV sub-pixel X-corner refinement around guesses (luma px)."""
    import cv2

    img = lum.astype(np.float32)
    pts = guess_luma.astype(np.float32).reshape(-1, 1, 2).copy()
    crit = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 100, 1e-4)
    cv2.cornerSubPix(img, pts, (win, win), (-1, -1), crit)
    return pts.reshape(-1, 2).astype(float)


def refine_corners_model(
    lum: np.ndarray,
    guess: np.ndarray,
    normals: np.ndarray,
    radius: float,
    blur: float = 1.5,
    iterations: int = 12,
) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares X-corner positions: fit a blurred corner model to each neighbourhood.

    The model of the luminance near corner ``c`` with edge normals ``n1, n2`` is
    ``a + b erf(n1.(x-c) / (sqrt(2) s)) erf(n2.(x-c) / (sqrt(2) s))`` (a Gaussian-blurred
    X-corner), fitted by Gauss-Newton in ``c, a, b, log s`` over a disc of ``radius``. Both the
    model and a point-symmetric blur of the real corner are symmetric about ``c``, so model
    error does not bias the position; all pixels of the disc contribute, which makes it more
    precise than gradient-orthogonality refinement.

    Parameters
    ----------
    lum : ndarray (h, w)
        Luminance image.
    guess : ndarray (n, 2)
        Starting positions (x, y) in ``lum`` pixels.
    normals : ndarray (n, 2, 2)
        Unit normals of the two edges through each corner.
    radius : float
        Fit window radius (pixels); keep it below the imaged square size minus the blur.
    blur : float
        Starting Gaussian blur (pixels).

    Returns
    -------
    positions : ndarray (n, 2)
    ok : ndarray of bool (n,)
        Converged, with a contrast well above the noise, and moved less than ``radius / 2``.
    blur : ndarray (n,)
        Fitted blur (Gaussian sigma, pixels).
    """
    c = np.asarray(guess, float).copy()
    ok = np.ones(len(c), bool)
    # Two passes: the second re-centres the window on the first estimate (an off-centre window
    # would make the model error asymmetric about the corner).
    for _ in range(2):
        c, ok, blur = _fit_corner_model(lum, c, guess, normals, radius, blur, iterations)
    return c, ok, blur


def _fit_corner_model(lum, start, guess, normals, radius, blur, iterations):
    from scipy.special import erf

    n = len(start)
    r = int(np.ceil(radius))
    oy, ox = np.mgrid[-r : r + 1, -r : r + 1]
    base = np.round(start).astype(int)
    h, w = lum.shape
    inside = (base[:, 0] - r >= 0) & (base[:, 0] + r < w) & (base[:, 1] - r >= 0) & (base[:, 1] + r < h)
    bx = np.clip(base[:, 0], r, w - r - 1)
    by = np.clip(base[:, 1], r, h - r - 1)
    X = (bx[:, None, None] + ox[None]).reshape(n, -1).astype(float)
    Y = (by[:, None, None] + oy[None]).reshape(n, -1).astype(float)
    I = lum[Y.astype(int), X.astype(int)].astype(float)
    # Disc around the current estimate (not the integer base): a symmetric window.
    Wt = (((X - start[:, 0:1]) ** 2 + (Y - start[:, 1:2]) ** 2) <= radius**2).astype(float)
    npix = Wt.sum(1)
    c = start.astype(float).copy()
    logs = np.log(np.clip(np.broadcast_to(np.asarray(blur, float), (n,)), 0.3, radius)).copy()
    n1, n2 = normals[:, 0], normals[:, 1]
    k = np.sqrt(2.0)
    b = np.zeros(n)
    res = np.zeros_like(I)
    for it in range(iterations):
        s = np.exp(logs)[:, None]
        dx = X - c[:, 0:1]
        dy = Y - c[:, 1:2]
        t1 = n1[:, 0:1] * dx + n1[:, 1:2] * dy
        t2 = n2[:, 0:1] * dx + n2[:, 1:2] * dy
        e1, e2 = erf(t1 / (k * s)), erf(t2 / (k * s))
        E = e1 * e2
        # Linear parameters for the current shape (weighted least squares).
        Em = (Wt * E).sum(1, keepdims=True) / npix[:, None]
        Im = (Wt * I).sum(1, keepdims=True) / npix[:, None]
        var = (Wt * (E - Em) ** 2).sum(1)
        b = (Wt * (E - Em) * (I - Im)).sum(1) / np.maximum(var, 1e-12)
        a = (Im - b[:, None] * Em)[:, 0]
        g1 = np.sqrt(2 / np.pi) / s * np.exp(-0.5 * (t1 / s) ** 2)  # d erf(t/(sqrt2 s)) / dt
        g2 = np.sqrt(2 / np.pi) / s * np.exp(-0.5 * (t2 / s) ** 2)
        bb = b[:, None]
        # d model / d c = -b (g1 e2 n1 + e1 g2 n2); d model / d log s = -b (g1 t1 e2 + e1 g2 t2)
        jx = -bb * (g1 * e2 * n1[:, 0:1] + e1 * g2 * n2[:, 0:1])
        jy = -bb * (g1 * e2 * n1[:, 1:2] + e1 * g2 * n2[:, 1:2])
        js = -bb * (g1 * t1 * e2 + e1 * g2 * t2)
        res = I - (a[:, None] + bb * E)
        J = np.stack([jx, jy, js, np.ones_like(jx), E], -1)  # a and b join the step
        JTJ = np.einsum("nki,nk,nkj->nij", J, Wt, J)
        JTr = np.einsum("nki,nk,nk->ni", J, Wt, res)
        JTJ += 1e-9 * np.eye(5)[None] * np.maximum(np.trace(JTJ, axis1=1, axis2=2), 1e-12)[:, None, None]
        step = np.linalg.solve(JTJ, JTr[..., None])[..., 0]
        step[:, :2] = np.clip(step[:, :2], -1.0, 1.0)
        step[:, 2] = np.clip(step[:, 2], -0.5, 0.5)
        c += step[:, :2]
        logs = np.clip(logs + step[:, 2], np.log(0.2), np.log(radius))
        if np.max(np.abs(step[:, :2])) < 1e-5:
            break
    res_std = np.sqrt((Wt * res**2).sum(1) / npix)
    ok = inside & (np.abs(b) > 10 * res_std / np.sqrt(npix)) & \
        (np.linalg.norm(c - guess, axis=1) < radius / 2) & np.all(np.isfinite(c), 1)
    return c, ok, np.exp(logs)


def _edge_normals(mapping: LensMapping, P: np.ndarray) -> np.ndarray:
    """Unit normals of the images of the chart's X and Y lines through chart points P."""
    e = 0.5
    vx = mapping.forward(P + [e, 0]) - mapping.forward(P - [e, 0])
    vy = mapping.forward(P + [0, e]) - mapping.forward(P - [0, e])
    n1 = np.stack([-vx[:, 1], vx[:, 0]], -1)
    n2 = np.stack([-vy[:, 1], vy[:, 0]], -1)
    n1 /= np.linalg.norm(n1, axis=1, keepdims=True)
    n2 /= np.linalg.norm(n2, axis=1, keepdims=True)
    return np.stack([n1, n2], 1)


def locate_chart(
    mosaic: np.ndarray,
    pattern: str,
    spec: ChartSpec,
    *,
    frame: int | None = None,
    distortion: tuple[str, ...] = ("k1", "k2"),
    kernel_radius: float = 0.0,
) -> ChartLocation:
    """Find ``spec``'s chart in a normalised mosaic and fit the camera model to its corners.

    Parameters
    ----------
    mosaic : ndarray (H, W)
        Normalised Bayer mosaic (``RawImage.normalized()``).
    pattern : str
        CFA pattern of the mosaic.
    spec : ChartSpec
    frame : int, optional
        Which frame of the spec the capture shows (default: its first chart/noise frame; the
        display geometry frame has corners over the whole interior).
    distortion : tuple of str
        Lens distortion terms to fit (``k1``, ``k2``, ``p1``, ``p2``).
    kernel_radius : float
        Blur radius (px) to expect; widens the corner refinement window.

    Returns
    -------
    ChartLocation

    Raises
    ------
    BadInputError
        No chart in view, the chart partly out of frame, or a chart that does not match ``spec``.
    FitError
        Too few usable corners (e.g. strong defocus).
    """
    h, w = mosaic.shape
    gains = plane_gains(mosaic, pattern)
    lum = luma(mosaic, pattern, gains)
    H_l, score = coarse_locate(lum, spec, frame)
    S_full = np.array([[2, 0, 0.5], [0, 2, 0.5], [0, 0, 1]])  # luma -> full
    mapping = LensMapping(S_full @ H_l, (w, h))
    role = spec.frames[frame]["role"] if frame is not None and spec.frames else None
    if role == "geometry" and spec.layout.get("geometry_corners"):
        P = np.asarray(spec.layout["geometry_corners"], float)
        q = spec.square
        rx0, ry0 = spec.layout["ring_rect"][:2]
        ii = np.round((P[:, 0] - rx0) / q).astype(int)
        jj = np.round((P[:, 1] - ry0) / q).astype(int)
        pol = (ii + jj) % 2
    else:
        P, pol = spec.corners, spec.corner_polarity
    _check_in_frame(mapping, spec, (w, h))
    q_luma = float(np.median(mapping.scale_at(P))) * spec.square / 2  # square size in luma px
    if q_luma < 6:
        raise BadInputError(f"the chart's checker squares image to {2 * q_luma:.1f} px; they must span at least "
                            "12 px: move closer or make the chart with a larger `square`")
    fit: MappingFit | None = None
    stages = [((), 0.45), (("k1",), 0.4), (tuple(distortion), 0.35)]
    measured = None
    keep = None
    for dist, frac in stages:
        guess = _to_luma(mapping.forward(P))
        win = int(max(3, min(frac * q_luma, 0.5 * q_luma - 1)))
        inside = ((guess[:, 0] > win + 2) & (guess[:, 0] < lum.shape[1] - win - 3)
                  & (guess[:, 1] > win + 2) & (guess[:, 1] < lum.shape[0] - win - 3))
        ref = refine_corners(lum, guess, win)
        moved = np.linalg.norm(ref - guess, axis=1)
        good = inside & (moved < 0.6 * q_luma) & _check_polarity(lum, ref, pol, 0.25 * q_luma)
        if good.sum() < 8:
            raise FitError(
                f"only {int(good.sum())} of {len(P)} chart corners could be measured; the capture is too "
                "blurred, too noisy or not the chart in `chart`"
            )
        measured = _to_full(ref)
        fit = fit_lens_mapping(P[good], measured[good], (w, h), distortion=dist, init=mapping)
        mapping = fit.mapping
        keep = good
    # Final: least-squares corner model from the best camera model, then the full model fit.
    guess = _to_luma(mapping.forward(P))
    normals = _edge_normals(mapping, P)
    radius = max(3.0, min(0.45 * q_luma, q_luma - 1.5 * max(1.0, kernel_radius / 2)))
    ref, ok, blur = refine_corners_model(lum, guess, normals, radius, blur=max(0.7, kernel_radius / 4))
    # The model holds up to the neighbouring squares' blurred edges: with the measured blur,
    # a larger window (more edge pixels, less noise) is safe.
    s_blur = float(np.median(blur[ok])) if ok.any() else np.inf
    wide = min(0.8 * q_luma, q_luma - 3.0 * s_blur - 1.0)
    if wide > radius + 0.5:
        ref2, ok2, _ = refine_corners_model(lum, np.where(ok[:, None], ref, guess), normals, wide, blur=s_blur)
        ref = np.where((ok & ok2)[:, None], ref2, ref)
    good = keep & ok & (np.linalg.norm(ref - guess, axis=1) < 0.25 * q_luma)
    if good.sum() < 8:
        raise FitError(f"only {int(good.sum())} of {len(P)} chart corners could be measured precisely; the "
                       "capture is too blurred or too noisy")
    measured = _to_full(ref)
    fit = fit_lens_mapping(P[good], measured[good], (w, h), distortion=tuple(distortion), init=mapping)
    inl = np.zeros(len(P), bool)
    inl[np.nonzero(good)[0][fit.inliers]] = True
    _check_in_frame(fit.mapping, spec, (w, h))
    if fit.inliers.sum() < 0.5 * len(P):
        raise FitError(f"only {int(fit.inliers.sum())} of {len(P)} chart corners agree with one camera model; "
                       "is the chart flat, and the right chart?")
    res = np.full((len(P), 2), np.nan)
    res[good] = fit.residuals
    full_fit = MappingFit(fit.mapping, res, inl, fit.rms_px, fit.model_rms_px)
    log.info("chart located: %d/%d corners, registration RMS %.3f px (model %.3f px), k1 %.4f k2 %.4f",
             int(inl.sum()), len(P), fit.rms_px, fit.model_rms_px, fit.mapping.k1, fit.mapping.k2)
    return ChartLocation(fit.mapping, full_fit, P, measured, score, gains)


def _check_in_frame(mapping: LensMapping, spec: ChartSpec, size: tuple[int, int]) -> None:
    """The chart's frame must lie inside the image (the noise field and its markers in full)."""
    w, h = size
    fx0, fy0, fx1, fy1 = spec.layout["frame_rect"]
    t = np.linspace(0, 1, 9)
    edges = {
        "top": np.stack([fx0 + t * (fx1 - fx0), np.full_like(t, fy0)], -1),
        "right": np.stack([np.full_like(t, fx1), fy0 + t * (fy1 - fy0)], -1),
        "bottom": np.stack([fx0 + t * (fx1 - fx0), np.full_like(t, fy1)], -1),
        "left": np.stack([np.full_like(t, fx0), fy0 + t * (fy1 - fy0)], -1),
    }
    out = []
    for name, pts in edges.items():
        x = mapping.forward(pts)
        if np.any((x[:, 0] < -0.5) | (x[:, 0] > w - 0.5) | (x[:, 1] < -0.5) | (x[:, 1] > h - 0.5)):
            out.append(name)
    if out:
        raise BadInputError(f"chart partly out of frame (its {' and '.join(out)} edge{'s' if len(out) > 1 else ''} "
                            "leave the image); frame the whole chart with some margin")
