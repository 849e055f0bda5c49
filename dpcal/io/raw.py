"""One RAW reader for every fitter.

:func:`read_raw` accepts

* any format LibRaw reads, through rawpy (DNG, NEF, CR2, ARW, KDC, ...);
* headerless ``.raw``/``.bin`` files (little-endian, 8 or 16 bits a sample), given ``width``,
  ``height``, ``bits`` and ``pattern``;
* already-decoded mosaics: ``.npy`` and single-channel 16-bit PNG/TIFF, given ``pattern``;
* FITS mosaics (``.fit``/``.fits``/``.fts``, :mod:`dpcal.io.fits`), pattern from ``BAYERPAT``
  or given.

It returns a :class:`RawImage` holding the visible Bayer mosaic in digital numbers (DN) and
normalised as in ``docs/conventions.md``: ``(dn - black[c]) / (white - black[c])`` per CFA plane,
*not* clipped (values below black carry read noise that the noise fitters need).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np

from dpcal.cfa import PLANES, plane_map, plane_offsets, validate_pattern
from dpcal.errors import BadInputError, BadRawError
from dpcal.io.fits import FITS_SUFFIXES, read_fits, read_fits_header

RAWPY_SUFFIXES = {
    ".dng", ".nef", ".nrw", ".cr2", ".cr3", ".crw", ".arw", ".srf", ".sr2", ".kdc", ".dcr",
    ".raf", ".orf", ".rw2", ".pef", ".srw", ".erf", ".mos", ".mef", ".3fr", ".fff", ".iiq",
    ".x3f", ".rwl", ".mrw", ".k25", ".dc2",
}
HEADERLESS_SUFFIXES = {".raw", ".bin"}
IMAGE_SUFFIXES = {".png", ".tif", ".tiff"}


@dataclasses.dataclass
class RawImage:
    """A Bayer mosaic with its levels and metadata.

    Attributes
    ----------
    dn : ndarray (H, W)
        Visible mosaic in digital numbers (as stored; float32 for decoded float inputs).
    pattern : str
        CFA pattern of the visible area (e.g. ``"RGGB"``).
    black_level : tuple of 4 float
        Black level per plane, in ``R, Gr, Gb, B`` order (DN).
    white_level : float
        Saturation level (DN).
    bit_depth : int or None
    iso, exposure_time : float or None
        From the file's metadata when it has them (``exposure_time`` in seconds).
    maker, model : str or None
    path : str or None
    white_balance : tuple of 4 float or None
        The camera's as-shot white-balance gains per plane (``R, Gr, Gb, B``, green = 1), from
        LibRaw; None for other readers or files without them.
    """

    dn: np.ndarray
    pattern: str
    black_level: tuple[float, float, float, float]
    white_level: float
    bit_depth: int | None = None
    iso: float | None = None
    exposure_time: float | None = None
    maker: str | None = None
    model: str | None = None
    path: str | None = None
    white_balance: tuple[float, float, float, float] | None = None

    @property
    def height(self) -> int:
        return int(self.dn.shape[0])

    @property
    def width(self) -> int:
        return int(self.dn.shape[1])

    def black_map(self) -> np.ndarray:
        """Per-pixel black level ``(H, W)`` float32."""
        idx = plane_map(self.pattern, self.height, self.width)
        return np.asarray(self.black_level, dtype=np.float32)[idx]

    def normalized(self) -> np.ndarray:
        """Mosaic in [0, 1] units, ``(dn - black[c]) / (white - black[c])``; not clipped."""
        black = self.black_map()
        return ((self.dn.astype(np.float32) - black) / (np.float32(self.white_level) - black)).astype(
            np.float32
        )

    def info(self) -> dict:
        """Summary as a JSON-able dict (what ``dpcal info`` prints)."""
        return {
            "path": self.path,
            "width": self.width,
            "height": self.height,
            "pattern": self.pattern,
            "planes": list(PLANES),
            "black_level": [float(b) for b in self.black_level],
            "white_level": float(self.white_level),
            "bit_depth": self.bit_depth,
            "iso": self.iso,
            "exposure_time": self.exposure_time,
            "maker": self.maker,
            "model": self.model,
        }


def read_raw(
    path: str | os.PathLike,
    *,
    pattern: str | None = None,
    width: int | None = None,
    height: int | None = None,
    bits: int | None = None,
    black_level: float | list[float] | None = None,
    white_level: float | None = None,
    iso: float | None = None,
) -> RawImage:
    """Read a Bayer RAW capture of any supported kind.

    Parameters
    ----------
    path : path-like
        The file. Its suffix selects the reader (LibRaw formats, ``.raw``/``.bin``, ``.npy``,
        ``.png``/``.tif``, ``.fit``/``.fits``).
    pattern : str, optional
        CFA pattern; required for headerless and decoded inputs, overrides LibRaw's otherwise.
    width, height, bits : int, optional
        Geometry and bit depth of headerless files (``bits`` also sets the white level of
        decoded integer mosaics: ``2**bits - 1``).
    black_level : float or 4 floats, optional
        Black level (DN), one value or one per plane (``R, Gr, Gb, B``); overrides metadata.
    white_level : float, optional
        Saturation (DN); overrides metadata.
    iso : float, optional
        ISO to record when the file has none (or to override it).

    Returns
    -------
    RawImage

    Raises
    ------
    BadRawError
        Unreadable, truncated or non-Bayer files.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "m.npy")
    >>> np.save(p, np.full((4, 6), 512, np.uint16))
    >>> r = read_raw(p, pattern="GRBG", bits=10)
    >>> r.pattern, r.white_level, round(float(r.normalized().max()), 4)
    ('GRBG', 1023.0, 0.5005)
    """
    p = Path(path)
    if not p.exists():
        raise BadInputError(f"{p}: no such file")
    if p.is_dir():
        raise BadInputError(f"{p} is a folder; give RAW files")
    suffix = p.suffix.lower()
    if suffix in HEADERLESS_SUFFIXES:
        img = _read_headerless(p, pattern, width, height, bits)
    elif suffix == ".npy" or suffix in IMAGE_SUFFIXES:
        img = _read_decoded(p, pattern, bits)
    elif suffix in FITS_SUFFIXES:
        img = read_fits(p, pattern, bits)
    else:
        img = _read_libraw(p, pattern)
    if black_level is not None:
        bl = np.broadcast_to(np.asarray(black_level, dtype=float), (4,))
        img.black_level = tuple(float(b) for b in bl)
    if white_level is not None:
        img.white_level = float(white_level)
    if img.iso is None or img.iso == 65535 or img.exposure_time is None or img.maker is None:
        meta = read_exif(p)
        # LibRaw's 65535 is a saturated 16-bit tag; EXIF 2.3's ISOSpeed holds the real value.
        if img.iso is None or (img.iso == 65535 and meta.get("iso")):
            img.iso = meta.get("iso")
        img.exposure_time = img.exposure_time if img.exposure_time is not None else meta.get("exposure_time")
        img.maker = img.maker or meta.get("maker")
        img.model = img.model or meta.get("model")
    if iso is not None:
        if not iso > 0:
            raise BadInputError(f"`iso` must be > 0, got {iso:g}", param="iso")
        img.iso = float(iso)
    _check_levels(img)
    return img


def _check_levels(img: RawImage) -> None:
    if min(img.dn.shape) < 2:
        raise BadRawError(f"{img.path}: image is {img.dn.shape}, too small for a 2x2 CFA")
    if not all(np.isfinite(img.black_level)) or not np.isfinite(img.white_level):
        raise BadRawError(f"{img.path}: black/white levels are not finite")
    if max(img.black_level) >= img.white_level:
        raise BadRawError(
            f"{img.path}: black level {max(img.black_level)} is not below white level "
            f"{img.white_level}; pass `black_level`/`white_level`"
        )


def _read_libraw(p: Path, pattern: str | None) -> RawImage:
    import rawpy

    try:
        with _quiet_stderr():
            raw = rawpy.imread(str(p))
            raw.unpack()
    except rawpy.LibRawError as e:
        reason = e.args[0].decode() if e.args and isinstance(e.args[0], bytes) else str(e)
        raise BadRawError(
            f"{p}: LibRaw cannot read it ({reason}); is it a complete RAW file from a camera?"
        ) from None
    with raw:
        if raw.raw_type != rawpy.RawType.Flat or raw.raw_pattern is None:
            raise BadRawError(
                f"{p}: not a Bayer mosaic (LibRaw reads {raw.num_colors} colour planes per pixel, "
                "no colour filter array); dpcal needs a Bayer RAW"
            )
        if raw.raw_pattern.shape != (2, 2):
            raise BadRawError(
                f"{p}: its colour filter array repeats every {raw.raw_pattern.shape[0]}x{raw.raw_pattern.shape[1]} "
                "pixels (e.g. X-Trans), not a 2x2 Bayer pattern; dpcal needs a Bayer RAW"
            )
        desc = raw.color_desc.decode()
        colors = raw.raw_colors_visible[:2, :2]
        letters = "".join(desc[c] for c in colors.ravel())
        dn = raw.raw_image_visible.copy()
        if sorted(letters) != ["B", "G", "G", "R"]:
            raise BadRawError(
                f"{p}: CFA {letters!r} is not an RGB Bayer pattern (dpcal supports "
                "RGGB, BGGR, GRBG, GBRG)"
            )
        file_pattern = validate_pattern(letters)
        offs = plane_offsets(file_pattern)
        per_channel = list(raw.black_level_per_channel)
        black = tuple(float(per_channel[colors[offs[n]]]) for n in PLANES)
        white = float(raw.white_level)
        bits = int(np.ceil(np.log2(white + 1))) if white > 0 else None
        # LibRaw parses maker notes and vendor headers that EXIF readers miss (e.g. a Kodak KDC's
        # ISO); 0 means it found none.
        other = raw.other
        wb = _as_shot_gains(list(raw.camera_whitebalance), desc, colors, offs)
    return RawImage(
        dn=dn,
        pattern=validate_pattern(pattern) if pattern else file_pattern,
        black_level=black,
        white_level=white,
        bit_depth=bits,
        iso=float(other.iso_speed) if other.iso_speed > 0 else None,
        exposure_time=float(other.shutter_speed) if other.shutter_speed > 0 else None,
        path=str(p),
        white_balance=wb,
    )


def _as_shot_gains(gains: list, desc: str, colors, offs) -> tuple[float, float, float, float] | None:
    """Per-plane as-shot gains normalised to green, or None when LibRaw has none."""
    g = [float(v) for v in gains]
    green = next((g[i] for i, c in enumerate(desc) if c == "G" and g[i] > 0), 0.0)
    if green <= 0:
        return None
    per = []
    for n in PLANES:
        c = int(colors[offs[n]])
        v = g[c] if g[c] > 0 else (green if desc[c] == "G" else 0.0)  # LibRaw often leaves the second G at 0
        if v <= 0:
            return None
        per.append(v / green)
    return tuple(per)


@contextlib.contextmanager
def _quiet_stderr():
    """Silence LibRaw's own C-level messages (e.g. 'Unexpected end of file'); we report errors."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


def _need_pattern(p: Path, pattern: str | None) -> str:
    if not pattern:
        raise BadInputError(f"{p}: this file carries no CFA pattern; pass `pattern` (RGGB, BGGR, GRBG or GBRG)")
    return validate_pattern(pattern)


def _read_headerless(p: Path, pattern, width, height, bits) -> RawImage:
    pat = _need_pattern(p, pattern)
    if not width or not height or not bits:
        raise BadInputError(f"{p}: a headerless RAW needs `width`, `height` and `bits`")
    if not 1 <= bits <= 16:
        raise BadInputError(f"{p}: `bits` must be between 1 and 16, got {bits}")
    dtype = np.dtype("<u2") if bits > 8 else np.dtype("u1")
    expected = width * height * dtype.itemsize
    size = p.stat().st_size
    if size != expected:
        raise BadRawError(
            f"{p}: {size} bytes, but {width}x{height} at {dtype.itemsize} byte(s) a sample needs "
            f"{expected}; check `width`/`height`/`bits`"
        )
    dn = np.fromfile(p, dtype=dtype).reshape(height, width)
    return RawImage(dn=dn, pattern=pat, black_level=(0.0,) * 4, white_level=float(2**bits - 1), bit_depth=bits, path=str(p))


def _read_decoded(p: Path, pattern, bits) -> RawImage:
    pat = _need_pattern(p, pattern)
    if p.suffix.lower() == ".npy":
        try:
            dn = np.load(p, allow_pickle=False)
        except Exception as e:  # numpy raises several types for bad files
            raise BadRawError(f"{p}: not a readable .npy array ({e})") from None
    else:
        import cv2

        dn = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        if dn is None:
            raise BadRawError(f"{p}: OpenCV cannot read it; is it a complete PNG/TIFF?")
    if dn.ndim != 2:
        raise BadRawError(f"{p}: expected a single-channel mosaic, got an array of shape {dn.shape}")
    if np.issubdtype(dn.dtype, np.floating):
        # Already normalised data: levels are 0 and 1.
        return RawImage(dn=dn.astype(np.float32), pattern=pat, black_level=(0.0,) * 4, white_level=1.0, path=str(p))
    if not np.issubdtype(dn.dtype, np.integer):
        raise BadRawError(f"{p}: unsupported array type {dn.dtype}")
    if bits is None:
        bits = 8 * dn.dtype.itemsize
    return RawImage(dn=dn, pattern=pat, black_level=(0.0,) * 4, white_level=float(2**bits - 1), bit_depth=bits, path=str(p))


def read_exif(path: str | os.PathLike) -> dict:
    """ISO, exposure time (s), maker and model from a file's EXIF/TIFF tags, where present.

    Uses ``exifread`` (rawpy exposes neither the camera's make nor its model); FITS files: their
    header. A DNG without Make/Model tags names its camera in UniqueCameraModel, which becomes
    ``model``. Missing or
    unreadable tags give ``None``.
    """
    import logging

    if Path(path).suffix.lower() in FITS_SUFFIXES:
        return read_fits_header(path)

    import exifread

    out: dict = {"iso": None, "exposure_time": None, "maker": None, "model": None}
    # exifread logs parse problems of exotic files at WARNING; they are not our user's problem.
    logging.getLogger("exifread").setLevel(logging.ERROR)
    try:
        with open(path, "rb") as f:
            tags = exifread.process_file(f, details=False)
    except Exception:
        return out
    for key in ("EXIF ISOSpeedRatings", "Image ISOSpeedRatings", "EXIF PhotographicSensitivity", "MakerNote ISO"):
        if key in tags:
            try:
                out["iso"] = float(_first(tags[key]))
                break
            except (TypeError, ValueError):
                pass
    if out["iso"] == 65535:  # saturated 16-bit tag: the real value is in ISOSpeed (EXIF 2.3)
        for key in ("EXIF ISOSpeed", "Image ISOSpeed"):
            if key in tags:
                try:
                    out["iso"] = float(_first(tags[key]))
                except (TypeError, ValueError):
                    pass
    for key in ("EXIF ExposureTime", "Image ExposureTime"):
        if key in tags:
            try:
                out["exposure_time"] = float(Fraction(str(_first(tags[key]))))
                break
            except (TypeError, ValueError, ZeroDivisionError):
                pass
    if "Image Make" in tags:
        out["maker"] = str(tags["Image Make"]).strip() or None
    if "Image Model" in tags:
        out["model"] = str(tags["Image Model"]).strip() or None
    if out["maker"] is None and out["model"] is None:
        unique = tags.get("Image UniqueCameraModel") or tags.get("Image Tag 0xC614")  # DNG tag 50708
        out["model"] = str(unique).strip() or None if unique is not None else None
    return out


def _first(tag):
    vals = getattr(tag, "values", tag)
    if isinstance(vals, (list, tuple)):
        vals = vals[0]
    return vals
