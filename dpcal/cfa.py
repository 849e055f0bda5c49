"""Colour filter array (Bayer) conventions, in one place.

A pattern is a four-letter string read row by row from the top-left 2x2 block of the *visible*
image: ``RGGB``, ``BGGR``, ``GRBG`` or ``GBRG``. The four planes are always ordered
``R, Gr, Gb, B`` (``Gr``: the green on the red row).

Other libraries name patterns differently; :func:`to_opencv` is the only place that maps.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from dpcal.errors import BadCFAError

PATTERNS = ("RGGB", "BGGR", "GRBG", "GBRG")
PLANES = ("R", "Gr", "Gb", "B")
#: RGB channel index of each plane (R=0, G=1, B=2).
PLANE_CHANNEL = {"R": 0, "Gr": 1, "Gb": 1, "B": 2}


def validate_pattern(pattern: str) -> str:
    """Return ``pattern`` upper-cased, or raise :class:`BadCFAError` listing the valid ones.

    Examples
    --------
    >>> validate_pattern("rggb")
    'RGGB'
    """
    if not isinstance(pattern, str) or pattern.upper() not in PATTERNS:
        raise BadCFAError(
            f"unknown CFA pattern {pattern!r}; use one of {', '.join(PATTERNS)} "
            "(top-left 2x2 of the visible image, read row by row)"
        )
    return pattern.upper()


def plane_offsets(pattern: str) -> dict[str, tuple[int, int]]:
    """Row/column offset ``(dy, dx)`` of each plane inside the 2x2 tile.

    Examples
    --------
    >>> plane_offsets("BGGR")["R"]
    (1, 1)
    >>> plane_offsets("GRBG")["Gr"]
    (0, 0)
    """
    p = validate_pattern(pattern)
    out: dict[str, tuple[int, int]] = {}
    for i, letter in enumerate(p):
        dy, dx = divmod(i, 2)
        if letter == "G":
            # The green sharing a row with red is Gr.
            row_letters = p[2 * dy : 2 * dy + 2]
            name = "Gr" if "R" in row_letters else "Gb"
        else:
            name = letter
        out[name] = (dy, dx)
    return out


def channel_map(pattern: str) -> np.ndarray:
    """2x2 array of RGB channel indices (0, 1, 2) of the pattern's tile."""
    p = validate_pattern(pattern)
    return np.array([["RGB".index(c) for c in p[:2]], ["RGB".index(c) for c in p[2:]]])


def shift_pattern(pattern: str, dy: int, dx: int) -> str:
    """Pattern of the crop that starts ``dy`` rows and ``dx`` columns into the image.

    Examples
    --------
    >>> shift_pattern("RGGB", 1, 0)
    'GBRG'
    >>> shift_pattern("RGGB", 1, 1)
    'BGGR'
    """
    p = validate_pattern(pattern)
    tile = [[p[0], p[1]], [p[2], p[3]]]
    return "".join(tile[(r + dy) % 2][(c + dx) % 2] for r in (0, 1) for c in (0, 1))


def color_mask(pattern: str, height: int, width: int) -> np.ndarray:
    """Boolean mask ``(3, H, W)``: True where the sensor samples that RGB channel."""
    cm = channel_map(pattern)
    idx = np.tile(cm, ((height + 1) // 2, (width + 1) // 2))[:height, :width]
    return np.stack([idx == c for c in range(3)])


def split_planes(mosaic: np.ndarray, pattern: str) -> np.ndarray:
    """Split a mosaic ``(..., H, W)`` into its four planes ``(..., 4, H//2, W//2)``.

    Planes are in ``R, Gr, Gb, B`` order; an odd last row or column is dropped.

    Examples
    --------
    >>> m = np.arange(16).reshape(4, 4)
    >>> split_planes(m, "RGGB")[0]
    array([[ 0,  2],
           [ 8, 10]])
    """
    offs = plane_offsets(pattern)
    h, w = mosaic.shape[-2] // 2 * 2, mosaic.shape[-1] // 2 * 2
    return np.stack([mosaic[..., offs[n][0] : h : 2, offs[n][1] : w : 2] for n in PLANES], axis=-3)


def join_planes(planes: np.ndarray, pattern: str) -> np.ndarray:
    """Inverse of :func:`split_planes`: ``(..., 4, h, w)`` -> ``(..., 2h, 2w)``."""
    planes = np.asarray(planes)
    if planes.shape[-3] != 4:
        raise ValueError(f"expected 4 planes on axis -3, got shape {planes.shape}")
    offs = plane_offsets(pattern)
    h, w = planes.shape[-2:]
    out = np.empty(planes.shape[:-3] + (2 * h, 2 * w), dtype=planes.dtype)
    for i, n in enumerate(PLANES):
        out[..., offs[n][0] :: 2, offs[n][1] :: 2] = planes[..., i, :, :]
    return out


def plane_map(pattern: str, height: int, width: int) -> np.ndarray:
    """``(H, W)`` int array: index (in ``PLANES`` order) of the plane each pixel belongs to."""
    offs = plane_offsets(pattern)
    tile = np.zeros((2, 2), dtype=np.int64)
    for i, n in enumerate(PLANES):
        tile[offs[n]] = i
    return np.tile(tile, ((height + 1) // 2, (width + 1) // 2))[:height, :width]


def per_plane(values: Mapping[str, float] | float, pattern: str, shape: tuple[int, int]) -> np.ndarray:
    """Expand a per-plane value (``{"R": .., "Gr": .., "Gb": .., "B": ..}`` or a scalar) to a mosaic map.

    Examples
    --------
    >>> per_plane({"R": 1.0, "Gr": 2.0, "Gb": 3.0, "B": 4.0}, "BGGR", (2, 3)).tolist()
    [[4.0, 3.0, 4.0], [2.0, 1.0, 2.0]]
    """
    if not isinstance(values, Mapping):
        return np.full(shape, float(values))
    table = np.array([values[p] for p in PLANES], dtype=np.float64)
    return table[plane_map(pattern, *shape)]


def to_opencv(pattern: str) -> str:
    """OpenCV's (and kornia's) name for a pattern: ``RGGB`` is OpenCV's ``BayerBG``.

    OpenCV names a Bayer layout by the second row's second and third pixels, so its names are
    shifted by one pixel diagonally from ours.

    Examples
    --------
    >>> to_opencv("RGGB")
    'BG'
    """
    p = validate_pattern(pattern)
    return p[3] + p[2]


def demosaic_bilinear(mosaic: np.ndarray, pattern: str) -> np.ndarray:
    """Simple demosaic of a ``[0, 1]`` mosaic to ``(H, W, 3)`` RGB float32 (OpenCV bilinear).

    Meant for previews, not for image quality.
    """
    import cv2

    code = getattr(cv2, f"COLOR_Bayer{to_opencv(pattern)}2RGB")
    m16 = np.clip(np.round(np.asarray(mosaic, dtype=np.float64) * 65535), 0, 65535).astype(np.uint16)
    return cv2.cvtColor(m16, code).astype(np.float32) / 65535.0
