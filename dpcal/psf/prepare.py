"""Per capture of a PSF chart: registration, photometry and the sharp chart, as a
:class:`PreparedCapture` that the kernel estimation reads.

1. **Registration** (:func:`dpcal.chart.locate.locate_chart`): the chart's X-corners fit a
   homography plus radial lens distortion.
2. **Photometry** (:mod:`dpcal.psf.photometry`): black and white fields, the normalised data
   ``b = (y - black) / (white - black)`` and the noise model (measured, or from a profile).
3. **Sharp chart** ``u``: the chart averaged over each sensor pixel's footprint, at full-sensor
   sampling (:func:`dpcal.chart.render.rasterize`), so the CFA sub-sampling stays in the
   forward model; for the kernel fit band-limited to the sensor's Nyquist frequency
   (:func:`dpcal.chart.render.band_limit`, from 2 x 2 or more sub-pixels per pixel), so that
   the kernels are the PSF's samples rather than a compromise with the chart's aliases.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from dpcal.cfa import PLANES
from dpcal.chart.locate import ChartLocation, locate_chart
from dpcal.chart.render import band_limit, rasterize, summed_area
from dpcal.chart.spec import ChartSpec, chart_raster
from dpcal.errors import BadInputError, FitError
from dpcal.psf.photometry import SATURATION, photometry_display, photometry_print

log = logging.getLogger("dpcal")

__all__ = ["PreparedCapture", "coverage_box", "prepare_captures"]


@dataclasses.dataclass
class PreparedCapture:
    """One capture, ready for the kernel fit (all arrays full-sensor, ``(H, W)``)."""

    name: str
    b: np.ndarray  # normalised data in chart units (NaN: unusable)
    u: np.ndarray  # sharp chart for the kernels: pixel-area integrated, band-limited (NaN: off the chart)
    valid: np.ndarray  # rows whose whole K x K window lies on the chart and whose data is usable
    black: np.ndarray  # per-pixel black level (normalised raw units)
    scale: np.ndarray  # per-pixel white - black
    in_noise: np.ndarray  # pixel maps into the noise field
    loc: ChartLocation
    noise: dict  # per plane: alpha, sigma (normalised units) and where they came from
    pattern: str


def prepare_captures(raws, chart, pattern, R, distortion, supersample, prof,
                     band_limited: bool = True) -> list[PreparedCapture]:
    h, w = raws[0].dn.shape
    frames = _frame_roles(chart, len(raws))
    out = []
    if chart.medium == "print":
        for raw in raws:
            y = raw.normalized()
            loc = locate_chart(y, pattern, chart, frame=frames[0], distortion=distortion, kernel_radius=R)
            ss = supersample or _auto_supersample(loc)
            u, u_fit = _sharp_chart(chart_raster(chart, frames[0]), loc, ss, band_limited)
            # Flat areas: away from edges by the kernel radius, but keep something of every square.
            sq_px = chart.square * float(np.median(loc.mapping.scale_at(chart.corners)))
            black, white, nstats = photometry_print(y, u, pattern, max(2, min(R + 2, int(0.3 * sq_px))))
            out.append(_finish(raw, y, u_fit, black, white, nstats, loc, chart, R, prof))
        return out
    # display: geometry from the checkerboard frame, photometry from black/white frames
    geo, blk, wht = raws[0], raws[1], raws[2]
    loc = locate_chart(geo.normalized(), pattern, chart, frame=0, distortion=distortion, kernel_radius=R)
    ss = supersample or _auto_supersample(loc)
    sat = summed_area(np.ones((chart.height, chart.width)))
    on = rasterize(np.ones((chart.height, chart.width)), loc.mapping, supersample=1, sat=sat)
    black, white, nstats = photometry_display(blk.normalized(), wht.normalized(), on, pattern)
    for raw, fr in zip(raws[3:], frames[3:]):
        if chart.frames[fr]["role"] != "noise":
            raise BadInputError(f"{raw.path}: capture {fr + 1} should show frame {chart.frames[fr]['file']} "
                                f"({chart.frames[fr]['role']}); give the frames in the chart's order")
        _, u_fit = _sharp_chart(chart_raster(chart, fr), loc, ss, band_limited)
        out.append(_finish(raw, raw.normalized(), u_fit, black, white, nstats, loc, chart, R, prof))
    return out


def _sharp_chart(chart_img: np.ndarray, loc: ChartLocation, ss: int, band_limited: bool):
    """The chart's pixel averages (for photometry) and the sharp chart of the kernel fit."""
    if not band_limited:
        u = rasterize(chart_img, loc.mapping, supersample=ss)
        return u, u
    # Band-limiting needs at least 2 x 2 sub-pixels (aliases between 0.5 and 1.5 cycles/px removed).
    s = max(2, ss)
    sub = rasterize(chart_img, loc.mapping, supersample=s, subpixels=True)
    h, w = sub.shape[0] // s, sub.shape[1] // s
    return sub.reshape(h, s, w, s).mean(axis=(1, 3)), band_limit(sub, s)


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


def _finish(raw, y, u, black, white, nstats, loc, chart, R, prof) -> PreparedCapture:
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
    on_chart = np.isfinite(u)
    share = float(mismatch[on_chart].mean()) if on_chart.any() else 0.0
    if share > 0.01:
        log.warning("%s: %.0f %% of the chart area does not look like the chart (not printed, cut off at the page "
                    "edge, glare or an occluder); left out of the fit", raw.path, 100 * share)
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
    return PreparedCapture(str(raw.path), b, u, valid, black.astype(np.float32), scale, in_noise, loc, noise,
                           raw.pattern)


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


def _auto_supersample(loc: ChartLocation) -> int:
    """Footprint subdivision from the chart's local rotation/shear against the sensor axes."""
    m = loc.mapping
    w, h = m.image_size
    pts = np.array([[x, y] for x in np.linspace(0, w - 1, 5) for y in np.linspace(0, h - 1, 5)])
    e = 0.5
    jx = (m.inverse(pts + [e, 0]) - m.inverse(pts - [e, 0])) / (2 * e)
    jy = (m.inverse(pts + [0, e]) - m.inverse(pts - [0, e])) / (2 * e)
    ang = np.maximum(np.abs(np.arctan2(jx[:, 1], jx[:, 0])), np.abs(np.arctan2(jy[:, 0], jy[:, 1])))
    deg = float(np.degrees(np.nanmax(ang)))
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
