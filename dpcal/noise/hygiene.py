"""Data hygiene before any noise fit: levels, clipping bounds, exposure checks, defect pixels.

* White level per capture: the metadata value is often not where the sensor saturates
  (e.g. 65535 for 12-bit data scaled to 16 bits, or a lower per-ISO saturation); the level
  where pixel values pile up is used when there is such a pile-up.
* Clipping bounds in normalised units: ``hi = 1`` at the (detected) white level; ``lo = 0``
  when the camera clips at its black level (no value below black), else the DN-0 floor.
* Black level from dark frames (per plane, hot pixels excluded) when they are given.
* Hot and dead pixels: robust outliers of the per-pixel mean of dark frames (hot) or of
  flat frames relative to their local median (dead); masked out of every fit.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dpcal.cfa import PLANES, plane_offsets, split_planes
from dpcal.errors import FitError

#: fraction of saturated pixels above which a capture is refused as over-exposed
OVEREXPOSED = 0.9
#: a capture whose 99.5th percentile level is below this (normalised) is under-exposed
UNDEREXPOSED = 0.02


@dataclasses.dataclass
class Prepared:
    """A capture ready for the fitters: four normalised planes and their clipping bounds."""

    planes: np.ndarray  # (4, h, w) float32, normalised, not clipped further
    lo: np.ndarray  # (4,) lower clipping bound per plane (normalised)
    hi: np.ndarray  # (4,) upper clipping bound per plane
    black_level: tuple[float, ...]
    white_level: float  # effective (detected or metadata) saturation, DN
    white_level_meta: float
    white_detected: bool
    valid: np.ndarray | None = None  # (4, h, w) bool, False at defect pixels
    saturated_fraction: float = 0.0
    path: str | None = None

    def info(self) -> dict:
        return {
            "path": self.path,
            "black_level": [float(b) for b in self.black_level],
            "white_level": float(self.white_level),
            "white_level_metadata": float(self.white_level_meta),
            "white_level_detected": bool(self.white_detected),
            "clip_lo": [float(x) for x in self.lo],
            "clip_hi": [float(x) for x in self.hi],
            "saturated_fraction": float(self.saturated_fraction),
            "defect_pixels": int((~self.valid).sum()) if self.valid is not None else 0,
        }


def detect_white_level(dn: np.ndarray, white_meta: float, black: float = 0.0) -> tuple[float, bool]:
    """Saturation level: the maximum value if pixels pile up there, else the metadata level.

    A pile-up means at least 50 pixels (and 1e-5 of the image) at the maximum, and at least
    20 times more than the average count of the other values in the top 2 % of the range.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> dn = np.minimum(rng.integers(0, 5000, 100_000), 4000).astype(np.uint16)
    >>> detect_white_level(dn, 65535)
    (4000.0, True)
    >>> detect_white_level(rng.integers(0, 5000, 100_000).astype(np.uint16), 65535)
    (65535.0, False)
    """
    flat = dn.ravel()
    if np.issubdtype(flat.dtype, np.integer) and flat.dtype.itemsize <= 2:
        counts = np.bincount(flat.astype(np.int64) if flat.dtype.kind == "i" else flat)
        vmax = len(counts) - 1
        n_max = int(counts[vmax])
        lo_v = int(max(black, vmax - 0.02 * max(vmax - black, 1)))
        others = counts[lo_v:vmax]
        others = others[others > 0]
    else:
        vmax = float(np.max(flat))
        n_max = int(np.count_nonzero(flat == vmax))
        band = flat[(flat >= vmax - 0.02 * max(vmax - black, 1e-12)) & (flat < vmax)]
        others = np.unique(band, return_counts=True)[1] if band.size else np.zeros(0)
    if vmax <= black:
        return float(white_meta), False
    base = float(others.mean()) if len(others) else 0.0
    if n_max >= max(50, 1e-5 * flat.size) and n_max >= 20 * base and vmax <= white_meta:
        return float(vmax), bool(vmax != white_meta)
    return float(white_meta), False


def prepare_capture(
    dn: np.ndarray,
    pattern: str,
    black_level,
    white_level: float,
    *,
    valid: np.ndarray | None = None,
    detect_white: bool = True,
    path: str | None = None,
    check_exposure: bool = True,
) -> Prepared:
    """Normalise a Bayer mosaic to four planes and find its clipping bounds.

    Parameters
    ----------
    dn : ndarray (H, W)
        Mosaic in digital numbers.
    pattern : str
        CFA pattern of ``dn``.
    black_level : 4 floats
        Per plane ``R, Gr, Gb, B`` (DN).
    white_level : float
        Metadata saturation (DN); replaced by the detected pile-up level if ``detect_white``.
    valid : ndarray (H, W) of bool, optional
        False at defect pixels (hot/dead), excluded from the fits.
    check_exposure : bool
        Refuse over- and under-exposed captures with :class:`FitError`.

    Raises
    ------
    FitError
        Over-exposed (most pixels saturated) or under-exposed (everything near black).
    """
    black = np.broadcast_to(np.asarray(black_level, dtype=np.float64), (4,))
    where = f"{path}: " if path else ""
    if detect_white:
        white, detected = detect_white_level(dn, float(white_level), float(black.min()))
    else:
        white, detected = float(white_level), False
    if white <= black.max():
        raise FitError(f"{where}white level {white:g} is not above the black level {black.max():g}")
    raw_planes = split_planes(dn, pattern)
    planes = np.empty(raw_planes.shape, dtype=np.float32)
    lo = np.zeros(4)
    hi = np.ones(4)
    sat = 0
    for i in range(4):
        p = raw_planes[i]
        scale = white - black[i]
        planes[i] = (p.astype(np.float32) - np.float32(black[i])) / np.float32(scale)
        pmin = float(p.min())
        # Clipped at black (nothing below it) -> lo = 0; else the DN-0 floor.
        lo[i] = 0.0 if pmin >= black[i] else min(0.0, (0.0 - black[i]) / scale)
        lo[i] = min(lo[i], (pmin - black[i]) / scale)
        sat += int(np.count_nonzero(p >= white))
    total = planes.size
    sat_frac = sat / total
    vplanes = split_planes(valid, pattern) if valid is not None else None
    if check_exposure:
        if sat_frac > OVEREXPOSED:
            raise FitError(
                f"{where}over-exposed: {sat_frac:.0%} of the pixels are saturated (at {white:g} DN); "
                "reduce the exposure so that most of the chart lies below white"
            )
        sub = planes[:, ::4, ::4]
        p995 = float(np.percentile(sub, 99.5))
        if p995 < UNDEREXPOSED:
            raise FitError(
                f"{where}under-exposed: 99.5% of the pixels are below {p995:.2%} of the white level; "
                "the signal-dependent noise cannot be separated from the read noise: expose brighter"
            )
    return Prepared(
        planes=planes, lo=lo, hi=hi, black_level=tuple(float(b) for b in black), white_level=white,
        white_level_meta=float(white_level), white_detected=detected, valid=vplanes,
        saturated_fraction=sat_frac, path=path,
    )


def black_from_darks(darks: list[np.ndarray], pattern: str, valid: np.ndarray | None = None) -> tuple[float, ...]:
    """Per-plane black level (DN) from dark frames: mean over frames, hot pixels excluded."""
    mean = np.mean([np.asarray(d, dtype=np.float64) for d in darks], axis=0)
    planes = split_planes(mean, pattern)
    vp = split_planes(valid, pattern) if valid is not None else None
    out = []
    for i in range(4):
        v = planes[i][vp[i]] if vp is not None else planes[i].ravel()
        out.append(float(np.mean(v)))
    return tuple(out)


def defect_map(
    darks: list[np.ndarray] | None = None,
    flats: list[np.ndarray] | None = None,
    pattern: str | None = None,
    k: float = 10.0,
) -> np.ndarray | None:
    """Boolean map, True where a pixel is usable; hot pixels from darks, dead ones from flats.

    A pixel is hot when its mean over the dark frames exceeds its plane's median by more
    than ``k`` robust (MAD) standard deviations; dead when its mean over flat frames differs
    from the 5x5 median of its plane by more than ``k`` robust deviations of that difference.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> dark = rng.normal(64, 2, (64, 64)); dark[10, 20] = 400
    >>> m = defect_map([dark], pattern="RGGB")
    >>> bool(m[10, 20]), int((~m).sum())
    (False, 1)
    """
    ref = darks[0] if darks else (flats[0] if flats else None)
    if ref is None:
        return None
    pattern = pattern or "RGGB"
    valid = np.ones(ref.shape, dtype=bool)
    offs = plane_offsets(pattern)
    h, w = ref.shape[0] // 2 * 2, ref.shape[1] // 2 * 2
    if darks:
        mean = np.mean([np.asarray(d, dtype=np.float32) for d in darks], axis=0)
        for n in PLANES:
            dy, dx = offs[n]
            p = mean[dy:h:2, dx:w:2]
            med = np.median(p)
            mad = 1.4826 * np.median(np.abs(p - med)) + 1e-6
            valid[dy:h:2, dx:w:2] &= p <= med + k * mad
    if flats:
        import cv2

        mean = np.mean([np.asarray(f, dtype=np.float32) for f in flats], axis=0)
        for n in PLANES:
            dy, dx = offs[n]
            p = np.ascontiguousarray(mean[dy:h:2, dx:w:2], dtype=np.float32)
            dev = p - cv2.medianBlur(p, 5)
            mad = 1.4826 * np.median(np.abs(dev)) + 1e-6
            valid[dy:h:2, dx:w:2] &= np.abs(dev) <= k * mad
    return valid
