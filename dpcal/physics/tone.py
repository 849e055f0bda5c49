"""Tone curves: the sRGB transfer function (IEC 61966-2-1) and its inverse.

Both accept a torch tensor (differentiable) or anything NumPy takes, and return the same kind.
"""

from __future__ import annotations

import numpy as np

#: How display sRGB becomes linear light in the simulator (see :mod:`dpcal.physics.color`).
LINEARIZE = ("none", "gamma", "unprocess")

__all__ = ["LINEARIZE", "linear_to_srgb", "srgb_to_linear"]


def _ops(x):
    if type(x).__module__.startswith("torch"):
        import torch

        return x, torch.where, lambda v, lo: v.clamp(min=lo)
    x = np.asarray(x, dtype=np.float64) if not np.issubdtype(np.asarray(x).dtype, np.floating) else np.asarray(x)
    return x, np.where, lambda v, lo: np.maximum(v, lo)


def srgb_to_linear(x):
    """Inverse sRGB transfer function (exact piecewise form).

    Examples
    --------
    >>> round(float(srgb_to_linear(0.5)), 4)
    0.214
    """
    x, where, clamp = _ops(x)
    return where(x <= 0.04045, x / 12.92, ((clamp(x, 0.04045) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x):
    """sRGB transfer function (for display).

    Examples
    --------
    >>> round(float(linear_to_srgb(0.214)), 3)
    0.5
    """
    x, where, clamp = _ops(x)
    return where(x <= 0.0031308, x * 12.92, 1.055 * clamp(x, 0.0031308) ** (1 / 2.4) - 0.055)
