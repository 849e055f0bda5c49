"""Minimal DNG writer for Bayer mosaics (readable by LibRaw/rawpy, Adobe and darktable).

Written with ``tifffile`` plus the DNG tags a raw converter needs: CFA layout, black and white
levels, a colour matrix, and ISO / exposure time in an EXIF IFD, where LibRaw (rawpy's
``other.iso_speed`` and ``other.shutter_speed``), exifread and :func:`dpcal.io.raw.read_raw` look.
"""

from __future__ import annotations

import os
from fractions import Fraction

import numpy as np

from dpcal.cfa import PLANES, plane_offsets, validate_pattern
from dpcal.errors import BadInputError
from dpcal.io.atomic import atomic_path

_CFA_CODE = {"R": 0, "G": 1, "B": 2}
_EXIF_PLACEHOLDER = 34666


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
        Stored in the EXIF IFD as ISOSpeedRatings (with ISOSpeed above 65535) and ExposureTime
        (seconds).
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
    exif = _exif_entries(iso, exposure_time)
    if exif:
        # tifffile will not write an ExifIFD tag: a private placeholder that sorts where 34665
        # does (between CFAPattern and DNGVersion) is renamed once the IFD is appended.
        tags.append((_EXIF_PLACEHOLDER, "I", 1, 0, True))
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
        if exif:
            _append_exif_ifd(tmp, exif)


def _exif_entries(iso: float | None, exposure_time: float | None) -> list[tuple[int, int, int, bytes]]:
    """EXIF IFD entries ``(tag, TIFF type, count, little-endian value bytes)``, sorted by tag."""
    import struct

    out = []
    if exposure_time is not None:
        if not exposure_time > 0:
            raise BadInputError(f"exposure_time must be > 0 seconds, got {exposure_time}")
        out.append((33434, 5, 1, struct.pack("<II", *_rational(exposure_time))))  # ExposureTime
    if iso is not None:
        iso_i = int(round(iso))
        if iso_i < 1:
            raise BadInputError(f"iso must be >= 1, got {iso}")
        # ISOSpeedRatings is 16-bit; EXIF 2.3 puts larger values in ISOSpeed (LONG) with
        # SensitivityType 3 and 65535 in ISOSpeedRatings.
        out.append((34855, 3, 1, struct.pack("<H", min(iso_i, 65535))))  # ISOSpeedRatings
        if iso_i > 65535:
            out.append((34864, 3, 1, struct.pack("<H", 3)))  # SensitivityType: ISO speed
            out.append((34867, 4, 1, struct.pack("<I", iso_i)))  # ISOSpeed
    if out:
        out.append((36864, 7, 4, b"0230"))  # ExifVersion 2.3 (ISOSpeed is a 2.3 tag)
    return sorted(out)


def _append_exif_ifd(path, entries) -> None:
    """Append an EXIF IFD to a little-endian classic TIFF and turn IFD0's placeholder entry
    into the ExifIFD pointer (tag 34665, type LONG) to it."""
    import struct

    import tifffile

    with tifffile.TiffFile(path) as tf:
        if tf.byteorder != "<" or tf.is_bigtiff:
            raise RuntimeError("write_dng expects tifffile to write a little-endian classic TIFF")
        pointer_at = tf.pages[0].tags[_EXIF_PLACEHOLDER].valueoffset
    with open(path, "r+b") as f:
        f.seek(0, os.SEEK_END)
        start = f.tell() + (f.tell() & 1)  # IFDs start on a word boundary
        data_at = start + 2 + 12 * len(entries) + 4
        ifd, data = [struct.pack("<H", len(entries))], b""
        for tag, typ, count, value in entries:
            if len(value) <= 4:
                ifd.append(struct.pack("<HHI", tag, typ, count) + value.ljust(4, b"\0"))
            else:
                ifd.append(struct.pack("<HHII", tag, typ, count, data_at + len(data)))
                data += value
        ifd.append(struct.pack("<I", 0))
        f.write(b"\0" * (start - f.tell()) + b"".join(ifd) + data)
        f.seek(pointer_at - 8)  # the 12-byte entry: tag, type, count, value
        f.write(struct.pack("<HHII", 34665, 4, 1, start))
