"""Maximum-likelihood fit of ``sigma^2(y) = a y + b`` to level sets (Foi 2008/2009).

For a level set ``i`` with sample mean ``y_i``, unbiased sample std ``s_i`` and sampling
variances ``c_i sigma^2``, ``d_i sigma^2``, the observation model with clipping is

``y_i ~ N(E(t_i), c_i std(t_i)^2)``,  ``s_i ~ N(std(t_i), d_i std(t_i)^2)``

where ``t_i`` is the set's unknown true level, ``E`` and ``std`` the clipped-normal moments
(:mod:`dpcal.physics.clipped`) of ``N(t, a t + b)`` clipped to the capture's bounds. Each
``t_i`` is integrated out under a uniform prior (the marginal likelihood of Foi et al.): for
sets far from both bounds ``E(t) = t`` and the integral reduces to the density of ``s_i`` at
``t = y_i``; for sets near a bound it is computed by quadrature around the level whose clipped
mean is ``y_i``. A Gaussian-Cauchy mixture replaces the Gaussian density of ``s_i`` so that
textured sets (``s_i`` inflated by signal) lose their pull. The optimisation starts from a
robust weighted least-squares fit on unclipped sets and ends with Nelder-Mead.

Uncertainty comes from the curvature of the likelihood (Gauss-Newton information of the
inlier sets), inflated by the reduced chi-square when the data scatter more than the model
allows; the goodness of fit reports that chi-square, the inlier share and the relative scatter.

References
----------
A. Foi, M. Trimeche, V. Katkovnik, K. Egiazarian, "Practical Poissonian-Gaussian noise
modeling and fitting for single-image raw-data", IEEE TIP 17(10), 2008.
A. Foi, "Clipped noisy images: heteroskedastic modeling and practical denoising", Signal
Processing 89(12), 2009.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from dpcal.errors import FitError
from dpcal.noise.levelsets import LevelSets, has_block, n_blocks
from dpcal.physics.clipped import clipped_curve, clipped_mean_slope, clipped_mean_std, noise_std, poisson_skew
from dpcal.physics.clipped import invert_clipped_mean as _invert

#: share of the Cauchy (outlier) component in the robust likelihood
ROBUST_EPS = 0.05
#: quadrature nodes (in units of the posterior width of the true level) for clipped sets
_NODES = np.linspace(-6.0, 6.0, 13)
_LOG2PI = math.log(2 * math.pi)
#: sets farther than this many (observed) std from both clipping bounds are treated as unclipped
INTERIOR_STD = 5.0


@dataclasses.dataclass
class NoiseFit:
    """Result of a Poisson-Gaussian fit of one plane (normalised [0, 1] units).

    Attributes
    ----------
    alpha, sigma : float
        Poisson scale ``a`` and Gaussian std ``sqrt(b)`` (``sigma = 0`` when ``b < 0``).
    alpha_std, sigma_std, b, b_std : float
        One-sigma uncertainties and Foi's ``b`` with its uncertainty.
    cov : ndarray (2, 2)
        Covariance of ``(a, b)``.
    gof : dict
        Goodness of fit: ``chi2_red``, ``inlier_fraction``, ``n_sets``, ``n_inliers``,
        ``rel_scatter`` (robust relative scatter of ``s_i`` about the fitted curve),
        ``level_range``.
    sets : LevelSets
        The sets used, with ``weights`` (posterior inlier probability) and ``fitted_std``
        (clipped model std at each set's level).
    """

    alpha: float
    sigma: float
    alpha_std: float
    sigma_std: float
    b: float
    b_std: float
    cov: np.ndarray
    gof: dict
    sets: LevelSets
    weights: np.ndarray
    fitted_std: np.ndarray
    plane: str | None = None
    iso: float | None = None
    method: str = "single"
    extra: dict = dataclasses.field(default_factory=dict)

    def __bool__(self) -> bool:  # a NoiseFit is always a success; failures raise FitError
        return True

    def sigma_curve(self, y) -> np.ndarray:
        """Unclipped noise std ``sqrt(alpha y + b)`` at levels ``y``."""
        return noise_std(y, self.alpha, self.b, floor=0.0)

    def to_dict(self) -> dict:
        """The JSON row of this fit (the interface of ``dpcal fit-noise --json``)."""
        d = {
            "iso": self.iso,
            "plane": self.plane,
            "alpha": self.alpha,
            "sigma": self.sigma,
            "alpha_std": self.alpha_std,
            "sigma_std": self.sigma_std,
            "b": self.b,
            "b_std": self.b_std,
            "corr_ab": float(self.cov[0, 1] / math.sqrt(self.cov[0, 0] * self.cov[1, 1]))
            if self.cov[0, 0] > 0 and self.cov[1, 1] > 0
            else None,
            "method": self.method,
            "gof": self.gof,
        }
        d.update(self.extra)
        return d


def _sigma_from_b(b: float, b_std: float) -> tuple[float, float]:
    """``sigma = sqrt(b)`` and its std; near ``b = 0`` the delta method fails, use sqrt(b_std)."""
    sigma = math.sqrt(b) if b > 0 else 0.0
    if b_std <= 0 or not math.isfinite(b_std):
        return sigma, float("nan")
    if b >= b_std / 4:
        return sigma, b_std / (2 * sigma)
    return sigma, math.sqrt(b_std)


def wls_start(level, std, d, interior) -> tuple[float, float]:
    """Robust weighted least squares of ``s^2 = a y + b`` on unclipped sets (the ML start).

    ``var(s_i^2) ~ 4 d_i sigma_i^4``; Cauchy reweighting (3 IRLS rounds) limits textured sets.
    """
    from dpcal.noise.prnu import variance_wls

    y, s2, dd = level[interior], std[interior] ** 2, d[interior]
    if len(y) < 3 or np.ptp(y) <= 0:
        y, s2, dd = level, std**2, d
    try:
        a, b = variance_wls(y, s2, dd, 2)[0]
    except np.linalg.LinAlgError:
        a, b = 0.0, float(np.median(s2))
    if not (np.isfinite(a) and a > 0):
        med_s2, med_y = float(np.median(s2)), float(np.median(np.abs(y)))
        a = 0.5 * med_s2 / max(med_y, 1e-3)
        b = 0.5 * med_s2
    return float(a), float(b)


class _Likelihood:
    """Negative log marginal likelihood of (a, b) over a fixed collection of level sets."""

    def __init__(self, sets: LevelSets, eps: float):
        self.s = sets
        self.eps = eps
        # Fixed (parameter-independent) split so that the likelihood stays smooth in (a, b).
        room = np.minimum(sets.level - sets.lo, sets.hi - sets.level)
        # Beyond 5 std from both bounds clipping changes the moments by < 1e-6 (relative).
        self.interior = room > INTERIOR_STD * sets.std
        self.edge = ~self.interior
        self.log_eps = math.log(eps) if eps > 0 else -np.inf
        self.log_1me = math.log1p(-eps)
        self._t_edge = sets.level[self.edge].copy()  # warm start of the level inversion

    def _log_r(self, s_obs, sd, d):
        """log of the robust density of the observed std ``s_obs`` given model std ``sd``."""
        scale = np.sqrt(d) * sd
        z = (s_obs - sd) / scale
        lg = -0.5 * z * z - np.log(scale) - 0.5 * _LOG2PI
        if self.eps <= 0:
            return lg
        lc = -np.log(np.pi * scale) - np.log1p(z * z)
        return np.logaddexp(self.log_1me + lg, self.log_eps + lc)

    def __call__(self, a: float, b: float) -> float:
        if not (a > 0 and np.isfinite(a) and np.isfinite(b)):
            return np.inf
        s = self.s
        total = 0.0
        # Interior sets: clipping is irrelevant, E(t) = t and the integral over t collapses.
        i = self.interior
        if i.any():
            sd = noise_std(s.level[i], a, b, floor=1e-300)
            if np.any(a * s.level[i] + b <= 0):
                return np.inf
            total += float(np.sum(self._log_r(s.std[i], sd, s.d[i])))
        e = self.edge
        if e.any():
            lo, hi, yo, so, c, d = s.lo[e], s.hi[e], s.level[e], s.std[e], s.c[e], s.d[e]
            t0 = _invert(yo, a, b, lo, hi, iters=12, start=self._t_edge)
            if np.all(np.isfinite(t0)):
                self._t_edge = t0
            s0 = noise_std(t0, a, b, floor=1e-24)
            _, sd0 = clipped_mean_std(t0, s0, lo, hi, poisson_skew(t0, a, s0))
            slope = np.maximum(clipped_mean_slope(t0, s0, a / (2 * s0), lo, hi), 1e-4)
            width = np.sqrt(c) * np.maximum(sd0, 1e-12) / slope
            width = np.minimum(width, 0.5 * (hi - lo))
            tk = t0[:, None] + width[:, None] * _NODES[None, :]
            sk = noise_std(tk, a, b, floor=1e-24)
            mk, sdk = clipped_mean_std(tk, sk, lo[:, None], hi[:, None], poisson_skew(tk, a, sk))
            sdk = np.maximum(sdk, 1e-12)
            sc = np.sqrt(c)[:, None] * sdk
            ly = -0.5 * ((yo[:, None] - mk) / sc) ** 2 - np.log(sc) - 0.5 * _LOG2PI
            lr = self._log_r(so[:, None], sdk, d[:, None])
            lk = ly + lr
            mx = lk.max(axis=1)
            dt = width * (_NODES[1] - _NODES[0])
            total += float(np.sum(mx + np.log(np.sum(np.exp(lk - mx[:, None]), axis=1)) + np.log(dt)))
        return -total if np.isfinite(total) else np.inf


def fit_levelsets(
    sets: LevelSets,
    *,
    robust: bool = True,
    eps: float = ROBUST_EPS,
    min_sets: int = 6,
    max_rel_alpha_std: float = 0.5,
    what: str = "",
    start: tuple[float, float] | None = None,
) -> NoiseFit:
    """Fit ``sigma^2(y) = a y + b`` to level sets by robust marginal maximum likelihood.

    Parameters
    ----------
    sets : LevelSets
        Per-set statistics (see :mod:`dpcal.noise.levelsets`).
    robust : bool
        Use the Gaussian-Cauchy mixture (``eps``) for the sets' standard deviations.
    eps : float
        Outlier share of the mixture.
    min_sets : int
        Refuse the fit with fewer usable sets.
    max_rel_alpha_std : float
        Refuse the fit when ``alpha_std / alpha`` exceeds this (alpha undetermined).
    what : str
        Name of the data for error messages (e.g. ``"ISO 400 plane Gr"``).
    start : (a, b), optional
        Starting point (else a robust weighted least-squares fit).

    Returns
    -------
    NoiseFit

    Raises
    ------
    FitError
        Too few usable sets, a non-positive alpha, or an undetermined alpha.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = np.linspace(0.05, 0.95, 40); n = np.full(40, 4000.0)
    >>> true = np.sqrt(2e-3 * y + 1e-5)
    >>> s = true * (1 + rng.standard_normal(40) * np.sqrt(1 / (2 * n)))
    >>> sets = LevelSets(y, s, n, 1 / n, 1 / (2 * n), np.zeros(40), np.ones(40), np.zeros(40, int))
    >>> f = fit_levelsets(sets)
    >>> bool(abs(f.alpha / 2e-3 - 1) < 4 * f.alpha_std / 2e-3)
    True
    """
    from scipy.optimize import minimize

    where = f"{what}: " if what else ""
    ok = (
        np.isfinite(sets.level) & np.isfinite(sets.std) & (sets.std > 0) & (sets.n >= 4)
        & (sets.level > sets.lo) & (sets.level < sets.hi) & (sets.d > 0) & (sets.c > 0)
    )
    # Fully clipped sets (std a tiny share of the range) carry no information.
    ok &= sets.std > 1e-7 * (sets.hi - sets.lo)
    use = sets.select(ok)
    if len(use) < min_sets:
        raise FitError(
            f"{where}only {len(use)} usable level set(s) (need {min_sets}): the capture has too few "
            "flat, unsaturated areas; use a gray chart or a scene with flat regions at several levels"
        )
    like = _Likelihood(use, eps if robust else 0.0)
    room = np.minimum(use.level - use.lo, use.hi - use.level)
    a0, b0 = wls_start(use.level, use.std, use.d, room > 4 * use.std) if start is None else start
    span = float(np.median(use.hi - use.lo))
    bs = max(abs(b0), a0 * 0.05 * span, 1e-20)

    def f(th):
        return like(math.exp(th[0]), th[1] * bs)

    th0 = np.array([math.log(a0), b0 / bs])
    simplex = np.array([th0, th0 + [0.1, 0.0], th0 + [0.0, 0.5 if b0 >= 0 else -0.5]])
    best = None
    for _ in range(2):  # a restart from the optimum guards against a collapsed simplex
        res = minimize(f, th0, method="Nelder-Mead",
                       options={"initial_simplex": simplex, "xatol": 1e-5, "fatol": 1e-4, "maxiter": 600})
        if best is None or res.fun <= best.fun:
            best = res
        if res.success and res.nit > 5:
            break
        th0 = best.x
        simplex = np.array([th0, th0 + [0.02, 0.0], th0 + [0.0, 0.1]])
    if not np.isfinite(best.fun):
        raise FitError(f"{where}the likelihood is not finite anywhere near the start; the level sets are inconsistent")
    a, b = math.exp(best.x[0]), float(best.x[1] * bs)

    cov, chi2, w, sd, t = _covariance(use, a, b, like.eps)
    n_in = float(w.sum())
    rel = (use.std - sd) / sd
    gof = {
        "chi2_red": chi2,
        "inlier_fraction": n_in / len(use),
        "n_sets": int(len(use)),
        "n_inliers": int(round(n_in)),
        "rel_scatter": float(1.4826 * np.median(np.abs(rel - np.median(rel)))),
        "level_range": [float(use.level.min()), float(use.level.max())],
    }
    a_std, b_std = math.sqrt(max(cov[0, 0], 0.0)), math.sqrt(max(cov[1, 1], 0.0))
    gof["alpha_std_curvature"] = a_std
    jk = _jackknife(use, a, b, like.eps) if use.parts is not None else None
    if jk is not None:
        # Spatial heterogeneity (shading, texture, processing) shows up as disagreement between
        # image blocks: keep the larger of the two uncertainties, with the curvature correlation.
        gof["alpha_std_jackknife"], gof["b_std_jackknife"] = jk
        fa = max(1.0, jk[0] / a_std) if a_std > 0 else 1.0
        fb = max(1.0, jk[1] / b_std) if b_std > 0 else 1.0
        cov = cov * np.outer([fa, fb], [fa, fb])
        a_std, b_std = a_std * fa, b_std * fb
    if not (a > 0 and np.isfinite(a)):
        raise FitError(f"{where}the fitted Poisson scale is not positive; the data show no signal-dependent noise")
    if n_in < min_sets:
        raise FitError(
            f"{where}only {n_in:.0f} level sets agree with the Poisson-Gaussian model (of {len(use)}): the "
            "scene is too textured; use a gray chart or flatter regions"
        )
    if not np.isfinite(a_std) or a_std > max_rel_alpha_std * a:
        lr = gof["level_range"]
        raise FitError(
            f"{where}alpha is undetermined (relative uncertainty {a_std / a:.0%}): usable levels only span "
            f"{lr[0]:.3f}..{lr[1]:.3f} of the range; capture flat areas from dark to near white"
        )
    sigma, sigma_std = _sigma_from_b(b, b_std)
    return NoiseFit(
        alpha=a, sigma=sigma, alpha_std=a_std, sigma_std=sigma_std, b=b, b_std=b_std, cov=cov, gof=gof,
        sets=use, weights=w, fitted_std=sd,
    )


def _jackknife(sets: LevelSets, a: float, b: float, eps: float) -> tuple[float, float] | None:
    """Delete-one-block jackknife std of (a, b) by one Gauss-Newton step per replicate.

    Blocks are the spatial cells of :func:`dpcal.noise.levelsets.block_index`. Each replicate
    recomputes the sets without one block and moves (a, b) by one Gauss-Newton step of the
    robust likelihood from the full-data optimum (an accurate stand-in for refitting: the
    replicates differ little). Their spread measures how much the estimate depends on which
    part of the image it comes from, which the curvature alone does not see.
    """
    est = []
    for blk in range(n_blocks()):
        if not has_block(sets, blk):
            continue
        s = sets.without_block(blk)
        if len(s) < 3:
            continue
        sd, G, v, w, _ = _gn_terms(s, a, b, eps)
        J = (G * (w / v)[:, None]).T @ G
        g = (G * (w / v)[:, None]).T @ (s.std - sd)
        try:
            est.append(np.array([a, b]) + np.linalg.solve(J, g))
        except np.linalg.LinAlgError:
            continue
    k = len(est)
    if k < 3:
        return None
    e = np.asarray(est)
    var = (k - 1) / k * np.sum((e - e.mean(0)) ** 2, axis=0)
    return float(math.sqrt(var[0])), float(math.sqrt(var[1]))


def _gn_terms(sets: LevelSets, a: float, b: float, eps: float):
    """Model std ``sd``, its gradient ``G`` in (a, b), prediction variance ``v``, robust inlier
    weights ``w`` and fitted true levels ``t`` of each set.

    Each set predicts its std as ``std(t(a, b))`` where ``t`` is the level whose clipped mean is
    the observed mean: near a bound ``t`` itself moves with (a, b), and the observed mean's own
    noise adds ``(d std/dt)^2 var(t)`` to the variance of the prediction.
    """
    lo, hi, yo = sets.lo, sets.hi, sets.level
    room = np.minimum(yo - lo, hi - yo)
    edge = room <= INTERIOR_STD * sets.std

    def levels(aa, bb):
        tt = yo.copy()
        if edge.any():
            tt[edge] = _invert(yo[edge], aa, bb, lo[edge], hi[edge])
        return tt

    def pred(aa, bb):
        return clipped_curve(levels(aa, bb), aa, bb, lo, hi)[1]

    t = levels(a, b)
    sd = np.maximum(clipped_curve(t, a, b, lo, hi)[1], 1e-300)
    ha = 1e-4 * a
    hb = 1e-4 * max(abs(b), a * 1e-2 * float(np.median(hi - lo)), 1e-24)
    ga = (pred(a + ha, b) - pred(a - ha, b)) / (2 * ha)
    gb = (pred(a, b + hb) - pred(a, b - hb)) / (2 * hb)
    s0 = noise_std(t, a, b, floor=1e-24)
    ht = 1e-3 * s0
    dsd = (clipped_curve(t + ht, a, b, lo, hi)[1] - clipped_curve(t - ht, a, b, lo, hi)[1]) / (2 * ht)
    dE = np.maximum(clipped_mean_slope(t, s0, a / (2 * s0), lo, hi), 1e-4)
    v = sets.d * sd**2 + (dsd / dE) ** 2 * sets.c * sd**2
    if eps > 0:
        z = (sets.std - sd) / (np.sqrt(sets.d) * sd)
        lg = math.log1p(-eps) - 0.5 * z * z - 0.5 * _LOG2PI
        lc = math.log(eps) - math.log(math.pi) - np.log1p(z * z)
        w = np.exp(lg - np.logaddexp(lg, lc))
    else:
        w = np.ones(len(sd))
    return sd, np.stack([ga, gb], 1), v, w, t


def _covariance(sets: LevelSets, a: float, b: float, eps: float) -> tuple[np.ndarray, float, np.ndarray, np.ndarray, np.ndarray]:
    """Gauss-Newton covariance of (a, b) from the inlier sets, inflated by chi2_red if > 1.

    Returns ``(cov, chi2_red, w, sd, t)``.
    """
    sd, G, v, w, t = _gn_terms(sets, a, b, eps)
    J = (G * (w / v)[:, None]).T @ G
    r2 = (sets.std - sd) ** 2 / v
    dof = max(float(w.sum()) - 2.0, 1.0)
    chi2 = float(np.sum(w * r2) / dof)
    try:
        cov = np.linalg.inv(J)
    except np.linalg.LinAlgError:
        cov = np.full((2, 2), np.inf)
    return cov * max(1.0, chi2), chi2, w, sd, t
