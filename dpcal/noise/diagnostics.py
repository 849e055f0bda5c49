"""Honesty checks of a noise fit: what the numbers cannot be trusted for, and why.

A fit always returns numbers; these checks say when they should not be believed. Each
finding is a dict ``{"code", "plane", "message", ...}`` (``plane`` None for the whole ISO):

* ``negative_read_variance``: ``b`` below zero by more than :data:`Z` of its std. Read
  noise cannot be negative: the black level subtracted is too low (a pedestal of at least
  ``-b / alpha`` in DN remains), or the variance bends upwards (PRNU, texture).
* ``green_mismatch``: Gr and Gb disagree beyond :data:`Z` combined std; one sensor, one
  filter colour: the error bars miss something (texture, crosstalk, a processed file).
* ``residual_trend``: the relative residuals of the level sets trend with intensity beyond
  :data:`Z` std: the model misses a component (PRNU or texture, nonlinearity, a black
  level error).
* ``prnu_unmodelled``: the variance grows faster than linear (significant ``c y^2``) while
  ``--prnu off``.
* ``textured``: the signal-proportional component exceeds :data:`TEXTURE_LIMIT` of the
  signal: the flat areas are not flat (a PSF noise chart, fabric, coarse paper), so alpha
  is not a sensor property.
* ``uncertain``: alpha's relative uncertainty exceeds :data:`MAX_REL_STD`.
* ``narrow_levels``: the level sets span less than :data:`MIN_SPAN` of the range: alpha and
  sigma rest on extrapolation.
* ``black_unknown``: the file carries no black level and none was given (0 assumed).
"""

from __future__ import annotations

import math

import numpy as np

#: significance (std) of a finding
Z = 3.0
#: a signal-proportional component above this share of the signal is texture, not PRNU
TEXTURE_LIMIT = 0.03
#: largest relative uncertainty of alpha reported without a finding
MAX_REL_STD = 0.2
#: smallest span of levels (share of the clipping range) for a trustworthy fit
MIN_SPAN = 0.25


def _finding(code: str, plane: str | None, message: str, **kw) -> dict:
    return {"code": code, "plane": plane, "message": message, **kw}


def residual_trend(fit) -> tuple[float, float]:
    """Slope of the relative residuals ``s / fitted - 1`` of the inlier sets against level,
    and its significance (``z``), with the residual scatter's own size as the error scale.

    Examples
    --------
    >>> from types import SimpleNamespace as NS
    >>> y = np.linspace(0.1, 0.9, 50)
    >>> sets = NS(level=y, std=1.0 + 0.2 * y, d=np.full(50, 1e-4))
    >>> slope, z = residual_trend(NS(sets=sets, fitted_std=np.ones(50), weights=np.ones(50)))
    >>> round(slope, 3), z > 10
    (0.2, True)
    """
    s = fit.sets
    w0 = np.asarray(fit.weights, dtype=np.float64)
    ok = (w0 > 0.5) & np.isfinite(s.std) & (np.asarray(fit.fitted_std) > 0)
    if ok.sum() < 6 or np.ptp(s.level[ok]) <= 0:
        return 0.0, 0.0
    y = s.level[ok]
    r = s.std[ok] / np.asarray(fit.fitted_std)[ok] - 1.0
    w = 1.0 / np.maximum(s.d[ok], 1e-12)
    X = np.stack([y - np.average(y, weights=w), np.ones_like(y)], 1)
    sw = np.sqrt(w)
    coef, *_ = np.linalg.lstsq(X * sw[:, None], r * sw, rcond=None)
    res = r - X @ coef
    chi2 = float(np.sum(w * res**2) / max(len(y) - 2, 1))
    var = np.linalg.inv((X * w[:, None]).T @ X)[0, 0] * max(chi2, 1.0)
    se = math.sqrt(max(var, 1e-300))
    return float(coef[0]), float(coef[0] / se)


def check_fits(fits: dict, *, scale_dn: float | None = None, prnu: str = "auto", black_known: bool = True) -> list[dict]:
    """All findings for one ISO's per-plane fits (:class:`dpcal.noise.fit.NoiseFit`).

    Parameters
    ----------
    fits : dict plane -> NoiseFit
    scale_dn : float, optional
        ``white - black`` in DN (to state a pedestal in DN).
    prnu : str
        The ``--prnu`` mode the fits used.
    black_known : bool
        Whether the black level came from the file, the user or dark frames.
    """
    out: list[dict] = []
    if not black_known:
        out.append(_finding("black_unknown", None,
                            "the file carries no black level and none was given: 0 is assumed; pass --black "
                            "(the camera's black level) or a dark frame (--dark)"))
    for name, f in fits.items():
        b_std = f.b_std if math.isfinite(f.b_std) and f.b_std > 0 else math.inf
        if f.b < -Z * b_std:
            ped = -f.b / f.alpha  # normalised units
            msg = (f"{name}: the read-noise variance b = {f.b:.3g} is negative by {-f.b / b_std:.1f} std; the black "
                   f"level is probably too low by at least {ped * scale_dn:.3g} DN" if scale_dn else
                   f"{name}: the read-noise variance b = {f.b:.3g} is negative by {-f.b / b_std:.1f} std; the black "
                   f"level is probably too low by at least {ped:.3g} of the range")
            msg += (" (a pedestal: pass --black or a dark frame, --dark), or the variance bends upwards "
                    "(texture, PRNU: --prnu on); sigma is reported as 0")
            out.append(_finding("negative_read_variance", name, msg, pedestal_min=ped,
                                pedestal_min_dn=None if scale_dn is None else ped * scale_dn))
        slope, z = residual_trend(f)
        if abs(z) > Z:
            out.append(_finding("residual_trend", name,
                                f"{name}: the level sets' residuals trend with intensity ({slope:+.1%} of the noise "
                                f"across the range, {z:+.1f} std): the model misses part of the noise (PRNU or "
                                "texture, nonlinearity, a wrong black level)", slope=slope, z=z))
        c, cz = f.extra.get("prnu_c"), f.extra.get("prnu_z")
        if prnu == "off" and c is not None and c > 0 and cz is not None and cz > Z:
            out.append(_finding("prnu_unmodelled", name,
                                f"{name}: the variance grows faster than linear (a {math.sqrt(c):.1%} signal-proportional "
                                f"component, {cz:.1f} std): use --prnu auto", prnu=math.sqrt(c)))
        p = f.extra.get("prnu")
        if p is not None and cz is not None and cz > Z and p > TEXTURE_LIMIT:
            out.append(_finding("textured", name,
                                f"{name}: the flat areas vary by {p:.1%} of the signal beyond the noise: they are "
                                "textured (not a gray chart? a PSF noise chart, fabric, coarse paper); alpha is "
                                "uncertain; use a gray chart or frame pairs (--method pairs)", prnu=p))
        if f.alpha > 0 and f.alpha_std > MAX_REL_STD * f.alpha:
            out.append(_finding("uncertain", name,
                                f"{name}: alpha is uncertain (± {f.alpha_std / f.alpha:.0%}): too little of the capture "
                                "follows the noise model (texture, too few flat areas); a rough estimate at best"))
        lr = f.gof.get("level_range")
        span = float(np.median(f.sets.hi - f.sets.lo)) if len(f.sets) else 1.0
        if lr and (lr[1] - lr[0]) < MIN_SPAN * span:
            out.append(_finding("narrow_levels", name,
                                f"{name}: the usable levels span only {lr[0]:.3f}..{lr[1]:.3f}: alpha and sigma rest "
                                "on extrapolation; capture flat areas from dark to near white"))
    gr, gb = fits.get("Gr"), fits.get("Gb")
    if gr is not None and gb is not None:
        se = math.hypot(gr.alpha_std, gb.alpha_std)
        if se > 0 and abs(gr.alpha - gb.alpha) > Z * se:
            out.append(_finding("green_mismatch", None,
                                f"Gr and Gb disagree: alpha {gr.alpha:.4g} and {gb.alpha:.4g} differ by "
                                f"{abs(gr.alpha - gb.alpha) / se:.1f} combined std ({gr.alpha / gb.alpha - 1:+.0%}); "
                                "the error bars miss part of the uncertainty (texture, processing, crosstalk)",
                                z=abs(gr.alpha - gb.alpha) / se))
    return out


def scene_summary(infos: list[dict], fits: dict) -> str:
    """One line for people: the scene kind(s) and the level range covered.

    Examples
    --------
    >>> from types import SimpleNamespace as NS
    >>> f = NS(gof={"level_range": [0.031, 0.91]})
    >>> scene_summary([{"scene": "chart", "chart": {"patches": 22, "background_regions_ignored": 3}}], {"R": f})
    'chart (22 patches used, 3 background regions ignored); levels 0.031..0.910 of the range'
    """
    parts = []
    for i in infos:
        if i.get("scene") == "chart":
            ch = i.get("chart", {})
            s = f"chart ({ch.get('patches', '?')} patches used"
            if ch.get("background_regions_ignored"):
                s += f", {ch['background_regions_ignored']} background regions ignored"
            parts.append(s + ")")
        elif i.get("scene") == "natural":
            sf = i.get("smooth_fraction") or {}
            frac = min(sf.values()) if sf else None
            parts.append("natural scene" + (f" ({frac:.0%} of it smooth enough)" if frac is not None else ""))
        elif i.get("kind"):
            parts.append(str(i["kind"]))
    lrs = [f.gof.get("level_range") for f in fits.values() if f.gof.get("level_range")]
    kinds = sorted(set(parts)) if len(parts) > 1 else parts
    s = "; ".join(kinds) or "?"
    if lrs:
        s += f"; levels {min(r[0] for r in lrs):.3f}..{max(r[1] for r in lrs):.3f} of the range"
    return s


def inflate_for_green_mismatch(fits: dict) -> float:
    """Scale every plane's uncertainties by the Birge ratio of the two greens when they
    disagree beyond 2 combined std (they measure one quantity: their spread is a direct
    measure of the error the statistics miss). Returns the factor (1 when consistent);
    records it as ``extra["std_inflation"]``.

    Examples
    --------
    >>> from types import SimpleNamespace as NS
    >>> mk = lambda a: NS(alpha=a, alpha_std=1.0, b_std=1.0, sigma_std=1.0, cov=np.eye(2), extra={})
    >>> fits = {"Gr": mk(100.0), "Gb": mk(110.0)}
    >>> round(inflate_for_green_mismatch(fits), 3), round(fits["Gr"].alpha_std, 3)
    (3.536, 3.536)
    """
    gr, gb = fits.get("Gr"), fits.get("Gb")
    if gr is None or gb is None:
        return 1.0
    se = math.hypot(gr.alpha_std, gb.alpha_std)
    if not se > 0 or abs(gr.alpha - gb.alpha) <= 2.0 * se:
        return 1.0
    k = abs(gr.alpha - gb.alpha) / (2.0 * se)
    for f in fits.values():
        f.alpha_std *= k
        f.b_std *= k
        f.sigma_std *= k
        f.cov = f.cov * k * k
        f.extra["std_inflation"] = k
    return k
