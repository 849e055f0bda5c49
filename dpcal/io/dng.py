"""Minimal DNG writer for Bayer mosaics (readable by LibRaw/rawpy, Adobe and darktable).

Written with ``tifffile`` plus the DNG tags a raw converter needs: CFA layout, black and white
levels, a colour matrix, and ISO / exposure time in the EXIF tags that :func:`dpcal.io.raw.read_raw`
reads back.
"""

from __future__ import annotations

import os
from fractions import Fraction

import numpy as np

from dpcal.cfa import PLANES, plane_offsets, validate_pattern
from dpcal.errors import BadInputError
from dpcal.io.atomic import atomic_path

_CFA_CODE = {"R": 0, "G": 1, "B": 2}


def _rational(x: float, denom: int = 1_000_000) -> tuple[int, int]:
    f = Fraction(x).limit_denominator(denom)
    return f.numerator, f.denominator


def write_dng(
    path: str | os.PathLike,
    dn: np.ndarray,
    pattern: str,
    *,
    black_level: float | list[float] = 0,
    white_level: float | None = None,
    iso: float | None = None,
    exposure_time: float | None = None,
    make: str = "dpcal",
    model: str = "synthetic",
) -> None:
    """Write a uint16 Bayer mosaic ``(H, W)`` as a DNG, atomically.

    Parameters
    ----------
    path : path-like
    dn : ndarray of uint16, shape (H, W)
        Digital numbers.
    pattern : str
        CFA pattern of the top-left 2x2 (``RGGB``, ...).
    black_level : float or 4 floats
        Per plane (``R, Gr, Gb, B``) or one value.
    white_level : float, optional
        Saturation level; defaults to 65535.
    iso, exposure_time : float, optional
        Stored in the EXIF tags ISOSpeedRatings and ExposureTime (seconds).
    make, model : str

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from dpcal.io.raw import read_raw
    >>> p = os.path.join(tempfile.mkdtemp(), "x.dng")
    >>> write_dng(p, np.full((32, 32), 1000, np.uint16), "GBRG", black_level=64, white_level=4095, iso=400)
    >>> r = read_raw(p)
    >>> r.pattern, r.black_level[0], r.white_level, r.iso
    ('GBRG', 64.0, 4095.0, 400.0)
    """
    import tifffile

    pat = validate_pattern(pattern)
    dn = np.ascontiguousarray(dn)
    if dn.ndim != 2 or dn.dtype != np.uint16:
        raise ValueError(f"write_dng needs a uint16 (H, W) mosaic, got {dn.dtype} {dn.shape}")
    if min(dn.shape) < 22:
        # LibRaw (and so rawpy, darktable, ...) refuses DNGs smaller than this.
        raise BadInputError(f"a DNG must be at least 22x22 pixels to be readable, got {dn.shape[1]}x{dn.shape[0]}")
    white = 65535 if white_level is None else int(round(white_level))
    bl = np.broadcast_to(np.asarray(black_level, dtype=float), (4,))
    # BlackLevel is laid out in the 2x2 repeat order (row by row), not in plane order.
    offs = plane_offsets(pat)
    black_tile = [0.0] * 4
    for i, n in enumerate(PLANES):
        dy, dx = offs[n]
        black_tile[2 * dy + dx] = float(bl[i])
    black_rat = [v for b in black_tile for v in _rational(b, 1000)]
    identity = [v for x in (1, 0, 0, 0, 1, 0, 0, 0, 1) for v in (x, 1)]
    tags = [
        (33421, "H", 2, (2, 2), True),  # CFARepeatPatternDim
        (33422, "B", 4, tuple(_CFA_CODE[c] for c in pat), True),  # CFAPattern
        (271, "s", 0, make, True),  # Make
        (272, "s", 0, model, True),  # Model
        (50706, "B", 4, (1, 4, 0, 0), True),  # DNGVersion
        (50707, "B", 4, (1, 1, 0, 0), True),  # DNGBackwardVersion
        (50708, "s", 0, f"{make} {model}", True),  # UniqueCameraModel
        (50713, "H", 2, (2, 2), True),  # BlackLevelRepeatDim
        (50714, "2I", 4, tuple(black_rat), True),  # BlackLevel (RATIONAL)
        (50717, "I", 1, white, True),  # WhiteLevel
        (50721, "2i", 9, tuple(identity), True),  # ColorMatrix1
        (50728, "2I", 3, (1, 1, 1, 1, 1, 1), True),  # AsShotNeutral
        (50778, "H", 1, 21, True),  # CalibrationIlluminant1 = D65
    ]
    if iso is not None:
        iso_i = int(round(iso))
        # ISOSpeedRatings is 16-bit; EXIF 2.3 puts larger values in ISOSpeed (LONG) with
        # SensitivityType 3, and 65535 in ISOSpeedRatings.
        tags.append((34855, "H", 1, min(iso_i, 65535), True))  # ISOSpeedRatings
        if iso_i > 65535:
            tags.append((34864, "H", 1, 3, True))  # SensitivityType: ISO speed
            tags.append((34867, "I", 1, iso_i, True))  # ISOSpeed
    if exposure_time is not None:
        tags.append((33434, "2I", 1, _rational(exposure_time), True))  # ExposureTime
    with atomic_path(path) as tmp:
        tifffile.imwrite(
            tmp,
            dn,
            photometric=32803,  # CFA
            planarconfig="contig",
            subfiletype=0,
            software="dpcal",
            extratags=tags,
            metadata=None,
        )
