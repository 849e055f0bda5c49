"""Single-image noise fit (Foi et al. 2008; clipping per Foi 2009), per CFA plane.

Pipeline per plane (normalised units):

1. **Wavelet split**, one level, undecimated Haar: approximation ``A`` (2x2 mean, filter sum 1,
   ``||phi||^2 = 1/4``) and diagonal detail ``D`` (unit-norm ``[[1,-1],[-1,1]]/2``), which
   annihilates any signal of the form ``f(x) + g(y)`` and leaves ``var(D) = sigma^2`` of
   the clipped data.
2. **Smooth-region selection** on ``A``: the gradient and Laplacian of a 5x5 box smoothing of
   ``A``, centred on each coefficient (so they are uncorrelated with ``D`` and the selection
   does not bias its variance), must stay below ``tau`` times their own noise std, computed
   from a preliminary noise curve (robust lower-quartile estimate per level, refined once with
   the fitted curve).
3. **Level sets**: smooth coefficients are binned by ``A`` into ``nbins`` equal intervals of
   the clipping range (Foi: about 600); per set the mean of ``A`` and the unbiased std of ``D``
   (sigma-clipped at 7 std against hot pixels) with sampling variances
   ``c_i = 1/n_i`` and ``d_i = kappa / (2 (n_i - 1))``, ``kappa = 9/4`` the variance
   inflation of overlapping Haar coefficients.
4. **Fit**: :func:`dpcal.noise.fit.fit_levelsets` (marginal ML with the clipped-normal
   moments, Gaussian-Cauchy robust likelihood, WLS start, Nelder-Mead).

A gray chart (or any capture with large flat areas) is detected by :mod:`dpcal.noise.chart`
and gives the level sets directly (tiles of flat regions, residuals about a plane fit).
"""

from __future__ import annotations

import functools
import logging

import numpy as np

from dpcal.cfa import PLANES, split_planes
from dpcal.errors import FitError
from dpcal.noise import chart
from dpcal.noise.fit import NoiseFit, fit_levelsets
from dpcal.noise.levelsets import (
    KAPPA_HAAR,
    LevelSets,
    block_index,
    clipped_group_sums,
    haar_split,
    n_blocks,
    unbiased_std,
)
from dpcal.physics.clipped import clipped_curve

log = logging.getLogger("dpcal")

SMOOTH_K = 5  # box size (in coefficients) of the smoothing used by the edge measures
SMOOTH_R = 2  # offset of the centred differences


@functools.lru_cache(maxsize=4)
def _measure_norms(k: int = SMOOTH_K, r: int = SMOOTH_R) -> tuple[float, float]:
    """Noise std (per unit pixel std) of the gradient and Laplacian measures of :func:`smooth_mask`."""
    k1 = np.convolve(np.full(2, 0.5), np.full(k, 1.0 / k))  # separable: 2x2 mean, then k x k box
    ks = np.outer(k1, k1)
    n = ks.shape[0] + 2 * r
    S = np.zeros((n + 2 * r, n + 2 * r))

    def place(dy, dx, w):
        S[r + r + dy : r + r + dy + ks.shape[0], r + r + dx : r + r + dx + ks.shape[1]] += w * ks

    place(0, r, 1.0)
    place(0, -r, -1.0)
    g = float(np.sqrt(np.sum(S**2)))
    S[:] = 0
    for dy, dx in ((0, r), (0, -r), (r, 0), (-r, 0)):
        place(dy, dx, 1.0)
    place(0, 0, -4.0)
    lap = float(np.sqrt(np.sum(S**2)))
    return g, lap


#: window (in coefficients) of the local detail energy used against texture, and its effective
#: degrees of freedom (window size / KAPPA_HAAR)
ENERGY_W = 13
ENERGY_DOF = ENERGY_W**2 / KAPPA_HAAR
#: a second, wider window: weak texture over larger areas (below the noise, undetectable in
#: 13x13) still raises the variance; 31x31 resolves an excess of about 30 % of the noise variance
ENERGY_W2 = 31
ENERGY_DOF2 = ENERGY_W2**2 / KAPPA_HAAR
#: level bins of the wavelet route (Foi uses about 600 level sets)
NBINS = 600


def energy_limit(p: float = 1e-4, dof: float = ENERGY_DOF) -> float:
    """Ratio of local detail energy to the noise variance above which a window is texture.

    The ``1 - p`` quantile of ``chi2_nu / nu`` (``nu`` = :data:`ENERGY_DOF`): pure noise
    exceeds it with probability ``p``, so rejecting such windows removes texture without
    biasing the variance of flat areas.

    Examples
    --------
    >>> 1.5 < energy_limit() < 2.0
    True
    """
    return _chi2_ratio_ppf(1 - p, dof)


@functools.lru_cache(maxsize=16)
def _chi2_ratio_ppf(q: float, nu: float) -> float:
    """Quantile ``q`` of ``chi2_nu / nu`` (scipy.special only: scipy.stats is slow to import)."""
    from scipy.special import gammaincinv

    return float(2.0 * gammaincinv(nu / 2.0, q) / nu)


class WaveletPlane:
    """One plane's wavelet maps, computed once and reused by every selection pass.

    Attributes (all on the ``(h-1, w-1)`` coefficient grid, float32 unless noted)
    ----------
    A, D : approximation and unit-norm diagonal detail (:func:`haar_split`)
    S : 5x5 box smoothing of ``A`` (local level)
    E, E2 : 13x13 and 31x31 box means of ``D^2`` (local detail energy)
    M : edge measure, ``max(|grad S| / norm_g, |lap S| / norm_l)``: in units of the pixel noise std
    ids : int32 level bin of ``S`` (``nbins`` equal bins over ``[lo, hi]``)
    inner : bool, False near the borders (where the box filters are not centred) and at defects
    """

    def __init__(self, plane: np.ndarray, lo: float, hi: float, *, valid: np.ndarray | None = None,
                 nbins: int = NBINS):
        import cv2

        self.lo, self.hi, self.nbins = float(lo), float(hi), nbins
        A, D = haar_split(plane)
        self.A, self.D = A, D
        S = cv2.blur(A, (SMOOTH_K, SMOOTH_K), borderType=cv2.BORDER_REFLECT)
        self.S = S
        D2 = D * D
        self.E = cv2.blur(D2, (ENERGY_W, ENERGY_W), borderType=cv2.BORDER_REFLECT)
        self.E2 = cv2.blur(D2, (ENERGY_W2, ENERGY_W2), borderType=cv2.BORDER_REFLECT)
        del D2
        inner = np.zeros(S.shape, dtype=bool)
        b = max(SMOOTH_K // 2 + SMOOTH_R, ENERGY_W2 // 2)
        inner[b : S.shape[0] - b, b : S.shape[1] - b] = True
        if valid is not None:
            inner &= valid[:-1, :-1] & valid[:-1, 1:] & valid[1:, :-1] & valid[1:, 1:]
        self.inner = inner
        self._M = None
        self._key = None
        self.centers = lo + (np.arange(nbins) + 0.5) * (hi - lo) / nbins

    @property
    def M(self) -> np.ndarray:
        """Edge measure (computed on first use: a chart capture needs only ``S`` and ``E``)."""
        if self._M is None:
            S, r = self.S, SMOOTH_R
            ng, nl = _measure_norms()
            c = S[r:-r, r:-r]
            M = np.zeros(S.shape, dtype=np.float32)
            g = np.abs(S[r:-r, 2 * r :] - S[r:-r, : -2 * r])
            np.maximum(g, np.abs(S[2 * r :, r:-r] - S[: -2 * r, r:-r]), out=g)
            g *= np.float32(1.0 / ng)
            lap = (S[r:-r, 2 * r :] + S[r:-r, : -2 * r]) + (S[2 * r :, r:-r] + S[: -2 * r, r:-r])
            lap -= 4 * c
            np.abs(lap, out=lap)
            lap *= np.float32(1.0 / nl)
            np.maximum(g, lap, out=g)
            M[r:-r, r:-r] = g
            self._M = M
        return self._M

    @property
    def ids(self) -> np.ndarray:
        """int32 level bin of ``S``."""
        ids = (self.S - np.float32(self.lo)) * np.float32(self.nbins / (self.hi - self.lo))
        return np.clip(ids, 0, self.nbins - 1).astype(np.int32)

    @property
    def key(self) -> np.ndarray:
        """(jackknife block, level bin) key of every coefficient: one gather per selection pass."""
        if self._key is None:
            hh, ww = self.S.shape
            blocks = block_index(np.arange(hh)[:, None], np.arange(ww)[None, :], (hh, ww)).astype(np.int32)
            self._key = blocks * np.int32(self.nbins) + self.ids
        return self._key

    def prelim_curve(self, nbins: int = 32, q: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
        """Rough noise std as a function of level: a robust lower envelope.

        In equal-count level bins, the ``q`` quantile of the local detail energy (31x31
        windows) divided by the same quantile of ``chi2_nu / nu``: flat areas give the low
        energies, texture and edges only add high ones, so the estimate holds unless a level
        is almost all texture.
        Returns ``(levels, stds)`` for ``np.interp``.
        """
        sel = self.inner[::4, ::4]
        a = self.S[::4, ::4][sel]
        e = self.E2[::4, ::4][sel]
        if a.size == 0:
            return np.array([self.lo, self.hi]), np.zeros(2)
        order = np.argsort(a, kind="stable")
        a, e = a[order], e[order]
        nb = max(1, min(nbins, a.size // 200))
        chunks = np.array_split(np.arange(a.size), nb)
        factor = _chi2_ratio_ppf(q, ENERGY_DOF2)
        lv = np.array([float(np.median(a[c])) for c in chunks])
        sd = np.array([float(np.sqrt(max(np.quantile(e[c], q), 0.0) / factor)) for c in chunks])
        return lv, sd

    def mask(self, curve: tuple[np.ndarray, np.ndarray], tau: float = 3.0) -> np.ndarray:
        """Smooth, untextured coefficients under the noise curve ``(levels, stds)``."""
        sig = np.interp(self.centers, *curve).astype(np.float32)
        t_edge = np.float32(tau) * sig
        t_energy = np.float32(energy_limit()) * sig * sig
        t_energy2 = np.float32(energy_limit(dof=ENERGY_DOF2)) * sig * sig
        ids = self.key % np.int32(self.nbins)
        ok = self.M <= t_edge[ids]
        ok &= self.E <= t_energy[ids]
        ok &= self.E2 <= t_energy2[ids]
        ok &= self.inner
        return ok

    def levelsets(self, curve: tuple[np.ndarray, np.ndarray], *, tau: float = 3.0, min_n: int = 64,
                  source: int = 0) -> tuple[LevelSets, float]:
        """Foi's level sets under the noise curve ``curve``; returns ``(sets, smooth_fraction)``."""
        m = self.mask(curve, tau)
        frac = float(np.count_nonzero(m)) / m.size
        nbins = self.nbins
        nb = n_blocks()
        # One key per (jackknife block, level bin): the per-block sums come for free.
        idx = np.flatnonzero(m)
        if idx.size == 0:
            return LevelSets.empty("wavelet"), frac
        key = self.key.ravel()[idx]
        d = self.D.ravel()[idx]
        a = self.A.ravel()[idx]
        size = nb * nbins
        # Per (block, bin) sums; outliers judged against their bin (all blocks together).
        nk, s1k, s2k, sak = clipped_group_sums(key, d, a, size, nbins)
        n = nk.reshape(nb, nbins).sum(0)
        # Sparse bins (small images, few flat areas) are merged with their neighbours, within
        # at most MERGE_SPAN bins, until a set has min_n coefficients.
        group = merge_bins(n, min_n)
        ng = int(group.max()) + 1

        def regroup(arr):
            return np.stack([np.bincount(group, weights=row, minlength=ng) for row in arr.reshape(nb, nbins)])

        parts = {"n": regroup(nk), "s1": regroup(s1k), "s2": regroup(s2k), "sa": regroup(sak),
                 "dof_loss": 1, "kappa": KAPPA_HAAR}
        n, s1, s2, sa = (parts[k].sum(0) for k in ("n", "s1", "s2", "sa"))
        good = n >= min_n
        for k in ("n", "s1", "s2", "sa"):
            parts[k] = parts[k][:, good]
        n, s1, s2, sa = n[good], s1[good], s2[good], sa[good]
        var = np.maximum(s2 - s1 * s1 / n, 0.0) / (n - 1)
        std = unbiased_std(var, (n - 1) / KAPPA_HAAR)
        k = len(n)
        sets = LevelSets(
            level=sa / n, std=std, n=n, c=1.0 / n, d=KAPPA_HAAR / (2 * (n - 1)),
            lo=np.full(k, self.lo), hi=np.full(k, self.hi), source=np.full(k, source), kind="wavelet",
            parts=parts,
        )
        return sets, frac


#: widest merge of sparse level bins (in bins of 1/NBINS of the range)
MERGE_SPAN = 12


def merge_bins(n: np.ndarray, min_n: int, span: int = MERGE_SPAN) -> np.ndarray:
    """Group consecutive bins so that each group holds ``min_n`` samples, spanning at most
    ``span`` bins (a group that cannot fill up stays small and is dropped by the caller).

    Examples
    --------
    >>> merge_bins(np.array([100, 10, 20, 40, 0, 500]), 64).tolist()
    [0, 1, 1, 1, 2, 2]
    """
    group = np.zeros(len(n), dtype=np.int64)
    g, acc, start = 0, 0.0, 0
    for i, c in enumerate(n):
        if acc >= min_n or (i - start >= span and acc > 0):
            g += 1
            acc, start = 0.0, i
        group[i] = g
        acc += c
    return group


def wavelet_levelsets(
    plane: np.ndarray,
    lo: float,
    hi: float,
    *,
    valid: np.ndarray | None = None,
    curve: tuple[np.ndarray, np.ndarray] | None = None,
    tau: float = 3.0,
    min_n: int = 64,
    source: int = 0,
) -> LevelSets:
    """Foi's level sets of one plane: smooth, untextured Haar coefficients binned by level.

    Parameters
    ----------
    plane : ndarray (h, w)
        Normalised plane.
    lo, hi : float
        Clipping bounds of the capture.
    valid : ndarray (h, w) of bool, optional
        False at defect pixels (every coefficient touching one is dropped).
    curve : (levels, stds), optional
        Noise curve for the selection thresholds; the robust preliminary curve if None.
    tau, min_n : float, int
        Edge threshold (noise std) and smallest set kept.

    Returns
    -------
    LevelSets

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> clean = np.repeat(np.linspace(0.1, 0.9, 8), 32)[None, :].repeat(200, 0)
    >>> noisy = clean + rng.standard_normal(clean.shape) * np.sqrt(1e-3 * clean)
    >>> sets = wavelet_levelsets(noisy.astype(np.float32), -1.0, 2.0)
    >>> bool(np.all(np.abs(sets.std / np.sqrt(1e-3 * sets.level) - 1) < 0.2))
    True
    """
    wp = WaveletPlane(plane, lo, hi, valid=valid)
    return wp.levelsets(curve if curve is not None else wp.prelim_curve(), tau=tau, min_n=min_n, source=source)[0]


def fitted_curve_points(fit: NoiseFit, lo: float, hi: float, n: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """The fitted clipped curve as ``(levels, stds)`` (observable mean, std) for the thresholds."""
    t = np.linspace(lo, hi, n)
    E, sd = clipped_curve(t, fit.alpha, fit.b, lo, hi)
    return E, sd


def fit_noise_single(
    mosaic: np.ndarray,
    pattern: str,
    *,
    lo: float | np.ndarray = 0.0,
    hi: float | np.ndarray = 1.0,
    scene: str = "auto",
    valid: np.ndarray | None = None,
    planes: tuple[str, ...] = PLANES,
    refine: bool = True,
) -> dict[str, NoiseFit]:
    """Fit alpha and sigma per CFA plane from one normalised RAW capture.

    Parameters
    ----------
    mosaic : ndarray (H, W)
        Bayer mosaic in normalised units (``(dn - black) / (white - black)``).
    pattern : str
        CFA pattern (``RGGB``, ...).
    lo, hi : float or 4 floats
        Clipping bounds (per plane ``R, Gr, Gb, B``).
    scene : {"auto", "chart", "natural"}
        ``chart`` uses flat regions (gray-chart patches) as level sets; ``natural`` Foi's
        wavelet level sets; ``auto`` picks ``chart`` when
        :func:`dpcal.noise.chart.detect_flat_regions` finds a chart.
    valid : ndarray (H, W) of bool, optional
        False at defect pixels.
    planes : tuple of str
        Which planes to fit.
    refine : bool
        Redo the wavelet selection once with the fitted curve.

    Returns
    -------
    dict plane -> NoiseFit

    Raises
    ------
    FitError
        When a plane's fit is undetermined (the message names the plane).

    Examples
    --------
    >>> from dpcal.testing.captures import gray_chart, synthetic_capture
    >>> clean, _ = gray_chart(256, 384, np.linspace(0.05, 0.95, 12))
    >>> dn = synthetic_capture(clean, "RGGB", 2e-3, 5e-3, black_level=0, white_level=4095, rng=1)
    >>> fits = fit_noise_single(dn / 4095.0, "RGGB")
    >>> bool(abs(fits["Gr"].alpha / 2e-3 - 1) < 0.1)
    True
    """
    P = split_planes(np.asarray(mosaic, dtype=np.float32), pattern)
    V = split_planes(valid, pattern) if valid is not None else None
    lo4 = np.broadcast_to(np.asarray(lo, dtype=np.float64), (4,))
    hi4 = np.broadcast_to(np.asarray(hi, dtype=np.float64), (4,))
    collected = CaptureSets(planes)
    collected.add(P, lo4, hi4, scene=scene, valid=V)
    return collected.fit(refine=refine)


class CaptureSets:
    """Level sets of one or more captures (e.g. several charts at one ISO), pooled per plane."""

    def __init__(self, planes: tuple[str, ...] = PLANES):
        self.planes = tuple(planes)
        self.sets: dict[str, list[LevelSets]] = {p: [] for p in self.planes}
        self.wavelets: dict[str, list[tuple[WaveletPlane, LevelSets, tuple, int]]] = {p: [] for p in self.planes}
        self.infos: list[dict] = []

    def add(self, P: np.ndarray, lo4, hi4, *, scene: str = "auto", valid: np.ndarray | None = None) -> dict:
        """Add a capture given as planes ``(4, h, w)``; returns its info (scene, chart summary)."""
        if scene not in ("auto", "chart", "natural"):
            raise ValueError(f"scene must be auto, chart or natural, got {scene!r}")
        source = len(self.infos)
        idx = [PLANES.index(p) for p in self.planes]
        wps = {i: WaveletPlane(P[i], lo4[i], hi4[i], valid=None if valid is None else valid[i]) for i in idx}
        curves = {i: wps[i].prelim_curve() for i in idx}
        info: dict = {"source": source}
        use_chart = False
        if scene in ("auto", "chart"):
            regions = chart.detect_flat_regions(P, curves, lo4, hi4, valid=valid)
            use_chart = regions.is_chart if scene == "auto" else regions.n_regions > 0
            info["chart"] = regions.summary()
            if scene == "chart" and regions.n_patches < chart.MIN_PATCHES:
                # A photo has a few flat areas (sky, walls) but not the patches of a chart.
                raise FitError(f"no gray chart found: {regions.n_patches} flat patch(es), a chart has at least "
                               f"{chart.MIN_PATCHES}; for a photo use `scene=natural` (or `scene=auto`)",
                               param="scene")
        if use_chart:
            info["scene"] = "chart"
            geo = chart.RegionSets(regions, P.shape[-2:])
            for i in idx:
                s = geo.levelsets(P[i], wps[i].A, wps[i].D, lo4[i], hi4[i],
                                  valid=None if valid is None else valid[i], source=source)
                self.sets[PLANES[i]].append(s)
        else:
            info["scene"] = "natural"
            info["smooth_fraction"] = {}
            for i in idx:
                s, frac = wps[i].levelsets(curves[i], source=source)
                self.sets[PLANES[i]].append(s)
                self.wavelets[PLANES[i]].append((wps[i], s, curves[i], source))
                info["smooth_fraction"][PLANES[i]] = round(frac, 4)
        self.infos.append(info)
        return info

    def fit(self, *, refine: bool = True, what: str = "", prnu: str = "auto") -> dict[str, NoiseFit]:
        """Fit every plane (``prnu``: the ``c y^2`` term, see :mod:`dpcal.noise.prnu`);
        raises FitError naming the plane that fails."""
        from dpcal.noise.prnu import fit_levelsets_prnu, fit_quadratic, pool_greens

        pooled = {name: LevelSets.concat(self.sets[name]) for name in self.planes}
        quads = pool_greens({name: fit_quadratic(pooled[name]) for name in self.planes}) if prnu != "off" else {}
        out = {}
        for name in self.planes:
            label = f"{what} plane {name}".strip()
            fit = fit_levelsets_prnu(pooled[name], prnu=prnu, what=label, quad=quads.get(name))
            if refine and self.wavelets[name]:
                fit = self._refine(name, fit, label, prnu)
            fit.plane = name
            scenes = sorted({i["scene"] for i in self.infos})
            fit.extra["scene"] = scenes[0] if len(scenes) == 1 else "mixed"
            out[name] = fit
        return out

    def _refine(self, name: str, fit: NoiseFit, label: str, prnu: str = "auto") -> NoiseFit:
        """Redo the wavelet selection with the fitted curve (texture admitted by a loose
        preliminary curve is rejected) and refit; skipped when the preliminary curve was
        already within 5 % of the fit over the data.

        The thresholds use the lower of the fitted and the preliminary curve at each level:
        a fit pulled up by texture must not loosen the selection that let the texture in.
        """
        parts = [s for s in self.sets[name]]
        changed = False
        for wp, old, prelim, source in self.wavelets[name]:
            curve = fitted_curve_points(fit, wp.lo, wp.hi)
            lv = old.level if len(old) else np.array([0.5 * (wp.lo + wp.hi)])
            ratio = np.interp(lv, *prelim) / np.maximum(np.interp(lv, *curve), 1e-30)
            if np.all(np.abs(ratio - 1) < 0.05):
                continue
            # Outside the preliminary curve's level range it is extrapolated flat: keep the fit there.
            inside = (curve[0] >= prelim[0][0]) & (curve[0] <= prelim[0][-1])
            curve = (curve[0], np.where(inside, np.minimum(curve[1], np.interp(curve[0], *prelim)), curve[1]))
            new, _ = wp.levelsets(curve, source=source)
            parts = [new if p is old else p for p in parts]
            changed = True
        if not changed:
            return fit
        from dpcal.noise.prnu import fit_levelsets_prnu

        try:
            return fit_levelsets_prnu(LevelSets.concat(parts), prnu=prnu, what=label, start=(fit.alpha, fit.b))
        except FitError:
            return fit  # the refined selection left too little data: keep the first fit
