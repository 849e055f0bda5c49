"""From illuminance to noise: lux -> ISO -> per-plane (alpha, sigma).

The light-level model: a light level ``ll = lux / lux_per_light_level`` and
``iso = iso_at_unit_light_level / ll`` (the camera raises its gain to keep brightness; the
Dirty Pixels constants are 2000 lux and ISO 100). Two ISO models, per CFA plane:

``linear``  (the Dirty Pixels reference code)
    ``alpha(iso) = a1 * iso``, ``sigma(iso) = s1 * iso``.
``cts``  (Android CTS / DNG noise model)
    ``alpha(iso) = A * iso + B``, ``sigma(iso)**2 = C * iso**2 + D``.

Every function takes NumPy arrays or torch tensors and returns the same kind, so the profile
(NumPy, float64) and the torch forward model (:class:`dpcal.physics.forward.RawForward`) use one
implementation.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from dpcal.cfa import PLANES
from dpcal.errors import BadInputError

ISO_MODELS = ("linear", "cts")
PARAM_NAMES = {"linear": ("a1", "s1"), "cts": ("A", "B", "C", "D")}

__all__ = ["ISO_MODELS", "PARAM_NAMES", "iso_from_lux", "iso_model_coeffs", "noise_at_iso"]


def iso_from_lux(lux, lux_per_light_level: float, iso_at_unit_light_level: float):
    """ISO the camera uses at illuminance ``lux``.

    Examples
    --------
    >>> iso_from_lux(3.0, 2000.0, 100.0)
    66666.66666666667
    """
    return iso_at_unit_light_level / (lux / lux_per_light_level)


def iso_model_coeffs(kind: str, params: Mapping[str, Mapping[str, float]]) -> np.ndarray:
    """The ISO model's parameters as an array ``(4, k)``: planes ``R, Gr, Gb, B``, then
    :data:`PARAM_NAMES` order.

    Examples
    --------
    >>> iso_model_coeffs("linear", {p: {"a1": 1.0, "s1": 2.0} for p in PLANES})[0].tolist()
    [1.0, 2.0]
    """
    if kind not in ISO_MODELS:
        raise BadInputError(f"unknown ISO model {kind!r}; use one of {', '.join(ISO_MODELS)}")
    return np.array([[float(params[p][n]) for n in PARAM_NAMES[kind]] for p in PLANES], dtype=np.float64)


def noise_at_iso(kind: str, coeffs, iso):
    """Evaluate an ISO model: ``(alpha, sigma)`` with shape ``broadcast(iso[..., None], coeffs[..., 0])``.

    Parameters
    ----------
    kind : {"linear", "cts"}
    coeffs : array or tensor (..., k)
        Parameters in :data:`PARAM_NAMES` order on the last axis (e.g. ``(4, k)`` per plane).
    iso : array or tensor
        Broadcast as ``iso[..., None]`` against the planes.

    Examples
    --------
    >>> c = iso_model_coeffs("linear", {p: {"a1": 1e-6, "s1": 2e-6} for p in PLANES})
    >>> a, s = noise_at_iso("linear", c, np.array([100.0, 200.0]))
    >>> a.shape, round(float(s[1, 0]), 9)
    ((2, 4), 0.0004)
    """
    istorch = type(coeffs).__module__.startswith("torch")
    if istorch:
        import torch

        iso = torch.as_tensor(iso, dtype=coeffs.dtype, device=coeffs.device)[..., None]
        relu, sqrt = (lambda v: v.clamp(min=0.0)), torch.sqrt
    else:
        coeffs = np.asarray(coeffs, dtype=np.float64)
        iso = np.asarray(iso, dtype=np.float64)[..., None]
        relu, sqrt = (lambda v: np.maximum(v, 0.0)), np.sqrt
    if kind == "linear":
        alpha = coeffs[..., 0] * iso
        sigma = coeffs[..., 1] * iso
    elif kind == "cts":
        alpha = coeffs[..., 0] * iso + coeffs[..., 1]
        sigma = sqrt(relu(coeffs[..., 2] * iso**2 + coeffs[..., 3]))
    else:
        raise BadInputError(f"unknown ISO model {kind!r}; use one of {', '.join(ISO_MODELS)}")
    return relu(alpha), sigma
