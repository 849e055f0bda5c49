"""Noise as a function of ISO and of light level: fitting the ISO models and querying profiles.

The models themselves (``linear``, ``cts``) and the light-level model live in
:mod:`dpcal.physics.light`; this module fits them to per-ISO measurements and evaluates them
for profile documents.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from dpcal.cfa import PLANES
from dpcal.errors import BadInputError, FitError
from dpcal.physics import light as _light
from dpcal.physics.light import ISO_MODELS, PARAM_NAMES, iso_model_coeffs


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
    return float(_light.iso_from_lux(lux, float(light["lux_per_light_level"]), float(light["iso_at_unit_light_level"])))


def eval_iso_model(kind: str, params: Mapping[str, float], iso: float | np.ndarray):
    """Evaluate one plane's ISO model: returns ``(alpha, sigma)`` (floats for a scalar ISO)."""
    if kind not in ISO_MODELS:
        raise BadInputError(f"unknown ISO model {kind!r}; use one of {', '.join(ISO_MODELS)}")
    coeffs = np.array([float(params[n]) for n in PARAM_NAMES[kind]])
    alpha, sigma = _light.noise_at_iso(kind, coeffs[None], iso)
    alpha, sigma = alpha[..., 0], sigma[..., 0]
    if alpha.ndim == 0:
        return float(alpha), float(sigma)
    return alpha, sigma


def noise_params(doc: Mapping, lux) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised ``Profile.noise(lux=...)`` of the ISO model: ``alpha (N, 4)``, ``sigma (N, 4)``, ``iso (N,)``.

    Examples
    --------
    >>> from dpcal.profile import load_profile
    >>> a, s, iso = noise_params(load_profile("nexus6p-rear").doc, [3.0, 20.0])
    >>> a.shape, round(float(a[0, 0]), 4), iso.tolist()
    ((2, 4), 0.1248, [66666.66666666667, 10000.0])
    """
    lux = np.atleast_1d(np.asarray(lux, dtype=np.float64))
    if not np.all(np.isfinite(lux) & (lux > 0)):
        raise BadInputError(f"lux must be positive numbers, got {lux[~(np.isfinite(lux) & (lux > 0))][0]:g}")
    light = doc["light"]
    iso = _light.iso_from_lux(lux, float(light["lux_per_light_level"]), float(light["iso_at_unit_light_level"]))
    m = doc["noise"]["iso_model"]
    alpha, sigma = _light.noise_at_iso(m["kind"], iso_model_coeffs(m["kind"], m["params"]), iso)
    return alpha, sigma, iso


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
            raise FitError("the cts ISO model needs at least two different ISOs; use `iso_model=linear`")
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
