"""Photon transfer (EMVA 1288): noise from pairs or stacks of frames per exposure.

Frames of the same static scene (or flat field) at one exposure differ only by temporal
noise, so the variance of their differences is the temporal noise alone: fixed-pattern noise
(PRNU, DSNU), which a single image cannot separate from it, cancels (``docs/method.md`` section 2b).

* Per exposure step with frames ``F_1..F_L`` (``L >= 2``): the mean level, and the temporal
  variance as the interaction mean square ``sum_{p,l} (F_pl - m_p - (r_l))^2 / ((n-1)(L-1))``
  (pixel means ``m_p`` and per-frame offsets ``r_l`` removed; for a pair this is
  ``var(A - B) / 2`` with the mean difference removed, as in EMVA 1288).
* Dark frames give the dark mean (black level) and the dark temporal variance (read noise);
  with several exposure times the dark variance is extrapolated to zero exposure, as the
  EMVA 1288 reference implementation does.
* The system gain is the slope of (variance - dark variance) against (mean - dark mean) over
  the linear range: from the first step up to 70 % of the saturation mean (the step with the
  highest variance), through the origin.

For RAW captures (flat fields or any static scene) the pixels of each plane are binned by
level into level sets of temporal noise (:func:`temporal_levelsets`), which the clipped
maximum-likelihood fit of :mod:`dpcal.noise.fit` takes like single-image level sets (so
clipping at black and white is modelled rather than cut away); ``EMVA1288_Data.txt`` data
sets are analysed exactly as the standard prescribes (:func:`fit_emva`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from pathlib import Path

import numpy as np

from dpcal.errors import BadInputError, FitError
from dpcal.noise.levelsets import LevelSets, haar_split, unbiased_std

log = logging.getLogger("dpcal")

#: linear range of the photon transfer curve, as a share of the saturation mean (EMVA 1288)
LINEAR_LIMIT = 0.7


# ----------------------------------------------------------------------------------------------
# temporal statistics


def temporal_stats(frames: np.ndarray, valid: np.ndarray | None = None) -> tuple[float, float, float]:
    """Mean, temporal variance and its degrees of freedom of a stack ``(L, ...)`` of frames.

    Pixel means and per-frame offsets (illumination drift between frames) are removed: the
    variance is the two-way interaction mean square, ``var(A - B) / 2`` for a pair.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> scene = rng.uniform(100, 200, (64, 64))             # any static scene
    >>> frames = scene + rng.normal(0, 3.0, (2, 64, 64)) + np.array([0.0, 5.0])[:, None, None]
    >>> m, v, dof = temporal_stats(frames)
    >>> bool(abs(v / 9.0 - 1) < 0.05), dof
    (True, 4095.0)
    """
    f = np.asarray(frames, dtype=np.float64)
    L = f.shape[0]
    if L < 2:
        raise BadInputError("temporal noise needs at least two frames per exposure")
    f = f.reshape(L, -1)
    if valid is not None:
        f = f[:, np.asarray(valid).ravel()]
    n = f.shape[1]
    pm = f.mean(axis=0)
    r = f - pm
    rl = r.mean(axis=1)
    ss = float(np.sum(r * r)) - n * float(np.sum(rl * rl))
    dof = (n - 1) * (L - 1)
    return float(pm.mean()), ss / dof, float(dof)


def temporal_levelsets(
    frames: np.ndarray,
    lo: float,
    hi: float,
    *,
    valid: np.ndarray | None = None,
    nbins: int = 400,
    min_n: int = 256,
    source: int = 0,
):
    """Level sets of temporal noise from a stack ``(L, h, w)`` of one plane (normalised units).

    Each pixel's level is its mean over the frames; its temporal residuals are its deviations
    from that mean (per-frame offsets removed per set). Pixels are *binned by the mean of their
    8 neighbours*, which is independent of the pixel's own noise: binning on the pixel's own
    mean would select on its noise wherever the data clip. Clipped pixels are kept: a set's
    statistics are then those of the clipped variable, as the clipped model expects.

    Returns
    -------
    LevelSets
        ``level`` (mean of the pixel means), ``std`` (unbiased, from the interaction mean
        square with ``(n-1)(L-1)`` degrees of freedom), ``c = 1/(n L)``, ``d = 1/(2 dof)``.
    """
    import cv2

    f = np.asarray(frames, dtype=np.float32)
    L = f.shape[0]
    m = f.mean(axis=0)
    neigh = (cv2.boxFilter(m, -1, (3, 3), normalize=False, borderType=cv2.BORDER_REFLECT) - m) / np.float32(8.0)
    keep = np.ones(m.shape, dtype=bool)
    keep[0, :] = keep[-1, :] = keep[:, 0] = keep[:, -1] = False
    if valid is not None:
        keep &= valid
    idx = np.flatnonzero(keep)
    mk = m.ravel()[idx].astype(np.float64)
    ids = np.clip(((neigh.ravel()[idx] - lo) * (nbins / (hi - lo))).astype(np.int64), 0, nbins - 1)
    R = np.stack([f[l].ravel()[idx].astype(np.float64) - mk for l in range(L)])  # (L, npix) residuals
    for it in range(2):
        n = np.bincount(ids, minlength=nbins).astype(np.float64)
        sm = np.bincount(ids, weights=mk, minlength=nbins)
        ss = np.zeros(nbins)
        rl2 = np.zeros(nbins)
        for l in range(L):
            ss += np.bincount(ids, weights=R[l] * R[l], minlength=nbins)
            s1 = np.bincount(ids, weights=R[l], minlength=nbins)
            with np.errstate(invalid="ignore", divide="ignore"):
                rl2 += s1 * s1 / n
        if it == 1:
            break
        # Hot and flickering (RTS) pixels: drop pixels with a residual beyond 7 std of their set.
        with np.errstate(invalid="ignore", divide="ignore"):
            sd = np.sqrt(np.maximum(ss - rl2, 0.0) / ((n - 1) * (L - 1)))
        thr = 7.0 * np.nan_to_num(sd, nan=np.inf) * np.sqrt((L - 1) / L)  # std of a residual about the pixel mean
        keep = np.max(np.abs(R), axis=0) <= thr[ids]
        if keep.all():
            break
        ids, mk, R = ids[keep], mk[keep], R[:, keep]
    dof = (n - 1) * (L - 1)
    good = n >= min_n
    n, sm, ss, rl2, dof = n[good], sm[good], ss[good], rl2[good], dof[good]
    var = np.maximum(ss - rl2, 0.0) / dof
    k = len(n)
    return LevelSets(
        level=sm / n, std=unbiased_std(var, dof), n=n, c=1.0 / (n * L), d=1.0 / (2 * dof),
        lo=np.full(k, lo), hi=np.full(k, hi), source=np.full(k, source), kind="pairs",
    )


# ----------------------------------------------------------------------------------------------
# photon transfer fit


@dataclasses.dataclass
class PhotonTransfer:
    """Result of a photon-transfer fit, in the units of its inputs (DN or normalised)."""

    gain: float  # slope of temporal variance vs mean (K in DN/e- for DN inputs; alpha if normalised)
    gain_std: float
    read_var: float  # temporal variance at zero signal (dark or intercept)
    read_var_std: float
    read_from: str  # "darks" or "intercept"
    saturation: float  # mean at saturation (above dark)
    saturation_index: int | None
    used: np.ndarray  # bool mask of the points in the linear range
    gof: dict

    @property
    def read_noise(self) -> float:
        return math.sqrt(max(self.read_var, 0.0))


def photon_transfer(
    mean: np.ndarray,
    var: np.ndarray,
    dof: np.ndarray | None = None,
    *,
    dark_var: float | None = None,
    dark_var_std: float | None = None,
    weighted: bool = False,
    saturation: float | None = None,
    limit: float = LINEAR_LIMIT,
    what: str = "",
) -> PhotonTransfer:
    """Slope of variance against mean over the linear range (EMVA 1288 system gain).

    Parameters
    ----------
    mean : array
        Mean signal above dark (``mean - dark mean``) of each point.
    var : array
        Temporal variance of each point (dark variance *not* subtracted).
    dof : array, optional
        Degrees of freedom of each variance (for weights, chi-square and uncertainties).
    dark_var : float, optional
        Temporal dark variance. Given: the fit is ``var - dark_var = K mean`` through the
        origin (EMVA 1288). Not given: ``var = K mean + b`` with a free intercept.
    weighted : bool
        Weight points by the inverse variance of their variance estimate (level sets of very
        different sizes); EMVA 1288 uses ordinary least squares.
    saturation : float, optional
        Mean at saturation; by default the mean of the point with the highest variance.
    limit : float
        Upper end of the linear range as a share of the saturation mean.

    Returns
    -------
    PhotonTransfer

    Raises
    ------
    FitError
        Fewer than 3 points in the linear range, or a non-positive gain.

    Examples
    --------
    >>> mu = np.linspace(10, 3000, 40)
    >>> pt = photon_transfer(mu, 0.25 * mu + 9.0, dark_var=9.0)
    >>> round(pt.gain, 6)
    0.25
    """
    where = f"{what}: " if what else ""
    mean = np.asarray(mean, dtype=np.float64)
    var = np.asarray(var, dtype=np.float64)
    dof = np.full(len(mean), np.inf) if dof is None else np.asarray(dof, dtype=np.float64)
    ok = np.isfinite(mean) & np.isfinite(var)
    sat_idx = None
    if saturation is None:
        if not ok.any():
            raise FitError(f"{where}no usable exposure steps")
        sat_idx = int(np.nanargmax(np.where(ok, var, -np.inf)))
        saturation = float(mean[sat_idx])
    used = ok & (mean <= limit * saturation) & (mean > 0)
    if used.sum() < 3:
        raise FitError(
            f"{where}only {int(used.sum())} point(s) in the linear range (0 to {limit:.0%} of saturation); "
            "capture more exposure steps below saturation"
        )
    x, y, nu = mean[used], var[used], dof[used]
    if dark_var is not None:
        y = y - dark_var
        if weighted:
            w = np.where(np.isfinite(nu), nu / (2 * np.maximum(var[used], 1e-300) ** 2), 1.0)
        else:
            w = np.ones_like(x)
        K = float(np.sum(w * x * y) / np.sum(w * x * x))
        resid = y - K * x
        p = 1
        read_var, read_std = float(dark_var), float(dark_var_std or 0.0)
        read_from = "darks"
        X = x[:, None]
    else:
        w = np.where(np.isfinite(nu), nu / (2 * np.maximum(var[used], 1e-300) ** 2), 1.0) if weighted else np.ones_like(x)
        X = np.stack([x, np.ones_like(x)], 1)
        sw = np.sqrt(w)
        K, b = np.linalg.lstsq(X * sw[:, None], y * sw, rcond=None)[0]
        K, b = float(K), float(b)
        resid = y - (K * x + b)
        p = 2
        read_var, read_from = b, "intercept"
    n = len(x)
    # Uncertainty from the residual scatter (includes any departure from linearity).
    s2 = float(np.sum(w * resid**2) / max(n - p, 1))
    cov = np.linalg.inv((X * w[:, None]).T @ X) * s2
    K_std = float(math.sqrt(max(cov[0, 0], 0.0)))
    if dark_var is None:
        read_std = float(math.sqrt(max(cov[1, 1], 0.0)))
    model = y - resid
    fin = np.isfinite(nu)
    chi2 = float(np.sum((resid[fin] ** 2) / (2 * np.maximum(var[used][fin], 1e-300) ** 2 / nu[fin])) / max(fin.sum() - p, 1)) if fin.any() else None
    gof = {
        "n_points": int(n),
        "chi2_red": chi2,
        "linearity_rms": float(np.sqrt(np.mean((resid / np.maximum(np.abs(model) + (read_var if dark_var is not None else 0), 1e-300)) ** 2))),
        "linear_range": [float(x.min()), float(x.max())],
    }
    if not (K > 0 and math.isfinite(K)):
        raise FitError(f"{where}the variance does not grow with the signal (slope {K:.3g}); these frames show no shot noise")
    return PhotonTransfer(K, K_std, read_var, read_std, read_from, float(saturation), sat_idx, used, gof)


def dark_variance(texp: np.ndarray, var: np.ndarray) -> tuple[float, float]:
    """Dark temporal variance at zero exposure: a line in exposure time when there are more
    than two exposure times (dark current adds variance), else the first value (EMVA 1288).
    Returns ``(value, std)``."""
    texp = np.asarray(texp, dtype=np.float64)
    var = np.asarray(var, dtype=np.float64)
    if len(np.unique(texp)) <= 2:
        return float(var[0]), float(np.std(var) / math.sqrt(len(var))) if len(var) > 1 else 0.0
    X = np.stack([texp, np.ones_like(texp)], 1)
    coef, res, *_ = np.linalg.lstsq(X, var, rcond=None)
    resid = var - X @ coef
    s2 = float(np.sum(resid**2) / max(len(var) - 2, 1))
    cov = np.linalg.inv(X.T @ X) * s2
    return float(coef[1]), float(math.sqrt(max(cov[1, 1], 0.0)))


# ----------------------------------------------------------------------------------------------
# EMVA 1288 descriptor files


@dataclasses.dataclass
class EmvaStep:
    kind: str  # "b" (bright) or "d" (dark)
    exposure: float  # ns, as in the descriptor
    photons: float | None
    images: list[Path]


@dataclasses.dataclass
class EmvaDescriptor:
    path: Path
    bits: int
    width: int
    height: int
    steps: list[EmvaStep]

    @property
    def white_level(self) -> float:
        return float(2**self.bits - 1)


def read_emva_descriptor(path: str | os.PathLike, check_images: bool = True) -> EmvaDescriptor:
    """Parse an ``EMVA1288_Data.txt`` descriptor (format of EMVA 1288 release 3.0 data sets).

    Lines: ``v <version>``, ``n <bits> <width> <height>``, ``b <exposure> <photons>`` (bright
    step), ``d <exposure>`` (dark step), each followed by ``i <image path>`` lines (relative to
    the descriptor; ``/`` or Windows ``\\`` separators). Numbers may use a decimal comma.
    ``#`` starts a comment.

    Raises
    ------
    BadInputError
        Unreadable file, missing ``n`` line, a step without images, or image files missing.
    """
    p = Path(path)
    if not p.is_file():
        raise BadInputError(f"{p}: no such EMVA 1288 descriptor file")
    bits = width = height = None
    steps: list[EmvaStep] = []
    try:
        lines = p.read_text(errors="replace").splitlines()
    except OSError as e:
        raise BadInputError(f"{p}: cannot read ({e.strerror})") from None
    for no, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        tag, *rest = line.split()
        try:
            if tag == "n":
                bits, width, height = int(rest[0]), int(rest[1]), int(rest[2])
            elif tag == "b":
                steps.append(EmvaStep("b", _num(rest[0]), _num(rest[1]), []))
            elif tag == "d":
                steps.append(EmvaStep("d", _num(rest[0]), 0.0, []))
            elif tag == "i":
                if not steps:
                    raise BadInputError(f"{p}:{no}: image line before any 'b' or 'd' step")
                # Descriptors written on Windows separate folders with backslashes.
                rel = " ".join(rest).replace("\\", "/")
                steps[-1].images.append(p.parent / rel)
            elif tag == "v":
                continue
            else:
                raise BadInputError(f"{p}:{no}: unknown line type {tag!r} (expected v, n, b, d or i)")
        except (IndexError, ValueError):
            raise BadInputError(f"{p}:{no}: malformed line {line!r}") from None
    if bits is None:
        raise BadInputError(f"{p}: no 'n <bits> <width> <height>' line; is this an EMVA1288_Data.txt descriptor?")
    if not steps:
        raise BadInputError(f"{p}: no exposure steps ('b' / 'd' lines)")
    empty = [s for s in steps if len(s.images) < 2]
    if empty:
        s = empty[0]
        raise BadInputError(
            f"{p}: the {'bright' if s.kind == 'b' else 'dark'} step at exposure {s.exposure:g} has "
            f"{len(s.images)} image(s); each step needs a pair"
        )
    if check_images:
        missing = [im for s in steps for im in s.images if not im.is_file()]
        if missing:
            raise BadInputError(
                f"{p}: {len(missing)} of {sum(len(s.images) for s in steps)} image file(s) listed in the "
                f"descriptor are missing (first: {missing[0]}); image paths are relative to the descriptor's "
                "folder: is the data set complete and the descriptor beside its images folder?"
            )
    return EmvaDescriptor(p, bits, width, height, steps)


def _num(s: str) -> float:
    return float(s.replace(",", "."))


def _read_mono(path: Path, width: int, height: int) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise BadInputError(f"{path}: cannot read the image (not a readable PNG/TIFF?)")
    if img.ndim != 2:
        raise BadInputError(f"{path}: expected a single-channel (monochrome) image, got shape {img.shape}")
    if img.shape != (height, width):
        raise BadInputError(
            f"{path}: image is {img.shape[1]}x{img.shape[0]}, the descriptor says {width}x{height}"
        )
    return img


def fit_emva(path: str | os.PathLike, *, progress: bool = False) -> dict:
    """EMVA 1288 photon-transfer analysis of a descriptor's temporal data.

    Steps with exactly two images are the temporal series (bright pairs and the dark pairs
    at the same exposure times); steps with more images are the spatial (non-uniformity)
    measurement and are used only for the single-frame comparison.

    Returns a dict with ``K`` (DN/e-), ``K_std``, ``sigma_y_dark`` (DN), the ``dark_offset``
    (dark mean of the shortest exposure, DN), ``alpha`` and ``sigma`` in normalised units
    (``/ (2^bits - 1 - dark_offset)``) with their std, the saturation and linear-range indices,
    the responsivity ``R`` and quantum efficiency ``QE`` (when photon counts are given), the
    data-sheet figures ``emva1288`` (:func:`dpcal.noise.emva.emva1288_metrics`), the
    single-frame (spatial) gain ``K_single`` and the ``fixed_pattern_share`` ``K_single / K - 1``,
    and the per-step table.

    Raises
    ------
    BadInputError
        Incomplete or inconsistent data set (missing images, wrong sizes, no dark pairs).
    FitError
        Too few steps in the linear range.
    """
    from tqdm import tqdm

    from dpcal.noise.emva import emva1288_metrics, spatial_stats

    desc = read_emva_descriptor(path)
    temporal = [s for s in desc.steps if len(s.images) == 2]
    bright = [s for s in temporal if s.kind == "b" and (s.photons or 0) > 0]
    darks = {s.exposure: s for s in temporal if s.kind == "d" or (s.photons or 0) == 0}
    if len(bright) < 3:
        raise BadInputError(f"{desc.path}: only {len(bright)} bright pair(s); EMVA 1288 needs an exposure series")
    if not darks:
        raise BadInputError(f"{desc.path}: no dark pairs ('d' steps); they give the dark level and read noise")
    rows = []
    dark_cache: dict[float, tuple[float, float, float]] = {}
    it = tqdm(bright, desc="EMVA steps", unit="step", disable=None if progress else True, leave=False)
    for s in it:
        A = np.stack([_read_mono(im, desc.width, desc.height) for im in s.images])
        u_y, s2_y, dof = temporal_stats(A)
        d = darks.get(s.exposure)
        if d is None:  # nearest dark exposure
            d = darks[min(darks, key=lambda e: abs(e - s.exposure))]
        if d.exposure not in dark_cache:
            Dk = np.stack([_read_mono(im, desc.width, desc.height) for im in d.images])
            dark_cache[d.exposure] = temporal_stats(Dk)
        u_d, s2_d, _ = dark_cache[d.exposure]
        # Single-frame (spatial) variance of the first frame: the diagonal Haar detail keeps
        # the high-frequency fixed pattern along with the temporal noise.
        Dd = haar_split(A[0].astype(np.float32))[1]
        rows.append({
            "exposure": s.exposure, "photons": s.photons, "u_y": u_y, "s2_y": s2_y, "dof": dof,
            "u_ydark": u_d, "s2_ydark": s2_d, "s2_single": float(np.var(Dd.astype(np.float64))),
        })
    mean = np.array([r["u_y"] - r["u_ydark"] for r in rows])
    s2y = np.array([r["s2_y"] for r in rows])
    s2d = np.array([r["s2_ydark"] for r in rows])
    dof = np.array([r["dof"] for r in rows])
    # EMVA: K is the zero-offset slope of (s2_y - s2_ydark) against (u_y - u_ydark).
    sat_idx = int(np.argmax(s2y))
    pt = photon_transfer(mean, s2y - s2d, dof, dark_var=0.0, saturation=float(mean[sat_idx]), what=str(desc.path))
    texp = np.array(sorted({r["exposure"] for r in rows}))
    dvar = np.array([dark_cache[darks.get(e, darks[min(darks, key=lambda x: abs(x - e))]).exposure][1] for e in texp])
    s2_dark0, s2_dark0_std = dark_variance(texp, dvar)
    s2_dark0 = max(s2_dark0, 0.24)  # EMVA: below 0.24 DN^2 the dark noise is quantisation-limited
    used = pt.used
    single = photon_transfer(mean, np.array([r["s2_single"] for r in rows]) - s2d, dof, dark_var=0.0,
                             saturation=float(mean[sat_idx]), what=str(desc.path))
    white = desc.white_level
    # The dark offset (black level) at the shortest exposure: normalised units run from it to white.
    dark_offset = dark_cache[min(dark_cache)][0]
    scale = white - dark_offset
    sig_dn = math.sqrt(s2_dark0)
    out = {
        "K": pt.gain,
        "K_std": pt.gain_std,
        "sigma_y_dark": sig_dn,
        "sigma_y_dark_std": s2_dark0_std / (2 * sig_dn),
        "alpha": pt.gain / scale,
        "alpha_std": pt.gain_std / scale,
        "sigma": sig_dn / scale,
        "sigma_std": s2_dark0_std / (2 * sig_dn) / scale,
        "white_level": white,
        "dark_offset": dark_offset,
        "bits": desc.bits,
        "index_u_ysat": sat_idx,
        "index_sensitivity_max": int(np.nonzero(used)[0].max()),
        "n_bright_steps": len(rows),
        "K_single": single.gain,
        "fixed_pattern_share": single.gain / pt.gain - 1.0,
        "gof": pt.gof,
        "steps": rows,
    }
    photons = np.array([r["photons"] for r in rows], dtype=np.float64)
    spatial = {}
    for s in desc.steps:
        if len(s.images) > 2:
            key = "dark" if s.kind == "d" or not (s.photons or 0) > 0 else "bright"
            spatial[key] = spatial_stats(np.stack([_read_mono(im, desc.width, desc.height) for im in s.images]))
    out["emva1288"] = emva1288_metrics(
        photons, np.array([r["u_y"] for r in rows]), np.array([r["u_ydark"] for r in rows]), K=pt.gain,
        sigma_y_dark=sig_dn, sat_index=sat_idx, sens_max_index=out["index_sensitivity_max"],
        spatial_bright=spatial.get("bright"), spatial_dark=spatial.get("dark"),
    )
    out["R"], out["QE"] = out["emva1288"]["R"], out["emva1288"]["QE"]
    return out
