"""Noise as a function of ISO and of light level.

Two ISO models are supported, each per CFA plane:

``linear``  (the Dirty Pixels reference code)
    ``alpha(iso) = a1 * iso``, ``sigma(iso) = s1 * iso``.
``cts``  (Android CTS / DNG noise model)
    ``alpha(iso) = A * iso + B``, ``sigma(iso)**2 = C * iso**2 + D``.

The light-level model (REFERENCE.md section 1) maps illuminance to ISO: a light level
``ll = lux / lux_per_light_level`` and ``iso = iso_at_unit_light_level / ll`` (the camera
raises gain to keep brightness). With the reference constants (2000 lux, ISO 100) and the
linear model this gives ``alpha = alpha_iso100 / ll``.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from dpcal.cfa import PLANES
from dpcal.errors import BadInputError, FitError

ISO_MODELS = ("linear", "cts")
PARAM_NAMES = {"linear": ("a1", "s1"), "cts": ("A", "B", "C", "D")}


def iso_from_lux(lux: float, light: Mapping) -> float:
    """ISO the camera uses at illuminance ``lux`` under a profile's light model.

    Examples
    --------
    >>> iso_from_lux(3, {"lux_per_light_level": 2000, "iso_at_unit_light_level": 100})
    66666.66666666667
    """
    lux = float(lux)
    if not lux > 0 or not math.isfinite(lux):
        raise BadInputError(f"lux must be a positive number, got {lux}")
    ll = lux / float(light["lux_per_light_level"])
    return float(light["iso_at_unit_light_level"]) / ll


def eval_iso_model(kind: str, params: Mapping[str, float], iso: float | np.ndarray):
    """Evaluate one plane's ISO model: returns ``(alpha, sigma)``."""
    iso = np.asarray(iso, dtype=float)
    if kind == "linear":
        alpha = params["a1"] * iso
        sigma = params["s1"] * iso
    elif kind == "cts":
        alpha = params["A"] * iso + params["B"]
        sigma = np.sqrt(np.maximum(params["C"] * iso**2 + params["D"], 0.0))
    else:
        raise BadInputError(f"unknown ISO model {kind!r}; use one of {', '.join(ISO_MODELS)}")
    alpha = np.maximum(alpha, 0.0)
    if alpha.ndim == 0:
        return float(alpha), float(sigma)
    return alpha, sigma


def fit_iso_model(
    kind: str,
    iso: Sequence[float],
    alpha: Sequence[float],
    sigma: Sequence[float],
    alpha_std: Sequence[float] | None = None,
    sigma_std: Sequence[float] | None = None,
) -> dict[str, float]:
    """Fit one plane's ISO model to per-ISO estimates (weighted least squares).

    Weights are the inverse variances when uncertainties are given, else relative
    (each ISO's value counts in proportion to itself), so that low and high ISOs matter alike.

    Examples
    --------
    >>> p = fit_iso_model("cts", [100, 200, 400], [1e-4, 2e-4, 4e-4], [1e-3, 1.2e-3, 1.8e-3])
    >>> round(p["A"] * 1e6, 3)
    1.0
    """
    iso = np.asarray(iso, float)
    a = np.asarray(alpha, float)
    s = np.asarray(sigma, float)
    n = len(iso)
    wa = 1.0 / np.asarray(alpha_std, float) if alpha_std is not None else 1.0 / np.maximum(np.abs(a), 1e-30)
    ws = 1.0 / np.asarray(sigma_std, float) if sigma_std is not None else 1.0 / np.maximum(np.abs(s), 1e-30)
    wa = np.where(np.isfinite(wa), wa, 0.0)
    ws = np.where(np.isfinite(ws), ws, 0.0)
    if kind == "linear":
        if n < 1:
            raise FitError("the linear ISO model needs at least one ISO")
        a1 = float(np.sum(wa**2 * a * iso) / np.sum(wa**2 * iso**2))
        s1 = float(np.sum(ws**2 * s * iso) / np.sum(ws**2 * iso**2))
        return {"a1": a1, "s1": s1}
    if kind == "cts":
        if n < 2 or len(np.unique(iso)) < 2:
            raise FitError("the cts ISO model needs at least two different ISOs; use --iso-model linear")
        A, B = _line_nonneg_slope(iso, a, wa)
        # sigma^2 = C iso^2 + D; the weight of s^2 is 1/(2 s std(s)).
        C, D = _line_nonneg_slope(iso**2, s**2, ws / np.maximum(2 * np.abs(s), 1e-30))
        return {"A": A, "B": B, "C": C, "D": D}
    raise BadInputError(f"unknown ISO model {kind!r}; use one of {', '.join(ISO_MODELS)}")


def _line_nonneg_slope(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Weighted least-squares ``y = m x + c`` with ``m >= 0`` (noise never falls with gain)."""
    m, c = np.linalg.lstsq(np.stack([x, np.ones_like(x)], 1) * w[:, None], y * w, rcond=None)[0]
    if m < 0:
        m, c = 0.0, np.sum(w**2 * y) / np.sum(w**2)
    return float(m), float(c)


def interpolate_table(table: list[Mapping], iso: float, plane: str) -> tuple[float, float] | None:
    """Log-log piecewise-linear interpolation of a per-ISO table; None outside its range."""
    rows = sorted(table, key=lambda r: r["iso"])
    isos = np.array([r["iso"] for r in rows], float)
    if len(rows) == 0 or iso < isos[0] or iso > isos[-1]:
        return None
    a = np.array([r["alpha"][plane] for r in rows], float)
    s = np.array([r["sigma"][plane] for r in rows], float)
    if len(rows) == 1:
        return float(a[0]), float(s[0])
    li = np.log(iso)
    la = np.interp(li, np.log(isos), np.log(np.maximum(a, 1e-300)))
    ls = np.interp(li, np.log(isos), np.log(np.maximum(s, 1e-300)))
    return float(np.exp(la)), float(np.exp(ls))


def leave_one_iso_out(kind: str, table: list[Mapping]) -> list[dict]:
    """How well the ISO model predicts each measured ISO when fitted without it.

    Returns one row per (ISO, plane) with predicted and measured values and relative errors.
    """
    rows = sorted(table, key=lambda r: r["iso"])
    need = 2 if kind == "linear" else 3
    if len(rows) < need:
        return []
    out = []
    for i, held in enumerate(rows):
        rest = rows[:i] + rows[i + 1 :]
        for plane in PLANES:
            params = fit_iso_model(
                kind,
                [r["iso"] for r in rest],
                [r["alpha"][plane] for r in rest],
                [r["sigma"][plane] for r in rest],
            )
            pa, ps = eval_iso_model(kind, params, held["iso"])
            ma, ms = held["alpha"][plane], held["sigma"][plane]
            out.append(
                {
                    "iso": held["iso"],
                    "plane": plane,
                    "alpha_pred": pa,
                    "alpha_meas": ma,
                    "alpha_rel_err": (pa - ma) / ma if ma else float("nan"),
                    "sigma_pred": ps,
                    "sigma_meas": ms,
                    "sigma_rel_err": (ps - ms) / ms if ms else float("nan"),
                }
            )
    return out
