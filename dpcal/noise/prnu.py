"""A noise variance that grows with the square of the signal: PRNU and texture.

A single capture's flat areas vary by more than shot and read noise: photo-response
non-uniformity (each pixel's gain differs by about 1 %), a chart's print texture and paper
grain all scale with the signal, adding ``c y^2`` to the variance::

    sigma^2(y) = a y + b + c y^2,       prnu = sqrt(c)  (relative std of the fixed pattern)

Fitted with the line alone, the curvature lifts ``a`` and pushes ``b`` below zero (on a real
ColorChecker capture by 25-50 % and to a seemingly negative read noise). A frame pair does
not see the term (it cancels in the difference); a single capture needs it modelled.

:func:`fit_quadratic` estimates ``(a, b, c)`` by robust weighted least squares on the sets away
from the clipping bounds, with a delete-one-block jackknife for the uncertainty (spatial
heterogeneity widens it honestly); :func:`remove_quadratic` takes ``c y^2`` out of the sets'
variances so that the clipped maximum-likelihood fit of ``(a, b)`` runs unchanged.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from dpcal.noise.levelsets import LevelSets

#: sets closer than this many std to a clipping bound are left to the clipped model
INTERIOR_STD = 5.0
#: significance (in std) at which ``--prnu auto`` adopts the term
AUTO_Z = 3.0


@dataclasses.dataclass
class Quadratic:
    """``sigma^2(y) = a y + b + c y^2`` with one-sigma uncertainties (normalised units)."""

    a: float
    b: float
    c: float
    a_std: float
    b_std: float
    c_std: float
    n_sets: int
    #: sensitivity of ``a`` and ``b`` to ``c`` (for propagating the uncertainty of ``c``)
    da_dc: float = 0.0
    db_dc: float = 0.0

    @property
    def z(self) -> float:
        """Significance of the quadratic term (``c / c_std``)."""
        return self.c / self.c_std if self.c_std > 0 else (math.inf if self.c > 0 else 0.0)

    @property
    def prnu(self) -> float:
        """Relative std of the signal-proportional component, ``sqrt(max(c, 0))``."""
        return math.sqrt(max(self.c, 0.0))


def _interior(sets: LevelSets) -> np.ndarray:
    room = np.minimum(sets.level - sets.lo, sets.hi - sets.level)
    return (room > INTERIOR_STD * sets.std) & np.isfinite(sets.std) & (sets.std > 0) & (sets.n >= 8)


def variance_wls(y, v, d, cols: int, iters: int = 4):
    """Robust (Cauchy-reweighted) WLS of set variances ``v = a y + b [+ c y^2]`` (``cols`` 2 or
    3), weights ``1 / var(v) = 1 / (4 d v^2)``; returns ``(coef, cov, chi2_red)``."""
    X = np.stack([y, np.ones_like(y), y * y][:cols], 1)
    model = np.maximum(v, 1e-30)
    coef = np.zeros(cols)
    w = np.ones_like(y)
    for it in range(iters):
        var = 4.0 * d * np.maximum(model, 1e-30) ** 2
        w = 1.0 / var
        if it > 0:
            r = (v - model) / np.sqrt(var)
            w = w / (1.0 + (r / 3.0) ** 2)
        sw = np.sqrt(w)
        coef = np.linalg.lstsq(X * sw[:, None], v * sw, rcond=None)[0]
        model = np.maximum(X @ coef, 1e-30)
    r2 = w * (v - X @ coef) ** 2
    chi2 = float(np.sum(r2) / max(len(y) - cols, 1))
    try:
        cov = np.linalg.inv((X * w[:, None]).T @ X) * max(chi2, 1.0)
    except np.linalg.LinAlgError:
        cov = np.full((cols, cols), np.inf)
    return coef, cov, chi2


def fit_quadratic(sets: LevelSets) -> Quadratic | None:
    """``(a, b, c)`` of ``sigma^2 = a y + b + c y^2`` from the unclipped sets, or None when
    fewer than 6 sets or too narrow a level range determine it.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat(np.linspace(0.05, 0.9, 24), 4); n = np.full(y.size, 2000.0)
    >>> s = np.sqrt(2e-4 * y + 1e-6 + 1.2e-4 * y * y) * (1 + rng.standard_normal(y.size) / np.sqrt(2 * n))
    >>> q = fit_quadratic(LevelSets(y, s, n, 1 / n, 1 / (2 * n), np.zeros(y.size), np.ones(y.size),
    ...                             np.zeros(y.size, int), parts={"block": np.arange(y.size) % 8}))
    >>> bool(abs(q.a / 2e-4 - 1) < 3 * q.a_std / 2e-4), bool(abs(q.prnu - 0.011) < 0.002)
    (True, True)
    """
    ok = _interior(sets)
    if ok.sum() < 6:
        return None
    s = sets.select(ok)
    y, v, d = s.level, s.std**2, s.d
    if np.ptp(y) < 0.1 * float(np.median(s.hi - s.lo)):
        return None
    coef, cov, _ = variance_wls(y, v, d, 3)
    std = np.sqrt(np.maximum(np.diag(cov), 0.0))
    blocks = s.parts.get("block") if s.parts else None
    if blocks is not None:
        est = []
        for b in np.unique(blocks):
            keep = blocks != b
            if keep.sum() >= 6 and np.ptp(y[keep]) > 0:
                est.append(variance_wls(y[keep], v[keep], d[keep], 3)[0])
        k = len(est)
        if k >= 3:
            e = np.asarray(est)
            jk = np.sqrt((k - 1) / k * np.sum((e - e.mean(0)) ** 2, axis=0))
            std = np.maximum(std, jk)
    # How a and b move with c held fixed at c +- c_std (for propagating its uncertainty).
    da = db = 0.0
    if std[2] > 0 and np.isfinite(std[2]):
        lin = []
        for cc in (coef[2] - std[2], coef[2] + std[2]):
            lin.append(variance_wls(y, np.maximum(v - cc * y * y, 1e-30), d, 2)[0])
        da = (lin[1][0] - lin[0][0]) / (2 * std[2])
        db = (lin[1][1] - lin[0][1]) / (2 * std[2])
    return Quadratic(float(coef[0]), float(coef[1]), float(coef[2]), float(std[0]), float(std[1]), float(std[2]),
                     int(ok.sum()), float(da), float(db))


def remove_quadratic(sets: LevelSets, c: float) -> LevelSets:
    """The sets with ``c y^2`` taken out of their variance (their std's relative sampling
    variance ``d`` scaled to the smaller std: the absolute uncertainty is unchanged).

    Examples
    --------
    >>> n = np.full(3, 1000.0); y = np.array([0.2, 0.5, 0.8])
    >>> s = LevelSets(y, np.sqrt(1e-4 * y + 1e-4 * y * y), n, 1 / n, 1 / (2 * n), np.zeros(3), np.ones(3), np.zeros(3, int))
    >>> np.allclose(remove_quadratic(s, 1e-4).std ** 2, 1e-4 * y)
    True
    """
    v = np.maximum(sets.std**2, 1e-300)
    v2 = np.maximum(v - c * sets.level**2, 1e-4 * v)
    out = dataclasses.replace(sets)
    out.std = np.sqrt(v2)
    out.d = sets.d * (v / v2) ** 2
    return out


PRNU_MODES = ("auto", "on", "off")


def pool_greens(quads: dict) -> dict:
    """Gr and Gb share one ``c`` (same filter, same pixel design, same scene texture): their
    inverse-variance mean, when both are determined; the other planes keep their own.

    Examples
    --------
    >>> q = dict(Gr=Quadratic(1, 0, 1.4e-4, 0, 0, 1e-5, 50), Gb=Quadratic(1, 0, 2e-4, 0, 0, 8e-5, 50))
    >>> p = pool_greens(q)
    >>> round(p["Gb"].c / 1e-4, 2) == round(p["Gr"].c / 1e-4, 2) == 1.41, p["Gb"].c_std < 1e-5
    (True, True)
    """
    g = [quads.get("Gr"), quads.get("Gb")]
    if any(q is None or not (q.c_std > 0 and math.isfinite(q.c_std)) for q in g):
        return quads
    w = np.array([1.0 / q.c_std**2 for q in g])
    c = float(np.sum(w * [q.c for q in g]) / w.sum())
    c_std = float(1.0 / math.sqrt(w.sum()))
    out = dict(quads)
    for name, q in zip(("Gr", "Gb"), g):
        out[name] = dataclasses.replace(q, c=c, c_std=c_std)
    return out


def fit_levelsets_prnu(sets: LevelSets, *, prnu: str = "auto", what: str = "", quad: Quadratic | None = None, **kw):
    """:func:`dpcal.noise.fit.fit_levelsets` with the ``c y^2`` term handled per ``prnu``.

    ``off``: the line alone. ``on``: ``c`` from :func:`fit_quadratic` (kept even when not
    significant), removed, then ``(a, b)`` fitted. ``auto``: as ``on`` when ``c`` is positive
    and significant at :data:`AUTO_Z` std, else ``off`` (with some evidence for it, above one
    std, the shift it would cause is added to the uncertainty). The uncertainty of ``c`` is
    propagated into ``alpha_std`` and ``b_std``; with the term modelled the fit's ``sets`` hold the
    variances without it. The fit's ``extra`` records ``prnu`` (``sqrt(c)``),
    ``prnu_c``, ``prnu_c_std``, ``prnu_z`` and ``prnu_modelled``. ``quad`` gives the
    quadratic term (e.g. pooled over the greens by :func:`pool_greens`) instead of fitting it.
    """
    from dpcal.noise.fit import _sigma_from_b, fit_levelsets

    if prnu not in PRNU_MODES:
        raise ValueError(f"prnu must be one of {', '.join(PRNU_MODES)}, got {prnu!r}")
    q = quad if quad is not None else fit_quadratic(sets)
    use = q is not None and (prnu == "on" or (prnu == "auto" and q.c > 0 and q.z >= AUTO_Z))
    if not use:
        fit = fit_levelsets(sets, what=what, **kw)
        if q is not None and prnu == "auto" and q.c > 0 and q.z > 1.0:
            # Some evidence of curvature, short of adopting the term: the data cannot choose
            # between the models, so the shift the term would cause joins the uncertainty.
            shift_a, shift_b = abs(q.da_dc * q.c), abs(q.db_dc * q.c)
            a_std, b_std = math.hypot(fit.alpha_std, shift_a), math.hypot(fit.b_std, shift_b)
            scale = np.array([a_std / fit.alpha_std if fit.alpha_std > 0 else 1.0,
                              b_std / fit.b_std if fit.b_std > 0 else 1.0])
            fit.cov = fit.cov * np.outer(scale, scale)
            fit.alpha_std, fit.b_std = a_std, b_std
            fit.sigma, fit.sigma_std = _sigma_from_b(fit.b, fit.b_std)
            fit.extra["model_uncertainty_alpha"] = shift_a
    else:
        # fit.sets then hold the variances without c y^2 (what the plots and the CSV show).
        fit = fit_levelsets(remove_quadratic(sets, q.c), what=what, **kw)
        a_std = math.hypot(fit.alpha_std, q.da_dc * q.c_std)
        b_std = math.hypot(fit.b_std, q.db_dc * q.c_std)
        scale = np.array([a_std / fit.alpha_std if fit.alpha_std > 0 else 1.0, b_std / fit.b_std if fit.b_std > 0 else 1.0])
        fit.cov = fit.cov * np.outer(scale, scale)
        fit.alpha_std, fit.b_std = a_std, b_std
        fit.sigma, fit.sigma_std = _sigma_from_b(fit.b, fit.b_std)
    fit.extra.update({
        "prnu": None if q is None else q.prnu,
        "prnu_c": None if q is None else q.c,
        "prnu_c_std": None if q is None else q.c_std,
        "prnu_z": None if q is None else q.z,
        "prnu_modelled": bool(use),
    })
    if q is not None:
        fit.extra["quadratic"] = {"a": q.a, "b": q.b, "c": q.c, "a_std": q.a_std, "b_std": q.b_std, "c_std": q.c_std}
    return fit
