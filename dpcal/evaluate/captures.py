"""Real RAW captures as evaluation data: class folders of files in any format LibRaw reads.

Per file: the Bayer mosaic, black and white levels, CFA pattern, ISO and as-shot white balance
come from the file (:func:`dpcal.io.raw.read_raw`); the noise parameters from the camera
profile at that ISO (:meth:`dpcal.profile.Profile.noise`, per CFA plane). The mosaic is then
reduced to the model's input by :func:`reduce_mosaic`:

1. shift the crop origin by one pixel in y and/or x where needed so that the crop starts with
   the checkpoint's CFA pattern (every 2x2 Bayer pattern is a shift of any other);
2. centre-crop a square of ``k * size`` pixels, ``k = floor(min(H, W) / size)``;
3. reduce each CFA plane by ``k`` in each direction, so every output pixel keeps its colour:

   ``subsample`` (default, the paper's captured-data path: "patches by subsampling ... not
   affecting per-pixel noise")
       take one sample of each ``k x k`` group of same-colour samples; the noise parameters
       are those of the capture.
   ``bin``
       average the ``n = k^2`` samples. For independent pixels of one scene value ``x`` the
       mean has variance ``(alpha x + sigma^2) / n = (alpha / n) x + (sigma / sqrt(n))^2``, so
       the binned mosaic is Poisson-Gaussian to second order with ``alpha / n`` and
       ``sigma / sqrt(n)`` (less noise: it looks like more light).

White balance: checkpoints trained in ``reference`` simulation mode saw sRGB images mosaicked as
they are, i.e. white-balanced; for them the file's as-shot gains ``g`` (green = 1) are applied
per plane, which scales the noise exactly: ``alpha -> g alpha``, ``sigma -> g sigma``.
``realistic`` checkpoints saw unprocessed (camera-balanced) mosaics and get none. Values are
clipped to [0, 1] last, as the simulator clips.

Each image's equivalent illuminance (reported in the predictions' ``lux`` column) is the one at
which the profile's light model picks the file's ISO.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from pathlib import Path

import numpy as np
import torch

from dpcal.cfa import PLANES, plane_offsets, validate_pattern
from dpcal.errors import BadInputError

log = logging.getLogger("dpcal")

__all__ = ["CaptureDataset", "CaptureListing", "open_captures", "pattern_offset", "reduce_mosaic"]


def pattern_offset(file_pattern: str, pattern: str) -> tuple[int, int]:
    """``(dy, dx)`` such that the mosaic cropped from ``(dy, dx)`` has CFA ``pattern``.

    Examples
    --------
    >>> pattern_offset("RGGB", "BGGR"), pattern_offset("GRBG", "GRBG"), pattern_offset("RGGB", "GRBG")
    ((1, 1), (0, 0), (0, 1))
    """
    f, p = validate_pattern(file_pattern), validate_pattern(pattern)
    for dy in (0, 1):
        for dx in (0, 1):
            if all(f[2 * ((y + dy) % 2) + (x + dx) % 2] == p[2 * y + x] for y in (0, 1) for x in (0, 1)):
                return dy, dx
    raise BadInputError(f"CFA {file_pattern} cannot be shifted to {pattern}")  # pragma: no cover - all Bayer can


def reduce_mosaic(mosaic: np.ndarray, file_pattern: str, pattern: str, size: int,
                  resample: str = "subsample") -> tuple[np.ndarray, int]:
    """Crop and reduce a mosaic to ``size x size`` in CFA ``pattern`` (module docstring).

    Parameters
    ----------
    mosaic : ndarray (H, W)
    file_pattern, pattern : str
        CFA of ``mosaic`` and of the result.
    size : int
        Output side (even).
    resample : {"subsample", "bin"}

    Returns
    -------
    (ndarray (size, size) float32, int)
        The reduced mosaic and the number of samples averaged per output pixel (1 for
        ``subsample``).

    Raises
    ------
    BadInputError
        The mosaic is smaller than ``size`` (after the pattern shift).

    Examples
    --------
    >>> m = np.arange(64, dtype=np.float32).reshape(8, 8)
    >>> out, n = reduce_mosaic(m, "RGGB", "RGGB", 4, "bin")
    >>> n, out[0].tolist()          # R at (0,0): mean of R samples (0,0),(0,2),(2,0),(2,2)
    (4, [9.0, 10.0, 13.0, 14.0])
    """
    if size % 2 or size < 2:
        raise BadInputError(f"`size` must be an even number of pixels, got {size}")
    dy, dx = pattern_offset(file_pattern, pattern)
    h, w = mosaic.shape[0] - dy, mosaic.shape[1] - dx
    k = min(h, w) // size
    if k < 1:
        raise BadInputError(f"the mosaic ({mosaic.shape[1]}x{mosaic.shape[0]}) is smaller than the model's {size} px")
    c = k * size
    y0 = dy + 2 * ((h - c) // 4)   # even offsets keep the pattern phase
    x0 = dx + 2 * ((w - c) // 4)
    crop = np.asarray(mosaic[y0:y0 + c, x0:x0 + c], dtype=np.float64)
    out = np.empty((size, size), dtype=np.float64)
    half = size // 2
    for py in (0, 1):
        for px in (0, 1):
            plane = crop[py::2, px::2]
            if resample == "bin":
                red = plane.reshape(half, k, half, k).mean(axis=(1, 3))
            elif resample == "subsample":
                red = plane[k // 2::k, k // 2::k][:half, :half]
            else:
                raise BadInputError(f"`resample` must be 'subsample' or 'bin', got {resample!r}")
            out[py::2, px::2] = red
    return out.astype(np.float32), (k * k if resample == "bin" else 1)


@dataclasses.dataclass
class CaptureListing:
    """Usable RAW files of a class-folder tree (:func:`open_captures`)."""

    source: object   # a dpcal.learn.data.DataSource of kind "captures"
    skipped: list[tuple[str, str]]


def open_captures(root: str | os.PathLike) -> CaptureListing:
    """List ``root/<class>/<RAW files>``; files that are not RAW formats LibRaw reads are skipped
    with a warning (Bayer checks happen when the files are read, :class:`CaptureDataset`).

    Raises
    ------
    BadInputError
        Missing folder, no class folders, no RAW files.
    """
    from dpcal.io.raw import RAWPY_SUFFIXES
    from dpcal.learn.data import DataSource

    p = Path(root)
    if not p.is_dir():
        raise BadInputError(f"{p}: no such folder of RAW captures")
    classes = sorted(d.name for d in p.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise BadInputError(f"{p} has no class folders; expected {p}/<class>/<RAW files>")
    keys, paths, labels, skipped = [], [], [], []
    for ci, c in enumerate(classes):
        for f in sorted((p / c).rglob("*")):
            if not f.is_file() or f.name.startswith("."):
                continue
            rel = f.relative_to(p).as_posix()
            if f.suffix.lower() not in RAWPY_SUFFIXES:
                log.warning("skipping %s: not a RAW format LibRaw reads", rel)
                skipped.append((rel, "not a RAW format"))
                continue
            keys.append(rel)
            paths.append(str(f))
            labels.append(ci)
    if not keys:
        raise BadInputError(f"no RAW files in the class folders of {p}")
    src = DataSource("captures", str(p.resolve()), classes, keys, paths, np.array(labels, dtype=np.int64))
    return CaptureListing(src, skipped)


class CaptureDataset(torch.utils.data.Dataset):
    """Real captures reduced to a model's input, with noise parameters from a profile.

    Reads every file once at construction (reduced mosaics are small); files LibRaw cannot read,
    non-Bayer files, files without an ISO (unless ``iso`` is given) and files smaller than
    ``size`` are skipped with a warning each. Items match
    :class:`dpcal.learn.data.MosaicDataset`: ``(mosaic (1, S, S), alpha (4), sigma (4), lux,
    label, seed)``; :attr:`source` lists the usable files (its ``keys`` align with the items).

    Raises
    ------
    BadInputError
        No file is usable.
    """

    def __init__(self, listing: CaptureListing, profile, *, size: int, pattern: str, white_balance: bool,
                 iso: float | None = None, resample: str = "subsample"):
        from dpcal.io.raw import read_raw
        from dpcal.profile import load_profile

        prof = load_profile(profile)
        light = prof.doc["light"]
        src = listing.source
        keep, mosaics, alphas, sigmas, luxes = [], [], [], [], []
        self.isos, self.skipped = [], list(listing.skipped)
        for i, path in enumerate(src.paths):
            key = src.keys[i]
            try:
                r = read_raw(path)
                file_iso = r.iso if r.iso else iso
                if not file_iso:
                    raise BadInputError("the file has no ISO in its metadata; pass `iso=ISO`")
                m, n = reduce_mosaic(r.normalized(), r.pattern, pattern, size, resample)
            except BadInputError as e:
                msg = str(e).replace(f"{path}: ", "")
                log.warning("skipping %s: %s", key, msg)
                self.skipped.append((key, msg))
                continue
            noise = prof.noise(iso=float(file_iso))
            a = np.array([noise.alpha[q] for q in PLANES])
            s = np.array([noise.sigma[q] for q in PLANES])
            if white_balance and r.white_balance:
                g = np.asarray(r.white_balance, dtype=np.float64)
                m = m * _plane_values(g, pattern, size)
                a, s = a * g, s * g
            a, s = a / n, s / math.sqrt(n)
            keep.append(i)
            mosaics.append(np.clip(m, 0.0, 1.0).astype(np.float32))
            alphas.append(a)
            sigmas.append(s)
            luxes.append(float(light["lux_per_light_level"]) * float(light["iso_at_unit_light_level"]) / float(file_iso))
            self.isos.append(float(file_iso))
        if not keep:
            raise BadInputError(f"none of the {len(src.paths) + len(listing.skipped)} files in {src.root} is a usable "
                                f"Bayer RAW capture ({self.skipped[0][0]}: {self.skipped[0][1]})")
        import dataclasses as dc

        self.source = dc.replace(src, keys=[src.keys[i] for i in keep], paths=[src.paths[i] for i in keep],
                                 labels=src.labels[keep])
        self.mosaics = torch.from_numpy(np.stack(mosaics)[:, None])
        self.alpha = torch.from_numpy(np.stack(alphas).astype(np.float32))
        self.sigma = torch.from_numpy(np.stack(sigmas).astype(np.float32))
        self.lux = luxes

    def __len__(self) -> int:
        return len(self.lux)

    def __getitem__(self, i: int):
        return (self.mosaics[i], self.alpha[i], self.sigma[i], self.lux[i], int(self.source.labels[i]), 0)


def _plane_values(values: np.ndarray, pattern: str, size: int) -> np.ndarray:
    """Per-plane values ``(4,)`` as a ``(size, size)`` map over a ``pattern`` mosaic."""
    out = np.empty((size, size))
    for q, (oy, ox) in plane_offsets(validate_pattern(pattern)).items():
        out[oy::2, ox::2] = values[PLANES.index(q)]
    return out
