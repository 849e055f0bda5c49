"""FITS mosaics: what sensor-characterisation and astronomy cameras write.

A FITS file holds the Bayer mosaic as a 2-D integer image in its primary (or first image)
HDU. Its header may carry the CFA pattern (``BAYERPAT`` with ``XBAYROFF``/``YBAYROFF``), the
exposure time (``EXPTIME`` or ``EXPOSURE``, seconds), the ISO (``ISOSPEED``), the saturation
(``SATURATE`` or ``DATAMAX``) and the camera (``INSTRUME``). Whatever it lacks, the caller
gives (``pattern``, ``bits``); without either, the white level is the full range of the
stored integer type. The black level is 0 unless given: FITS has no standard keyword for it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dpcal.cfa import validate_pattern
from dpcal.errors import BadCFAError, BadInputError, BadRawError

FITS_SUFFIXES = {".fit", ".fits", ".fts"}


def _header_pattern(h) -> str | None:
    """``BAYERPAT`` shifted by ``XBAYROFF``/``YBAYROFF`` (odd offsets move the 2x2 tile)."""
    pat = str(h.get("BAYERPAT", "")).strip().upper()
    if len(pat) != 4:
        return None
    tile = [[pat[0], pat[1]], [pat[2], pat[3]]]
    dx, dy = int(h.get("XBAYROFF", 0) or 0) % 2, int(h.get("YBAYROFF", 0) or 0) % 2
    out = "".join(tile[(r + dy) % 2][(c + dx) % 2] for r in (0, 1) for c in (0, 1))
    try:
        return validate_pattern(out)
    except BadCFAError:
        return None


def _number(h, *keys) -> float | None:
    for k in keys:
        v = h.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v):
            return float(v)
    return None


def read_fits_header(path: str | Path) -> dict:
    """ISO, exposure time (s) and model from a FITS header; missing keys give ``None``."""
    from astropy.io import fits

    out = {"iso": None, "exposure_time": None, "maker": None, "model": None}
    try:
        with fits.open(path, memmap=False) as hdul:
            h = hdul[0].header
    except (OSError, ValueError):
        return out
    out["exposure_time"] = _number(h, "EXPTIME", "EXPOSURE")
    out["iso"] = _number(h, "ISOSPEED", "ISO")
    if h.get("INSTRUME"):
        out["model"] = str(h["INSTRUME"]).strip() or None
    return out


def read_fits(path: str | Path, pattern: str | None, bits: int | None):
    """Read a FITS mosaic as a :class:`dpcal.io.raw.RawImage` (levels in DN, black 0).

    Parameters
    ----------
    path : path-like
    pattern : str, optional
        CFA pattern; overrides ``BAYERPAT``; required when the header has none.
    bits : int, optional
        Bit depth of the data (white level ``2**bits - 1``); overrides ``SATURATE``/``DATAMAX``.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from astropy.io import fits
    >>> p = os.path.join(tempfile.mkdtemp(), "f.fits")
    >>> hdu = fits.PrimaryHDU(np.full((4, 6), 700, np.int16)); hdu.header["EXPTIME"] = 0.01
    >>> hdu.header["BAYERPAT"] = "RGGB"; hdu.header["XBAYROFF"] = 1
    >>> hdu.writeto(p)
    >>> r = read_fits(p, None, 14)
    >>> r.pattern, r.white_level, r.exposure_time, int(r.dn[0, 0])
    ('GRBG', 16383.0, 0.01, 700)
    """
    from astropy.io import fits

    from dpcal.io.raw import RawImage

    p = Path(path)
    try:
        with fits.open(p, memmap=False) as hdul:
            hdu = next((x for x in hdul if x.is_image and x.data is not None and x.data.ndim >= 2), None)
            if hdu is None:
                raise BadRawError(f"{p}: the FITS file holds no image")
            h0, h = hdul[0].header, hdu.header
            data = np.asarray(hdu.data)
    except (OSError, ValueError, TypeError) as e:
        raise BadRawError(f"{p}: not a readable FITS file ({e})") from None
    if data.ndim != 2:
        raise BadRawError(f"{p}: expected a 2-D mosaic, the FITS image has shape {data.shape} (a colour cube?)")
    pat = validate_pattern(pattern) if pattern else _header_pattern(h) or _header_pattern(h0)
    if pat is None:
        raise BadInputError(f"{p}: the FITS header has no BAYERPAT; pass --pattern (RGGB, BGGR, GRBG or GBRG)")
    if np.issubdtype(data.dtype, np.floating):
        dn = data.astype(np.float32)
        white = _number(h, "SATURATE", "DATAMAX") or float(np.nanmax(dn))
    else:
        # astropy applies BZERO: unsigned 16-bit data come back as uint16; native byte order here.
        dn = data.astype(data.dtype.newbyteorder("="))
        white = float(np.iinfo(dn.dtype).max)
        white = _number(h, "SATURATE", "DATAMAX") or white
    if bits is not None:
        white = float(2**bits - 1)
    meta = {"exposure_time": _number(h, "EXPTIME", "EXPOSURE") or _number(h0, "EXPTIME", "EXPOSURE"),
            "iso": _number(h, "ISOSPEED", "ISO") or _number(h0, "ISOSPEED", "ISO")}
    bit_depth = bits if bits is not None else (int(np.ceil(np.log2(white + 1))) if white >= 1 else None)
    return RawImage(dn=dn, pattern=pat, black_level=(0.0,) * 4, white_level=white, bit_depth=bit_depth,
                    iso=meta["iso"], exposure_time=meta["exposure_time"], model=h0.get("INSTRUME") or None,
                    path=str(p))
