"""Decode an image and bring it to ``size`` x ``size``: the crop and resize rules.

``reference`` mode reproduces the Dirty Pixels reference code (TensorFlow 1, slim
preprocessing as modified there):

* eval: ``tf.image.central_crop(0.875)`` (offset ``int((n - 0.875 n) / 2)`` per axis, size
  ``n - 2 * offset``), then ``tf.image.resize_images(..., NEAREST_NEIGHBOR)`` to ``size`` x
  ``size`` (TF1 legacy sampling: source index ``floor(i * n_in / n_out)``; the aspect ratio
  is not kept).
* train: ``tf.image.sample_distorted_bounding_box`` with the whole image as the box,
  ``min_object_covered=0.1``, aspect ratio (w/h) in ``[0.75, 1.33]``, area fraction in
  ``[0.05, 1]``, 100 attempts then the whole image; nearest resize; random left-right flip.
  The sampler follows TF's rules (aspect uniform, height uniform between the area bounds,
  width rounded, constraints checked, position uniform); TF's random stream itself cannot be
  reproduced.
* full decode, 8-bit values divided by 255.

``realistic`` mode keeps the aspect ratio and averages pixels instead of picking them:

* eval: the central square of side ``0.875 * min(h, w)`` (the same field of view as the
  reference crop along the short side), area-resampled to ``size`` (i.e. "resize the short
  side to size / 0.875, centre crop size").
* train: the same random box as reference, area-resampled, random flip.
* JPEGs are decoded at 1/2, 1/4 or 1/8 scale in the DCT domain (libjpeg-turbo scaling, as
  ``PIL.Image.draft`` does) whenever the crop still has at least ``size`` pixels per side at
  that scale; the crop is aligned to the scaled blocks.

JPEGs are decoded by OpenCV (libjpeg-turbo; identical pixels to PIL, with less Python
overhead), CMYK and damaged files by PIL, other formats by OpenCV (keeps 16 bits) with PIL as
fallback. EXIF orientation is ignored, as PIL and TensorFlow do. The reference code decoded with
TensorFlow, whose JPEG decoder defaults to the fast integer DCT: its pixels can differ from
these by a level or two; every crop, resize and noise rule is reproduced exactly.

Bad input raises :class:`ImageSkip` with the reason (corrupt or truncated files, too small).
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm", ".gif"})
CROPS = ("eval", "train")
CENTRAL_FRACTION = 0.875
AREA_RANGE = (0.05, 1.0)
ASPECT_RANGE = (0.75, 1.33)  # the reference code's values (not exactly 4/3)
MIN_OBJECT_COVERED = 0.1
MAX_ATTEMPTS = 100

__all__ = [
    "IMAGE_SUFFIXES",
    "jpeg_header",
    "CROPS",
    "ImageSkip",
    "Crop",
    "central_crop_box",
    "nearest_indices",
    "sample_distorted_box",
    "plan_crop",
    "load_image",
]


class ImageSkip(Exception):
    """An input image that cannot be used; ``str(e)`` is the reason recorded in the manifest."""


@dataclasses.dataclass(frozen=True)
class Crop:
    """A crop box ``(y0, x0, h, w)`` in source pixels, and whether to flip left-right."""

    y0: int
    x0: int
    h: int
    w: int
    flip: bool = False


def central_crop_box(height: int, width: int, fraction: float = CENTRAL_FRACTION) -> Crop:
    """``tf.image.central_crop``: offset ``int((n - n * fraction) / 2)``, size ``n - 2 offset``.

    Examples
    --------
    >>> central_crop_box(375, 500)
    Crop(y0=23, x0=31, h=329, w=438, flip=False)
    """
    y0 = int((height - height * fraction) / 2)
    x0 = int((width - width * fraction) / 2)
    return Crop(y0, x0, height - 2 * y0, width - 2 * x0)


def nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Source indices of TF1's nearest-neighbour resize (``align_corners=False``, no half-pixel
    centres): ``floor(i * n_in / n_out)``.

    Examples
    --------
    >>> nearest_indices(5, 3).tolist()
    [0, 1, 3]
    """
    return (np.arange(n_out, dtype=np.int64) * n_in) // n_out


def sample_distorted_box(
    height: int,
    width: int,
    rng: np.random.Generator,
    *,
    area_range: tuple[float, float] = AREA_RANGE,
    aspect_range: tuple[float, float] = ASPECT_RANGE,
    min_object_covered: float = MIN_OBJECT_COVERED,
    max_attempts: int = MAX_ATTEMPTS,
) -> Crop:
    """Random sized crop by the rules of ``tf.image.sample_distorted_bounding_box``.

    The whole image is the object box, so a crop must also cover at least
    ``min_object_covered`` of the image. Per attempt: aspect ratio ``w/h`` uniform in
    ``aspect_range``; height uniform (integer) between the heights giving the minimum and
    maximum area at that aspect (capped by the image); width ``round(h * aspect)``; accepted if
    the area fraction and coverage constraints hold and it fits; position uniform. After
    ``max_attempts`` failures: the whole image.

    Examples
    --------
    >>> c = sample_distorted_box(375, 500, np.random.default_rng(0))
    >>> 0.1 <= c.h * c.w / (375 * 500) <= 1.0
    True
    """
    total = float(height * width)
    min_area = area_range[0] * total
    max_area = area_range[1] * total
    for _ in range(max_attempts):
        ar = rng.uniform(aspect_range[0], aspect_range[1])
        h_lo = int(round(math.sqrt(min_area / ar)))
        h_hi = int(round(math.sqrt(max_area / ar)))
        if round(h_hi * ar) > width:
            h_hi = int((width + 0.5 - 1e-7) / ar)
            if round(h_hi * ar) > width:
                h_hi -= 1
        h_hi = min(h_hi, height)
        h_lo = min(h_lo, h_hi)
        h = int(h_lo + rng.integers(0, h_hi - h_lo + 1)) if h_hi > h_lo else h_hi
        w = int(round(h * ar))
        area = h * w
        if area < min_area:
            h += 1
            w = int(round(h * ar))
            area = h * w
        if area > max_area:
            h -= 1
            w = int(round(h * ar))
            area = h * w
        if not (min_area <= area <= max_area and 0 < w <= width and 0 < h <= height):
            continue
        if area / total < min_object_covered:
            continue
        y0 = int(rng.integers(0, height - h + 1))
        x0 = int(rng.integers(0, width - w + 1))
        return Crop(y0, x0, h, w)
    return Crop(0, 0, height, width)


def realistic_eval_box(height: int, width: int, fraction: float = CENTRAL_FRACTION) -> Crop:
    """Central square of side ``round(fraction * min(h, w))``.

    Examples
    --------
    >>> realistic_eval_box(375, 500)
    Crop(y0=23, x0=86, h=328, w=328, flip=False)
    """
    side = max(1, int(round(fraction * min(height, width))))
    return Crop((height - side) // 2, (width - side) // 2, side, side)


def _snap(box: Crop, f: int, height: int, width: int) -> Crop:
    """Align a crop to the ``f`` x ``f`` blocks a 1/``f`` DCT-scaled decode averages, so the
    decoded crop covers exactly the same source pixels (the box moves by < f/2 px)."""
    y0 = min(int(round(box.y0 / f)) * f, (height // f - 1) * f)
    x0 = min(int(round(box.x0 / f)) * f, (width // f - 1) * f)
    h = max(f, min(int(round(box.h / f)) * f, (height - y0) // f * f))
    w = max(f, min(int(round(box.w / f)) * f, (width - x0) // f * f))
    return Crop(y0, x0, h, w, box.flip)


def plan_crop(mode: str, crop: str, height: int, width: int, rng: np.random.Generator | None) -> Crop:
    """The crop box (and flip) for a ``height`` x ``width`` source under ``mode``/``crop``."""
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {', '.join(CROPS)}, got {crop!r}")
    if crop == "train":
        if rng is None:
            raise ValueError("a train crop needs a random generator")
        box = sample_distorted_box(height, width, rng)
        flip = bool(rng.random() < 0.5)
        return dataclasses.replace(box, flip=flip)
    if mode == "reference":
        return central_crop_box(height, width)
    return realistic_eval_box(height, width)


# ---------------------------------------------------------------------------------------------
# decoding


def _to_float(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        return a.astype(np.float32) * np.float32(1 / 255)
    if a.dtype == np.uint16:
        return a.astype(np.float32) * np.float32(1 / 65535)
    if a.dtype.kind == "f":
        return np.clip(np.nan_to_num(a.astype(np.float32)), 0, 1)
    if a.dtype.kind in "iu":
        info = np.iinfo(a.dtype)
        return np.clip(a.astype(np.float64) / info.max, 0, 1).astype(np.float32)
    raise ImageSkip(f"unsupported pixel type {a.dtype}")


_LUTS: dict = {}


def _to_linear_float(a: np.ndarray, tone: str) -> np.ndarray:
    """Integer or float pixels -> float32, through the pointwise inverse tone curve ``tone``
    (exact lookup tables for 8- and 16-bit codes)."""
    if tone == "none":
        return _to_float(a)
    if a.dtype in (np.uint8, np.uint16):
        bits = 8 if a.dtype == np.uint8 else 16
        lut = _LUTS.get((tone, bits))
        if lut is None:
            from dpcal.physics.color import inverse_tone_lut

            lut = _LUTS[(tone, bits)] = inverse_tone_lut(tone, bits)
        if bits == 8:
            import cv2

            return cv2.LUT(a, lut)
        return np.take(lut, a)
    import torch

    from dpcal.physics.color import inverse_tone

    return inverse_tone(torch.from_numpy(_to_float(a)), tone).numpy()


_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def jpeg_header(data: bytes) -> tuple[int, int, int] | None:
    """``(width, height, components)`` from a JPEG's frame header, or None if not found.

    Walks the marker segments up to the first SOF marker (a few dozen bytes of work, instead
    of PIL's full header parse in Python).

    Examples
    --------
    >>> import io
    >>> from PIL import Image
    >>> b = io.BytesIO(); Image.new("RGB", (40, 30)).save(b, "JPEG")
    >>> jpeg_header(b.getvalue())
    (40, 30, 3)
    """
    i, n = 2, len(data)
    if data[:2] != b"\xff\xd8":
        return None
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        m = data[i + 1]
        if m == 0xFF:  # fill byte
            i += 1
            continue
        if m == 0x01 or 0xD0 <= m <= 0xD8:  # markers without a length
            i += 2
            continue
        seg = (data[i + 2] << 8) | data[i + 3]
        if m in _SOF:
            if i + 10 > n:
                return None
            h = (data[i + 5] << 8) | data[i + 6]
            w = (data[i + 7] << 8) | data[i + 8]
            return w, h, data[i + 9]
        i += 2 + seg
    return None


def _decode_jpeg_cv2(data: bytes, factor: int, comps: int, notes: list[str]) -> np.ndarray | None:
    """Decode a complete 1- or 3-component JPEG with OpenCV (libjpeg-turbo, DCT scaling for
    ``factor`` 2/4/8, EXIF orientation ignored like PIL and TensorFlow). None: let PIL decide."""
    import cv2

    if comps not in (1, 3) or data.rstrip(b"\0")[-2:] != b"\xff\xd9":
        return None  # CMYK, or no end marker (truncated, or trailing bytes): PIL handles those
    flag = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8}[factor]
    a = cv2.imdecode(np.frombuffer(data, np.uint8), flag | cv2.IMREAD_IGNORE_ORIENTATION)
    if a is None:
        return None
    if comps == 1:
        notes.append("grayscale replicated to RGB")
    return a  # BGR


def _decode_pil(im, factor: int, notes: list[str]) -> np.ndarray:
    """Decode an opened PIL image, at 1/``factor`` scale through the JPEG DCT (``draft``)."""
    from PIL import Image

    try:
        if factor > 1 and im.format == "JPEG":
            # draft() picks the largest scale s in (8, 4, 2) with size // request >= s.
            im.draft(im.mode, (max(1, im.size[0] // factor), max(1, im.size[1] // factor)))
        im.load()
    except Image.DecompressionBombError as e:
        raise ImageSkip(f"refused: {e}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageSkip(f"corrupt or truncated image ({e})") from None
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im)
        notes.append("16-bit grayscale replicated to RGB" if mode != "F" else "float grayscale replicated to RGB")
        if a.dtype.kind in "iu" and a.min() >= 0 and a.max() <= 65535:
            a = a.astype(np.uint16)
        return np.repeat(a[..., None], 3, axis=2)
    if mode == "CMYK":
        notes.append("CMYK converted to RGB")
    elif mode in ("L", "1"):
        notes.append("grayscale replicated to RGB")
    elif mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info):
        notes.append("alpha channel dropped")
    elif mode not in ("RGB", "P"):
        notes.append(f"{mode} converted to RGB")
    if mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im)


def _decode_cv2(data: bytes, notes: list[str]) -> np.ndarray | None:
    """Decode PNG/TIFF/... keeping 16-bit depth, in BGR order; None if OpenCV cannot read it."""
    import cv2

    a = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if a is None:
        return None
    if a.dtype == np.uint16:
        notes.append("16-bit input")
    if a.ndim == 2:
        notes.append("grayscale replicated to RGB")
        return np.repeat(a[..., None], 3, axis=2)
    if a.shape[2] == 4:
        notes.append("alpha channel dropped")
        return a[..., :3]
    if a.shape[2] == 3:
        return a
    if a.shape[2] == 2:
        notes.append("alpha channel dropped; grayscale replicated to RGB")
        return np.repeat(a[..., :1], 3, axis=2)
    raise ImageSkip(f"{a.shape[2]} channels are not an RGB image")


def load_image(
    path: str | os.PathLike,
    size: int,
    *,
    mode: str = "realistic",
    crop: str = "eval",
    rng: np.random.Generator | None = None,
    min_size: int = 32,
    draft: bool = True,
    tone: str = "none",
) -> tuple[np.ndarray, dict]:
    """Decode ``path`` and return a ``size`` x ``size`` x 3 float32 image in [0, 1].

    Parameters
    ----------
    path : path-like
    size : int
        Output side in pixels.
    mode : {"realistic", "reference"}
        Crop/resize rules (module docstring).
    crop : {"eval", "train"}
    rng : numpy Generator
        Random crop and flip (``train`` only).
    min_size : int
        Images whose shorter side is below this are skipped.
    draft : bool
        Allow JPEG DCT-domain downscaling (realistic mode only; reference decodes fully).
    tone : {"none", "gamma", "unprocess"}
        Apply this linearisation's pointwise inverse tone curve
        (:func:`dpcal.physics.color.inverse_tone`) to the decoded codes, before resizing, so the
        result is linear light averaged over the source pixels ("none": sRGB values as is).

    Returns
    -------
    image : ndarray (size, size, 3), float32
    info : dict
        ``width``, ``height`` (source), ``crop`` (y0, x0, h, w, flip) and ``notes`` (list of str).

    Raises
    ------
    ImageSkip
        Unreadable, corrupt or truncated files, unsupported layouts, too-small images.
    """
    import io

    import cv2
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    notes: list[str] = []
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ImageSkip(f"cannot read file ({e.strerror})") from None
    # The header gives the size, which decides the crop and how far the JPEG decoder may
    # downscale (DCT scaling); the data is read once and decoded from memory.
    hdr = jpeg_header(data)
    im = None
    if hdr is None:
        try:
            im = Image.open(io.BytesIO(data))
            width, height = im.size
        except UnidentifiedImageError:
            raise ImageSkip("not a readable image (unknown or corrupt format)") from None
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise ImageSkip(f"corrupt or unreadable image ({e})") from None
        is_jpeg = im.format == "JPEG"
    else:
        width, height, comps = hdr
        is_jpeg = True
    if min(width, height) < min_size:
        raise ImageSkip(f"image is {width}x{height} px, smaller than min_size {min_size}")
    box = plan_crop(mode, crop, height, width, rng)
    if is_jpeg:
        factor = 1
        if draft and mode == "realistic":
            # Largest DCT scale 1/factor at which the crop keeps >= size pixels per side.
            short = min(box.h, box.w)
            factor = next((f for f in (8, 4, 2) if short // f >= size), 1)
            if factor > 1:
                box = _snap(box, factor, height, width)
        a = _decode_jpeg_cv2(data, factor, comps, notes) if hdr is not None else None
        bgr = a is not None
        if a is None:
            if im is None:
                try:
                    im = Image.open(io.BytesIO(data))
                except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as e:
                    raise ImageSkip(f"corrupt or unreadable image ({e})") from None
            a = _decode_pil(im, factor, notes)
    else:
        a = _decode_cv2(data, notes)
        bgr = a is not None
        if a is None:
            a = _decode_pil(im, 1, notes)
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ImageSkip("empty image")
    # Box in decoded pixels.
    sy = a.shape[0] / height
    sx = a.shape[1] / width
    y0, x0 = int(round(box.y0 * sy)), int(round(box.x0 * sx))
    y1 = max(y0 + 1, min(a.shape[0], int(round((box.y0 + box.h) * sy))))
    x1 = max(x0 + 1, min(a.shape[1], int(round((box.x0 + box.w) * sx))))
    region = a[y0:y1, x0:x1]
    if mode == "reference":
        # Nearest sampling picks source pixels: do it on the integers, then scale (exact).
        out = region[nearest_indices(region.shape[0], size)][:, nearest_indices(region.shape[1], size)]
        out = _to_linear_float(out, tone)
    else:
        f = _to_linear_float(region, tone)
        shrink = region.shape[0] >= size and region.shape[1] >= size
        out = cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        out = np.clip(out, 0, 1)
    if bgr:
        out = out[..., ::-1]
    if box.flip:
        out = out[:, ::-1]
    info = {"width": width, "height": height, "crop": [box.y0, box.x0, box.h, box.w, box.flip], "notes": notes}
    return np.ascontiguousarray(out, dtype=np.float32), info
