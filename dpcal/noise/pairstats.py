"""Per-pair photon-transfer statistics, as photon-transfer tools tabulate them.

For two frames ``A``, ``B`` of one flat field at one exposure, per CFA plane: the mean level
``(mean(A) + mean(B)) / 2 - black`` and the temporal variance ``var(A - B) / 2`` with the
unbiased (``n - 1``) normalisation over the plane's ``n`` pixels. The difference removes the
fixed pattern (PRNU, DSNU) and the black level; halving turns the variance of a difference
into that of one frame. Every pair of a stack of ``L`` frames gives one row, ``L (L - 1) / 2``
rows in all, the table users compare between tools.
"""

from __future__ import annotations

import itertools

import numpy as np

from dpcal.cfa import PLANES, plane_offsets


def pair_stats(a: np.ndarray, b: np.ndarray, pattern: str, black=(0.0, 0.0, 0.0, 0.0)) -> dict[str, tuple[float, float]]:
    """Mean above black and temporal variance (DN, DN^2) per plane of the pair ``a``, ``b``.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> flat = np.full((64, 64), 1000.0) + rng.normal(0, 20, (64, 64))   # fixed pattern
    >>> a, b = flat + rng.normal(0, 5, (2, 64, 64))
    >>> m, v = pair_stats(a, b, "RGGB")["Gr"]
    >>> bool(abs(m - 1000) < 2), bool(abs(v / 25 - 1) < 0.15)
    (True, True)
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"pair_stats: frames differ in shape, {a.shape} and {b.shape}")
    offs = plane_offsets(pattern)
    out = {}
    for i, name in enumerate(PLANES):
        r, c = offs[name]
        A, B = a[r::2, c::2], b[r::2, c::2]
        out[name] = (float((A.mean() + B.mean()) / 2 - black[i]), float(np.var(A - B, ddof=1) / 2))
    return out


def stack_pair_table(frames: list[np.ndarray], names: list[str], pattern: str, black=(0.0, 0.0, 0.0, 0.0)) -> list[dict]:
    """:func:`pair_stats` of every pair ``i < j`` of a stack, one row per pair and plane.

    Rows are ``{"file_a", "file_b", "plane", "mean", "var"}`` (DN, DN^2).
    """
    rows = []
    for (i, a), (j, b) in itertools.combinations(enumerate(frames), 2):
        for name, (m, v) in pair_stats(a, b, pattern, black).items():
            rows.append({"file_a": names[i], "file_b": names[j], "plane": name, "mean": m, "var": v})
    return rows
