"""Render a chart onto the sensor: pixel-area integration, PSF field, vignetting, CFA, noise.

:func:`rasterize` gives the chart as a sensor pixel sees it: the chart's value averaged over
the pixel's footprint on the chart. It is what :func:`render_capture` uses, and, band-limited
to the pixel grid's Nyquist frequency by :func:`band_limit`, the PSF estimator's sharp image
``u`` (``docs/method.md`` section 3). The chart is piecewise constant on its
raster, so its summed-area table is exactly bilinear between raster pixel corners: the integral
over any axis-aligned chart rectangle is four bilinear look-ups. Each (sub)pixel's footprint, a
small parallelogram on the chart, is replaced by the axis-aligned rectangle with the same side
lengths; ``supersample`` splits pixels to make that replacement finer.

:func:`render_capture` then forms a RAW capture the way the camera would (paper eq. 1 with the
lens): ``y = clip(alpha Poisson(A x / alpha) + N(0, sigma^2))`` with ``A x = S_cfa(v . (h_c * x))``,
per-plane exposure, vignetting ``v`` and the PSF field ``h`` applied at full-sensor sampling
before mosaicking.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

from dpcal.cfa import PLANES, per_plane, plane_map
from dpcal.chart.geometry import LensMapping
from dpcal.errors import BadInputError
from dpcal.io.dng import write_dng
from dpcal.physics.optics import apply_psf_field
from dpcal.physics.sensor import sample_poisson_gaussian, to_dn
from dpcal.profile import load_profile

_GRID = 8  # exact mapping evaluations every _GRID sensor pixels, bilinear in between


def summed_area(img: np.ndarray) -> np.ndarray:
    """Summed-area table ``S[i, j] = img[:i, :j].sum()`` of shape ``(H+1, W+1)``, float64."""
    s = np.zeros((img.shape[0] + 1, img.shape[1] + 1), np.float64)
    np.cumsum(img, axis=0, dtype=np.float64, out=s[1:, 1:])
    np.cumsum(s[1:, 1:], axis=1, out=s[1:, 1:])
    return s


def _bilinear(S: np.ndarray, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of ``S`` at (X = column, Y = row), coordinates clipped inside."""
    h, w = S.shape
    X = np.clip(X, 0, w - 1)
    Y = np.clip(Y, 0, h - 1)
    j = np.minimum(X.astype(np.int64), w - 2)
    i = np.minimum(Y.astype(np.int64), h - 2)
    fx = X - j
    fy = Y - i
    flat = S.ravel()
    idx = i * w + j
    a = flat[idx]
    b = flat[idx + 1]
    c = flat[idx + w]
    d = flat[idx + w + 1]
    return a + fx * (b - a) + fy * (c - a) + fx * fy * (a - b - c + d)


def _mapping_grid(mapping: LensMapping, x0: int, y0: int, x1: int, y1: int):
    """Exact inverse mapping and Jacobian on a coarse grid covering [x0, x1) x [y0, y1)."""
    gx = np.arange(x0, x1 + _GRID, _GRID, dtype=float)
    gy = np.arange(y0, y1 + _GRID, _GRID, dtype=float)
    X, Y = np.meshgrid(gx, gy)
    pts = np.stack([X, Y], -1)
    P = mapping.inverse(pts)
    e = 0.5
    Jx = (mapping.inverse(pts + [e, 0]) - mapping.inverse(pts - [e, 0])) / (2 * e)
    Jy = (mapping.inverse(pts + [0, e]) - mapping.inverse(pts - [0, e])) / (2 * e)
    # fields: P (2), dP/dx (2), dP/dy (2)
    return gx, gy, np.concatenate([P, Jx, Jy], -1)


def _interp_grid(gx, gy, F, xs, ys):
    """Bilinear interpolation of a coarse-grid field F[gy, gx, c] at all (ys x xs), separably."""
    tx = (xs - gx[0]) / _GRID
    ty = (ys - gy[0]) / _GRID
    jx = np.clip(tx.astype(np.int64), 0, len(gx) - 2)
    jy = np.clip(ty.astype(np.int64), 0, len(gy) - 2)
    fx = (tx - jx)[None, :, None]
    fy = (ty - jy)[:, None, None]
    rows = np.unique(np.concatenate([jy, jy + 1]))
    Fx = np.empty((len(gy), len(xs), F.shape[2]))
    Fr = F[rows]
    Fx[rows] = Fr[:, jx] * (1 - fx) + Fr[:, jx + 1] * fx
    return Fx[jy] * (1 - fy) + Fx[jy + 1] * fy


def rasterize(
    chart: np.ndarray,
    mapping: LensMapping,
    region: tuple[int, int, int, int] | None = None,
    *,
    supersample: int = 1,
    outside: float = np.nan,
    sat: np.ndarray | None = None,
    rows_per_chunk: int = 256,
    subpixels: bool = False,
) -> np.ndarray:
    """The chart as seen by each sensor pixel: its average over the pixel's footprint.

    Parameters
    ----------
    chart : ndarray (Hc, Wc)
        Chart raster (linear values), chart pixels.
    mapping : LensMapping
        Chart -> sensor mapping.
    region : (x0, y0, x1, y1), optional
        Sensor pixels to render (default: the whole image of ``mapping.image_size``).
    supersample : int
        Split each pixel into ``s x s`` footprints (finer approximation under rotation).
    outside : float
        Value of pixels whose footprint leaves the chart raster (default NaN).
    sat : ndarray, optional
        Precomputed :func:`summed_area` of ``chart``.
    subpixels : bool
        Return each sub-footprint's average instead of the pixel's: an image ``supersample``
        times finer, ``(s (y1 - y0), s (x1 - x0))``, sub-pixel ``(i, j)`` centred at sensor
        ``(x0 + (j + 1/2) / s - 1/2, y0 + (i + 1/2) / s - 1/2)``. A pixel whose footprint
        leaves the chart gives ``outside`` in all its sub-pixels.

    Returns
    -------
    ndarray float32 (y1 - y0, x1 - x0)

    Examples
    --------
    A chart shown 1:1 with a half-pixel offset averages neighbouring chart pixels:

    >>> chart = np.array([[0, 1, 0, 1]] * 4, float)
    >>> m = LensMapping(np.array([[1, 0, -1.0], [0, 1, -0.5], [0, 0, 1]]), (4, 4))
    >>> rasterize(chart, m, (0, 1, 3, 2))
    array([[0.5, 0.5, 0.5]], dtype=float32)
    """
    if sat is None:
        sat = summed_area(np.asarray(chart, np.float64))
    hc, wc = sat.shape[0] - 1, sat.shape[1] - 1
    if region is None:
        region = (0, 0, mapping.image_size[0], mapping.image_size[1])
    x0, y0, x1, y1 = (int(v) for v in region)
    s = int(supersample)
    out = np.empty(((y1 - y0) * s, (x1 - x0) * s) if subpixels else (y1 - y0, x1 - x0), np.float32)
    gx, gy, F = _mapping_grid(mapping, x0, y0, x1, y1)
    offs = (np.arange(s) + 0.5) / s - 0.5
    xs = np.arange(x0, x1, dtype=float)
    for r0 in range(y0, y1, rows_per_chunk):
        r1 = min(y1, r0 + rows_per_chunk)
        ys = np.arange(r0, r1, dtype=float)
        G = _interp_grid(gx, gy, F, xs, ys)
        P = G[..., 0:2]
        Jx, Jy = G[..., 2:4], G[..., 4:6]
        # Side lengths of a sub-footprint along chart X and Y (area-preserving for rotations).
        ax = np.hypot(Jx[..., 0], Jy[..., 0]) / (2 * s)
        ay = np.hypot(Jx[..., 1], Jy[..., 1]) / (2 * s)
        sub = np.zeros((s, s) + P.shape[:2], np.float64)
        bad = np.zeros(P.shape[:2], bool)
        for iy, oy in enumerate(offs):
            for ix, ox in enumerate(offs):
                cx = P[..., 0] + Jx[..., 0] * ox + Jy[..., 0] * oy
                cy = P[..., 1] + Jx[..., 1] * ox + Jy[..., 1] * oy
                xa, xb, ya, yb = cx - ax, cx + ax, cy - ay, cy + ay
                bad |= (xa < 0) | (ya < 0) | (xb > wc) | (yb > hc)
                integ = (_bilinear(sat, xb, yb) - _bilinear(sat, xa, yb) - _bilinear(sat, xb, ya)
                         + _bilinear(sat, xa, ya))
                sub[iy, ix] = integ / np.maximum(4 * ax * ay, 1e-30)
        sub[:, :, bad] = outside
        if subpixels:  # (s, s, rows, cols) -> (rows s, cols s)
            out[(r0 - y0) * s : (r1 - y0) * s] = sub.transpose(2, 0, 3, 1).reshape((r1 - r0) * s, -1)
        else:
            out[r0 - y0 : r1 - y0] = sub.mean(axis=(0, 1))
    return out


def band_limit(sub: np.ndarray, s: int) -> np.ndarray:
    """Pixel averages of a sub-pixel image, band-limited to the pixel grid's Nyquist frequency.

    The pixel average of the chart (:func:`rasterize`) holds detail finer than the pixel grid
    can carry, which aliases: convolving those averages with a kernel filters the aliases with
    the kernel at the wrong frequency. A real capture filters the chart's fine detail with the
    lens first, then integrates over the pixels, so a PSF fit against the aliased averages
    finds kernels that are too wide when the PSF is about as sharp as a pixel (7 % relative L2
    at sigma 0.85 x 0.75 px). The band-limited average is the chart as an ideal low-pass filter at
    0.5 cycles per pixel would leave it; blurred by the PSF's samples (band-limited), it is the
    capture up to what the lens passes beyond the Nyquist frequency.

    Parameters
    ----------
    sub : ndarray (s H, s W)
        Sub-pixel averages (:func:`rasterize` with ``subpixels=True``); NaN where off the chart.
    s : int
        Sub-pixels per pixel side (at least 2: the aliases between 0.5 and ``s - 0.5`` cycles
        per pixel are removed, those beyond fold back; the chart's detail there is weak).

    Returns
    -------
    ndarray float32 (H, W)
        NaN where any of the pixel's sub-pixels is NaN. Near NaN areas, which are filled with
        the nearest value along rows, then columns, the result rings slightly.

    Examples
    --------
    A (periodic) sinusoid below the Nyquist frequency keeps its pixel averages, here the mean
    of 4 point samples per pixel:

    >>> f, x = 0.25, (np.arange(64) + 0.5) / 4 - 0.5        # 16 pixels, 4 sub-pixels each
    >>> sub = np.tile(np.sin(2 * np.pi * f * x), (64, 1))
    >>> mean = sub.reshape(16, 4, 16, 4).mean(axis=(1, 3))
    >>> bool(np.allclose(band_limit(sub, 4), mean, atol=1e-6))
    True
    """
    import scipy.fft as sfft

    hs, ws = sub.shape
    h, w = hs // s, ws // s
    nan = ~np.isfinite(sub)
    x = _fill_nearest(sub).astype(np.float32) if nan.any() else sub.astype(np.float32)
    fy = sfft.fftfreq(hs) * s  # cycles per pixel
    fx = sfft.rfftfreq(ws) * s
    ky, kx = np.abs(fy) < 0.5, np.abs(fx) < 0.5

    def pixel_mean(f):  # mean over a pixel's s sub-pixels, moved from sub-pixel 0 to the pixel centre
        return np.sinc(f) / np.sinc(f / s) * np.exp(2j * np.pi * f * (s - 1) / (2 * s))

    spec = sfft.rfft2(x)[np.ix_(ky, kx)] * pixel_mean(fy[ky])[:, None] * pixel_mean(fx[kx])[None, :]
    out = np.zeros((h, w // 2 + 1), np.complex64)
    out[np.round(fy[ky] * h).astype(int) % h, : spec.shape[1]] = spec
    u = sfft.irfft2(out, s=(h, w)).astype(np.float32) / s**2
    if nan.any():
        u[nan.reshape(h, s, w, s).any(axis=(1, 3))] = np.nan
    return u


def _fill_nearest(a: np.ndarray, rows_per_chunk: int = 512) -> np.ndarray:
    """``a`` with NaNs replaced by the nearest finite value along rows, then along columns (0 if none)."""
    out = a.copy()
    for view in (out, out.T):
        n = view.shape[1]
        pos = np.arange(n, dtype=np.int32)[None, :]
        for r0 in range(0, view.shape[0], rows_per_chunk):
            v = view[r0 : r0 + rows_per_chunk]
            m = ~np.isfinite(v)
            if not m.any():
                continue
            left = np.maximum.accumulate(np.where(m, -1, pos), axis=1)  # nearest finite to the left, or -1
            right = np.minimum.accumulate(np.where(m, n, pos)[:, ::-1], axis=1)[:, ::-1]  # to the right, or n
            use_r = (right < n) & ((left < 0) | (right - pos < pos - left))
            pick = np.clip(np.where(use_r, right, left), 0, n - 1)
            filled = np.take_along_axis(v, pick, axis=1)
            v[m] = filled[m]
    out[~np.isfinite(out)] = 0.0
    return out


# ----------------------------------------------------------------------------------------------


def vignetting_map(image_size: tuple[int, int], strength: float = 1.0, focal: float | None = None,
                   region: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Natural vignetting ``cos^4`` of the field angle (focal length in px, default the diagonal).

    ``strength`` scales the fall-off: ``1 - strength (1 - cos^4)``; 0 disables it.
    """
    w, h = image_size
    f = float(focal or np.hypot(w, h))
    x0, y0, x1, y1 = region or (0, 0, w, h)
    xs = np.arange(x0, x1) - (w - 1) / 2
    ys = np.arange(y0, y1) - (h - 1) / 2
    r2 = (xs[None, :] ** 2 + ys[:, None] ** 2) / f**2
    cos4 = 1.0 / (1.0 + r2) ** 2
    return (1 - strength * (1 - cos4)).astype(np.float32)


@dataclasses.dataclass
class Capture:
    """A rendered RAW capture and the truth it was made from."""

    dn: np.ndarray
    pattern: str
    black_level: list[float]
    white_level: float
    iso: float
    mapping: LensMapping
    clean: np.ndarray  # normalised mosaic before noise
    info: dict


def render_capture(
    chart: np.ndarray,
    mapping: LensMapping,
    *,
    field=None,
    profile=None,
    iso: float = 100.0,
    exposure: float = 0.8,
    white_balance: Mapping[str, float] | None = None,
    black_reflectance: float = 0.04,
    white_reflectance: float = 1.0,
    vignetting: float = 1.0,
    background: float = 0.25,
    supersample: int = 3,
    pattern: str | None = None,
    black_level: float | list[float] | None = None,
    white_level: float | None = None,
    noise: bool = True,
    rng: np.random.Generator | int | None = None,
) -> Capture:
    """Render a synthetic RAW capture of a chart (for tests, benchmarks and capture planning).

    Parameters
    ----------
    chart : ndarray (Hc, Wc)
        Chart raster, linear values in [0, 1] (:func:`dpcal.chart.chart_raster`).
    mapping : LensMapping
        Pose and lens distortion (:func:`dpcal.chart.geometry.pose_mapping`); its
        ``image_size`` is the sensor size.
    field : PSFField, optional
        Lens PSF per CFA plane at full-sensor sampling (resampled if it was made for another
        sensor size); None renders a perfectly sharp lens.
    profile : Profile or str, optional
        Camera profile for the CFA pattern, levels and the noise at ``iso`` (default
        ``nexus6p-rear``).
    iso : float
    exposure : float
        Normalised signal of the chart's white under the brightest plane, at the image centre.
    white_balance : dict, optional
        Relative plane sensitivities (default R 0.55, Gr 1, Gb 1, B 0.7).
    black_reflectance, white_reflectance : float
        What the chart's 0 and 1 become (ink and paper; a display's black and white).
    vignetting : float
        Strength of the cos^4 fall-off (0: none).
    background : float
        Scene value around the chart (relative to the chart's white).
    supersample : int
        Sub-pixel footprints per pixel side for the pixel-area integration.
    pattern, black_level, white_level : override the profile's sensor.
    noise : bool
        Add Poisson-Gaussian noise at ``iso`` (False: the clean capture, quantised).
    rng : Generator or seed

    Returns
    -------
    Capture
    """
    if not iso > 0:
        raise BadInputError(f"`iso` must be > 0, got {iso:g}", param="iso")
    if not exposure > 0:
        raise BadInputError(f"`exposure` must be > 0 (the chart white's normalised level), got {exposure:g}",
                            param="exposure")
    rng = np.random.default_rng(rng)
    prof = load_profile(profile if profile is not None else "nexus6p-rear")
    pat = pattern or prof.pattern
    bl = prof.black_level if black_level is None else black_level
    wl = prof.white_level(iso) if white_level is None else white_level
    w, h = mapping.image_size
    u = rasterize(chart, mapping, supersample=supersample, outside=np.nan)
    refl = black_reflectance + (white_reflectance - black_reflectance) * u
    refl = np.where(np.isnan(refl), background, refl).astype(np.float32)
    if field is not None:
        if field.sensor_size is not None and tuple(field.sensor_size) != (w, h):
            field = field.resampled(w, h)
        planes = apply_psf_field(np.broadcast_to(refl, (len(field.planes), h, w)).copy(), field, padding="replicate")
    else:
        planes = np.broadcast_to(refl, (4, h, w))
    wb = dict(white_balance or {"R": 0.55, "Gr": 1.0, "Gb": 1.0, "B": 0.7})
    gains = np.array([wb[p] for p in PLANES]) / max(wb.values()) * exposure
    pm = plane_map(pat, h, w)
    mosaic = np.take_along_axis(np.asarray(planes), pm[None], 0)[0] if planes.shape[0] == 4 else planes[0]
    clean = (mosaic * gains[pm] * vignetting_map((w, h), vignetting)).astype(np.float32)
    if noise:
        nz = prof.noise(iso=iso)
        y = sample_poisson_gaussian(clean, per_plane(nz.alpha, pat, clean.shape), per_plane(nz.sigma, pat, clean.shape), rng)
        noise_info = nz.to_dict()
    else:
        y = np.clip(clean, 0, 1)
        noise_info = None
    dn = to_dn(y, pat, bl, wl)
    info = {"iso": iso, "exposure": exposure, "white_balance": wb, "black_reflectance": black_reflectance,
            "white_reflectance": white_reflectance, "vignetting": vignetting, "noise": noise_info,
            "mapping": mapping.to_dict(), "supersample": supersample}
    return Capture(dn, pat, list(np.broadcast_to(np.asarray(bl, float), (4,))), float(wl), float(iso), mapping, clean, info)


def write_capture(path, cap: Capture, *, make: str = "dpcal", model: str = "render-chart") -> None:
    """Write a :class:`Capture` as a DNG (ISO and levels in its tags)."""
    write_dng(path, cap.dn, cap.pattern, black_level=cap.black_level, white_level=cap.white_level,
              iso=cap.iso, exposure_time=1 / 60, make=make, model=model)
