"""The EMVA 1288 figures a camera data sheet lists next to the system gain K.

Definitions are those of the EMVA 1288 standard (release 3) as its reference implementation
computes them, from the temporal series (per bright step: photons per pixel ``u_p``, mean
``u_y``, temporal variance ``s2_y``; the dark pair at the same exposure: ``u_ydark``,
``s2_ydark``), K and the dark noise ``sigma_y_dark`` (DN), and the spatial stacks (``L``
frames of one bright and one dark exposure):

* responsivity ``R``: slope through the origin of ``u_y - u_ydark`` against ``u_p`` over the
  sensitivity range (the steps up to 70 % of saturation); quantum efficiency ``QE = R / K``
  (in %);
* saturation: the step of highest temporal variance (``index_u_ysat``); saturation capacity
  ``u_e_sat = QE u_p_sat`` (e-); ``SNR_max = sqrt(u_e_sat)``;
* temporal dark noise in electrons ``sigma_d = sqrt(sigma_y_dark^2 - 1/12) / K`` (the
  quantisation noise removed); absolute sensitivity threshold
  ``u_p_min = (sigma_y_dark / K + 1/2) / QE`` photons; dynamic range ``u_p_sat / u_p_min``;
  both ratios also in dB (``20 log10``);
* linearity error: a line ``a u_p + b`` fitted to ``u_y - u_ydark`` with weights ``1/y`` over
  5-95 % of the saturation signal; ``LE = 100 (y - fit) / fit``, its minimum and maximum (%);
* spatial non-uniformity from a stack: the variance of the stack's mean image minus the
  temporal share ``mean(per-pixel variance) / L``; ``DSNU = sqrt(s2_dark) / K`` (e-, and DN),
  ``PRNU = 100 sqrt(s2_bright - s2_dark) / (mean_bright - mean_dark)`` (%).

Quantities that the data do not determine (a negative variance, no photon counts) are NaN and
named in ``notes``; no warning is raised.
"""

from __future__ import annotations

import math

import numpy as np

#: quantisation noise variance, DN^2
S2Q = 1.0 / 12.0


def spatial_stats(frames: np.ndarray) -> dict:
    """Mean and spatial variance (temporal share removed) of a stack ``(L, H, W)``.

    Returns ``{"mean", "s2", "L"}``: ``s2 = var(mean image, ddof=1) - mean(var over frames,
    ddof=1) / L`` (EMVA 1288 eq. 36).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> fpn = rng.normal(0, 2.0, (200, 200))          # fixed pattern, std 2
    >>> st = spatial_stats(100 + fpn + rng.normal(0, 5.0, (16, 200, 200)))
    >>> bool(abs(st["s2"] / np.var(fpn) - 1) < 0.05)
    True
    """
    f = np.asarray(frames, dtype=np.float64)
    L = f.shape[0]
    avg = f.mean(axis=0)
    tvar = f.var(axis=0, ddof=1).mean()
    return {"mean": float(avg.mean()), "s2": float(avg.var(ddof=1) - tvar / L), "L": int(L)}


def _slope_b0(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum(x * y) / np.sum(x * x))


def linearity(u_p: np.ndarray, y: np.ndarray, sat_index: int) -> dict:
    """Linearity error (EMVA 1288): a ``1/y``-weighted line over 5-95 % of the saturation
    signal; the relative deviations from it (%) and their extremes.

    Examples
    --------
    >>> up = np.linspace(10, 1000, 30)
    >>> lin = linearity(up, 2.0 * up * (1 + 1e-4 * up), 29)
    >>> round(lin["LE_min"], 2) < 0 < round(lin["LE_max"], 2)
    True
    """
    ysat = y[sat_index]
    rng = np.nonzero((y >= 0.05 * ysat) & (y <= 0.95 * ysat))[0]
    if len(rng) < 2:
        return {"LE_min": math.nan, "LE_max": math.nan, "deviation": np.full(len(y), math.nan)}
    i0, i1 = int(rng.min()), int(rng.max()) + 1
    X, Y = u_p[i0:i1], y[i0:i1]
    w = 1.0 / Y
    A = np.stack([X, np.ones_like(X)], 1) * w[:, None]
    a, b = np.linalg.lstsq(A, Y * w, rcond=None)[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        dev = 100.0 * (y - (a * u_p + b)) / (a * u_p + b)
    return {"LE_min": float(np.min(dev[i0:i1])), "LE_max": float(np.max(dev[i0:i1])), "deviation": dev,
            "fit": (float(a), float(b))}


def emva1288_metrics(
    u_p: np.ndarray,
    u_y: np.ndarray,
    u_ydark: np.ndarray,
    *,
    K: float,
    sigma_y_dark: float,
    sat_index: int,
    sens_max_index: int,
    spatial_bright: dict | None = None,
    spatial_dark: dict | None = None,
) -> dict:
    """The EMVA 1288 data-sheet figures (see the module docstring for each definition).

    Parameters
    ----------
    u_p, u_y, u_ydark : arrays
        Photons per pixel, mean and dark mean (DN) of each bright step of the temporal series.
    K, sigma_y_dark : float
        System gain (DN/e-) and temporal dark noise (DN).
    sat_index, sens_max_index : int
        Saturation step and the last step of the sensitivity (linear) range.
    spatial_bright, spatial_dark : dict, optional
        :func:`spatial_stats` of the spatial stacks (for DSNU and PRNU).

    Returns
    -------
    dict
        ``R``, ``QE`` (%), ``sigma_d`` (e-), ``u_p_min``, ``u_p_sat`` (photons), ``u_e_sat``
        (e-), ``SNR_max``, ``SNR_max_dB``, ``DR``, ``DR_dB``, ``LE_min``, ``LE_max`` (%),
        ``DSNU1288`` (e-), ``DSNU1288_DN``, ``PRNU1288`` (%) and ``notes``.
    """
    u_p = np.asarray(u_p, dtype=np.float64)
    y = np.asarray(u_y, dtype=np.float64) - np.asarray(u_ydark, dtype=np.float64)
    notes = []
    nan = math.nan
    out = dict.fromkeys(("R", "QE", "u_p_min", "u_p_sat", "u_e_sat", "SNR_max", "SNR_max_dB", "DR", "DR_dB",
                         "LE_min", "LE_max", "DSNU1288", "DSNU1288_DN", "PRNU1288"), nan)
    s2d = sigma_y_dark**2 - S2Q
    out["sigma_d"] = math.sqrt(s2d) / K if s2d > 0 else nan
    if not s2d > 0:
        notes.append("dark noise at the quantisation limit: sigma_d undetermined")
    if np.all(np.isfinite(u_p)) and np.all(u_p > 0):
        sl = slice(0, sens_max_index + 1)
        R = _slope_b0(u_p[sl], y[sl])
        QE = 100.0 * R / K
        u_p_sat = float(u_p[sat_index])
        u_e_sat = QE * u_p_sat / 100.0
        u_p_min = (100.0 / QE) * (sigma_y_dark / K + 0.5)
        out.update(R=R, QE=QE, u_p_sat=u_p_sat, u_e_sat=u_e_sat, u_p_min=u_p_min)
        if u_e_sat > 0:
            out["SNR_max"] = math.sqrt(u_e_sat)
            out["SNR_max_dB"] = 20.0 * math.log10(out["SNR_max"])
        if u_p_min > 0 and u_p_sat > 0:
            out["DR"] = u_p_sat / u_p_min
            out["DR_dB"] = 20.0 * math.log10(out["DR"])
        lin = linearity(u_p, y, sat_index)
        out["LE_min"], out["LE_max"] = lin["LE_min"], lin["LE_max"]
    else:
        notes.append("no photon counts in the descriptor: QE, saturation capacity, SNRmax, dynamic range and "
                     "linearity need them")
    if spatial_dark is not None:
        if spatial_dark["s2"] >= 0:
            out["DSNU1288_DN"] = math.sqrt(spatial_dark["s2"])
            out["DSNU1288"] = out["DSNU1288_DN"] / K
        else:
            notes.append("dark spatial variance below its temporal share: DSNU undetermined (below the noise)")
        if spatial_bright is not None:
            d = spatial_bright["s2"] - spatial_dark["s2"]
            sig = spatial_bright["mean"] - spatial_dark["mean"]
            if d >= 0 and sig > 0:
                out["PRNU1288"] = 100.0 * math.sqrt(d) / sig
            else:
                notes.append("bright spatial variance not above the dark one: PRNU undetermined")
    else:
        notes.append("no spatial stacks (steps of more than two frames): DSNU and PRNU need them")
    out["notes"] = notes
    return out
