"""Calibration chart specifications: layout, markers, patches and the exact chart raster.

A chart is described by a JSON document (``chart.json``) that ``dpcal make-chart`` writes next to
the chart images and that ``fit-psf`` / ``fit-noise`` read. Everything in it is in **chart
pixels**: pixels of the chart raster (printer dots at the chart's DPI, or screen pixels), with
continuous coordinates whose integers fall on pixel *edges* (raster pixel ``(row i, col j)``
covers ``x in [j, j+1), y in [i, i+1)``). Sensor coordinates elsewhere in dpcal put pixel
*centres* on integers.

Layout, from the outside in (all sizes whole noise cells; one cell is ``cell_px`` chart pixels)::

    white margin | black frame | white gap (black key block at top-left) | checker ring (2 squares)
    | interior: Bernoulli(0.5) noise field (PSF chart) or grey patches (gray chart)

The checker ring is two squares thick, so its middle line carries X-corners all around the
interior; its black and white squares double as photometric patches. The key block breaks the
chart's four-fold symmetry so that its orientation can be found. The display variant of the PSF
chart is a frame sequence: a geometry frame (the checkerboard continued over the interior), a
black and a white frame, and ``n`` noise frames with independent seeds.

The chart raster is regenerated exactly from the spec (:func:`chart_raster`): the noise bits
come from PCG64's raw output (stable across numpy versions), and the spec records their SHA-256.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from dpcal._version import __version__
from dpcal.errors import BadInputError
from dpcal.io.atomic import write_json_atomic
from dpcal.physics.tone import linear_to_srgb, srgb_to_linear

SCHEMA = "dpcal-chart"
SCHEMA_VERSION = 1
NOISE_GENERATOR = "pcg64-raw-bits-v1"
KINDS = ("psf", "gray")
MEDIA = ("print", "display")
FRAME_ROLES = ("chart", "geometry", "black", "white", "noise")


# ----------------------------------------------------------------------------------------------
# noise bits and colour encoding


def noise_bits(seed: int, frame: int, nx: int, ny: int) -> np.ndarray:
    """Bernoulli(0.5) cells ``(ny, nx)`` as uint8 0/1, reproducible across numpy versions.

    Uses the raw 64-bit output of PCG64 seeded by ``SeedSequence([seed, frame])``; numpy
    guarantees neither ``Generator`` streams nor their methods across versions, but the raw
    bit generator and the seed sequence are fixed algorithms.

    Examples
    --------
    >>> noise_bits(1, 0, 8, 2)
    array([[1, 1, 1, 1, 1, 1, 1, 1],
           [0, 0, 1, 0, 0, 1, 1, 1]], dtype=uint8)
    """
    n = nx * ny
    bg = np.random.PCG64(np.random.SeedSequence([int(seed), int(frame)]))
    raw = bg.random_raw((n + 63) // 64).astype("<u8")
    bits = np.unpackbits(raw.view(np.uint8), bitorder="little")[:n]
    return bits.reshape(ny, nx)


def bits_sha256(bits: np.ndarray) -> str:
    return hashlib.sha256(np.packbits(np.ascontiguousarray(bits, dtype=np.uint8)).tobytes()).hexdigest()


# ----------------------------------------------------------------------------------------------
# the spec


@dataclasses.dataclass
class ChartSpec:
    """A chart's machine-readable description (the content of ``chart.json``).

    Attributes
    ----------
    kind : {"psf", "gray"}
    medium : {"print", "display"}
    size_px : (width, height)
        Chart raster size in chart pixels.
    cell_px : int
        Chart pixels per noise cell (the layout unit).
    layout : dict
        Geometry in chart pixels: ``margin``, ``frame``, ``gap``, ``square``, ``frame_rect``
        (outer edge of the black frame ``[x0, y0, x1, y1]``), ``ring_rect``, ``interior_rect``,
        ``key_rect``, ``grid_shape`` (squares along x and y in the ring's grid).
    corners : ndarray (n, 2)
        X-corner positions ``(x, y)`` of the ring (chart pixels, edge convention).
    corner_polarity : ndarray (n,)
        Value (0 or 1) of the square to the lower right of each corner.
    squares : list of dict
        Ring squares ``{"rect": [x0, y0, x1, y1], "value": 0 or 1}`` (photometric patches).
    noise : dict or None
        PSF charts: ``rect``, ``cells`` ``[nx, ny]``, ``cell_px``, ``seed``, ``generator``,
        ``sha256`` (per frame).
    patches : list of dict
        Gray charts: ``{"name", "rect", "value" (linear reflectance), "png_value"}``.
    background : float
        Gray charts: linear value of the background between patches.
    frames : list of dict
        ``{"role": "chart"|"geometry"|"black"|"white"|"noise", "file": name, "seed_frame": i}``.
    dpi, size_mm, screen_px : physical description (print: dpi and size_mm; display: screen_px)
    path : Path or None
        Where the spec was loaded from (frame files are relative to it).
    """

    kind: str
    medium: str
    size_px: tuple[int, int]
    cell_px: int
    layout: dict
    corners: np.ndarray
    corner_polarity: np.ndarray
    squares: list
    noise: dict | None = None
    patches: list = dataclasses.field(default_factory=list)
    background: float = 0.18
    frames: list = dataclasses.field(default_factory=list)
    dpi: float | None = None
    size_mm: tuple[float, float] | None = None
    screen_px: tuple[int, int] | None = None
    files: dict = dataclasses.field(default_factory=dict)
    path: Path | None = None

    # ------------------------------------------------------------------------------------
    @property
    def width(self) -> int:
        return int(self.size_px[0])

    @property
    def height(self) -> int:
        return int(self.size_px[1])

    @property
    def square(self) -> int:
        return int(self.layout["square"])

    @property
    def mm_per_px(self) -> float | None:
        return 25.4 / self.dpi if self.dpi else None

    def noise_frames(self) -> list[int]:
        return [i for i, f in enumerate(self.frames) if f["role"] in ("noise", "chart")]

    @property
    def chart_id(self) -> str:
        """A short fingerprint of what the chart shows (kind, raster size, cell, layout, noise
        checksums or patches): printed on the page, so a photo can be matched to its spec.

        Examples
        --------
        >>> a, b = build_spec("psf", screen=(640, 480), square=16), build_spec("psf", screen=(640, 480), square=16, seed=1)
        >>> len(a.chart_id), a.chart_id == build_spec("psf", screen=(640, 480), square=16).chart_id, a.chart_id == b.chart_id
        (10, True, False)
        """
        key = json.dumps([self.kind, list(self.size_px), self.cell_px, self.layout,
                          (self.noise or {}).get("sha256"), self.patches], sort_keys=True, default=str)
        return hashlib.sha256(key.encode()).hexdigest()[:10]

    # ------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        doc: dict[str, Any] = {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "kind": self.kind,
            "medium": self.medium,
            "size_px": [int(v) for v in self.size_px],
            "cell_px": int(self.cell_px),
            "dpi": self.dpi,
            "size_mm": list(self.size_mm) if self.size_mm else None,
            "screen_px": list(self.screen_px) if self.screen_px else None,
            "units": "chart pixels; integer coordinates on pixel edges (pixel (i, j) covers x in [j, j+1), y in [i, i+1))",
            "layout": self.layout,
            "corners": np.asarray(self.corners, float).tolist(),
            "corner_polarity": np.asarray(self.corner_polarity, int).tolist(),
            "squares": self.squares,
            "noise": self.noise,
            "patches": self.patches,
            "background": self.background,
            "frames": self.frames,
            "files": self.files,
            "dpcal_version": __version__,
        }
        return doc

    @classmethod
    def from_dict(cls, doc: Any, path: Path | None = None) -> "ChartSpec":
        where = f"{path}: " if path else ""
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
            raise BadInputError(f"{where}not a dpcal chart spec (no \"schema\": \"{SCHEMA}\"); "
                                "make one with `dpcal make-chart`")
        if doc.get("schema_version") != SCHEMA_VERSION:
            raise BadInputError(f"{where}chart spec version {doc.get('schema_version')!r} is not supported "
                                f"(this dpcal reads version {SCHEMA_VERSION})")
        try:
            spec = cls(
                kind=doc["kind"],
                medium=doc["medium"],
                size_px=tuple(int(v) for v in doc["size_px"]),
                cell_px=int(doc["cell_px"]),
                layout=dict(doc["layout"]),
                corners=np.asarray(doc["corners"], float).reshape(-1, 2),
                corner_polarity=np.asarray(doc["corner_polarity"], int),
                squares=list(doc["squares"]),
                noise=doc.get("noise"),
                patches=list(doc.get("patches") or []),
                background=float(doc.get("background", 0.18)),
                frames=list(doc["frames"]),
                dpi=doc.get("dpi"),
                size_mm=tuple(doc["size_mm"]) if doc.get("size_mm") else None,
                screen_px=tuple(doc["screen_px"]) if doc.get("screen_px") else None,
                files=dict(doc.get("files") or {}),
                path=path,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise BadInputError(f"{where}malformed chart spec ({type(e).__name__}: {e})") from None
        spec.validate()
        return spec

    def validate(self) -> None:
        """Raise :class:`BadInputError` with the first inconsistency found."""
        where = f"{self.path}: " if self.path else ""
        if self.kind not in KINDS:
            raise BadInputError(f"{where}chart kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.medium not in MEDIA:
            raise BadInputError(f"{where}chart medium {self.medium!r} is not one of {', '.join(MEDIA)}")
        w, h = self.size_px
        if w < 16 or h < 16 or self.cell_px < 1:
            raise BadInputError(f"{where}chart size {w}x{h} / cell {self.cell_px} px is not usable")
        c = self.corners
        if len(c) < 4 or np.any(c < 0) or np.any(c[:, 0] > w) or np.any(c[:, 1] > h):
            raise BadInputError(f"{where}chart corners are missing or outside the {w}x{h} chart")
        if len(self.corner_polarity) != len(c):
            raise BadInputError(f"{where}corner_polarity has {len(self.corner_polarity)} entries for {len(c)} corners")
        for f in self.frames:
            if f.get("role") not in FRAME_ROLES:
                raise BadInputError(f"{where}frame role {f.get('role')!r} is not one of {', '.join(FRAME_ROLES)}")
        if self.kind == "psf":
            n = self.noise
            if not n or "rect" not in n or "seed" not in n or "cells" not in n:
                raise BadInputError(f"{where}a PSF chart needs a 'noise' block with rect, cells and seed")
            if n.get("generator") != NOISE_GENERATOR:
                raise BadInputError(f"{where}unknown noise generator {n.get('generator')!r} (expected {NOISE_GENERATOR})")
            x0, y0, x1, y1 = n["rect"]
            nx, ny = n["cells"]
            if (x1 - x0, y1 - y0) != (nx * self.cell_px, ny * self.cell_px):
                raise BadInputError(f"{where}noise rect {n['rect']} does not hold {nx}x{ny} cells of {self.cell_px} px")
            if not self.noise_frames():
                raise BadInputError(f"{where}a PSF chart needs at least one chart or noise frame")
        if self.kind == "gray" and not self.patches:
            raise BadInputError(f"{where}a gray chart needs patches")

    # ------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        write_json_atomic(path, self.to_dict())
        self.path = Path(path)


def load_chart(path: str | os.PathLike) -> ChartSpec:
    """Read and validate a ``chart.json`` (a folder holding one is accepted too).

    Raises
    ------
    BadInputError
        Missing file, not JSON, not a chart spec, or an inconsistent spec.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "chart.json"
    if not p.is_file():
        raise BadInputError(f"{p}: no such chart spec; make one with `dpcal make-chart psf --out DIR`")
    try:
        doc = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise BadInputError(f"{p}: not valid JSON (line {e.lineno}: {e.msg})") from None
    return ChartSpec.from_dict(doc, p)


# ----------------------------------------------------------------------------------------------
# layout


def _layout(avail_x: int, avail_y: int, square: int, *, interior_multiple: bool = True, min_margin: int = 0,
            extra_bottom: int = 0) -> dict:
    """Layout in cells for ``avail`` cells: margins absorb what does not fill whole squares.

    ``min_margin`` cells of white stay free on every side (a printer's unprintable band) and
    ``extra_bottom`` more below the frame (the page's label and scale bar).
    """
    q = int(square)
    margin, frame, gap = max(2, q // 4, int(min_margin)), max(2, q // 2), max(2, q // 2)
    avail_y = avail_y - int(extra_bottom)
    per_side = margin + frame + gap + 2 * q
    nx = (avail_x - 2 * per_side) // q * q
    ny = (avail_y - 2 * per_side) // q * q
    if nx < 2 * q or ny < 2 * q:
        need_x = 2 * per_side + 2 * q
        need_y = 2 * per_side + 2 * q
        raise BadInputError(
            f"chart of {avail_x}x{avail_y} cells is too small for checker squares of {q} cells "
            f"(needs at least {need_x}x{need_y}{' with its margins' if min_margin or extra_bottom else ''}); use a "
            "larger size, a higher DPI, a smaller `square`" + (" or a smaller `margin_mm`" if min_margin else "")
        )
    # Centre the layout: spare cells go to the margins.
    mx0 = margin + (avail_x - 2 * per_side - nx) // 2
    my0 = margin + (avail_y - 2 * per_side - ny) // 2
    fx0, fy0 = mx0, my0
    fx1, fy1 = fx0 + 2 * (frame + gap + 2 * q) + nx, fy0 + 2 * (frame + gap + 2 * q) + ny
    rx0, ry0 = fx0 + frame + gap, fy0 + frame + gap
    return {
        "margin": margin, "frame": frame, "gap": gap, "square": q,
        "frame_rect": [fx0, fy0, fx1, fy1],
        "ring_rect": [rx0, ry0, rx0 + nx + 4 * q, ry0 + ny + 4 * q],
        "interior_rect": [rx0 + 2 * q, ry0 + 2 * q, rx0 + 2 * q + nx, ry0 + 2 * q + ny],
        "key_rect": [fx0 + frame, fy0 + frame, fx0 + frame + gap, fy0 + frame + gap],
        "grid_shape": [nx // q + 4, ny // q + 4],
    }


def _scale_layout(lay: dict, s: int) -> dict:
    out = {}
    for k, v in lay.items():
        if k == "grid_shape":
            out[k] = list(v)
        elif isinstance(v, list):
            out[k] = [int(x) * s for x in v]
        else:
            out[k] = int(v) * s
    return out


def _ring_geometry(lay: dict, full_grid: bool = False):
    """X-corners, their polarity and the squares of the ring (chart px)."""
    q = lay["square"]
    rx0, ry0 = lay["ring_rect"][:2]
    n, m = lay["grid_shape"]
    corners, pol, squares = [], [], []
    for j in range(m):
        for i in range(n):
            in_ring = i < 2 or i >= n - 2 or j < 2 or j >= m - 2
            if in_ring or full_grid:
                squares.append({"rect": [rx0 + i * q, ry0 + j * q, rx0 + (i + 1) * q, ry0 + (j + 1) * q],
                                "value": _square_value(i, j)})
    for j in range(1, m):
        for i in range(1, n):
            on_mid = i in (1, n - 1) or j in (1, m - 1)
            if on_mid or full_grid:
                corners.append([rx0 + i * q, ry0 + j * q])
                pol.append(_square_value(i, j))
    return np.asarray(corners, float), np.asarray(pol, int), squares


def _square_value(i: int, j: int) -> int:
    # The ring's top-left square is black, next to the white gap.
    return (i + j) % 2


# ----------------------------------------------------------------------------------------------
# rasters


def chart_raster(spec: ChartSpec, frame: int | None = None, *, geometry_grid: bool | None = None) -> np.ndarray:
    """The exact chart image of one frame as float32 linear values in [0, 1], ``(H, W)``.

    Parameters
    ----------
    spec : ChartSpec
    frame : int, optional
        Index into ``spec.frames`` (default: the first noise/chart frame, or 0).

    Raises
    ------
    BadInputError
        When the regenerated noise does not match the SHA-256 recorded in the spec.
    """
    if frame is None:
        nf = spec.noise_frames()
        frame = nf[0] if nf else 0
    role = spec.frames[frame]["role"] if spec.frames else "chart"
    w, h = spec.size_px
    if role == "black":
        return np.zeros((h, w), np.float32)
    if role == "white":
        return np.ones((h, w), np.float32)
    lay = spec.layout
    img = np.ones((h, w), np.float32)
    x0, y0, x1, y1 = lay["frame_rect"]
    f = lay["frame"]
    img[y0:y1, x0:x1] = 0.0
    img[y0 + f : y1 - f, x0 + f : x1 - f] = 1.0
    kx0, ky0, kx1, ky1 = lay["key_rect"]
    img[ky0:ky1, kx0:kx1] = 0.0
    full = role == "geometry" if geometry_grid is None else geometry_grid
    _, _, squares = _ring_geometry(lay, full_grid=full)
    for s in squares:
        a, b, c, d = s["rect"]
        img[b:d, a:c] = float(s["value"])
    if full:
        return img
    if spec.kind == "psf":
        n = spec.noise
        seed_frame = int(spec.frames[frame].get("seed_frame", 0)) if spec.frames else 0
        nx, ny = n["cells"]
        bits = noise_bits(n["seed"], seed_frame, nx, ny)
        want = n.get("sha256")
        if isinstance(want, list):
            want = want[seed_frame] if seed_frame < len(want) else None
        if want and bits_sha256(bits) != want:
            raise BadInputError(f"chart noise of frame {frame} does not match the spec's checksum; "
                                "the chart.json was edited or made by another tool")
        cp = spec.cell_px
        a, b, c, d = n["rect"]
        img[b:d, a:c] = np.repeat(np.repeat(bits.astype(np.float32), cp, 0), cp, 1)
    else:
        ix0, iy0, ix1, iy1 = lay["interior_rect"]
        img[iy0:iy1, ix0:ix1] = spec.background
        for p in spec.patches:
            a, b, c, d = p["rect"]
            img[b:d, a:c] = float(p["value"])
    return img


# ----------------------------------------------------------------------------------------------
# building specs


def build_spec(
    kind: str,
    *,
    size_mm: tuple[float, float] | None = None,
    dpi: float | None = None,
    screen: tuple[int, int] | None = None,
    cell_px: int | None = None,
    square: int = 40,
    seed: int = 0,
    n_noise_frames: int = 4,
    n_patches: int = 24,
    margin_mm: float = 0.0,
    label_mm: float = 0.0,
) -> ChartSpec:
    """Lay out a chart and return its spec (no files written; see :func:`dpcal.chart.make_chart`).

    Parameters
    ----------
    kind : {"psf", "gray"}
    size_mm, dpi : print variant: physical size (width, height) in mm and printer resolution.
    screen : (width, height), display variant: screen resolution in pixels.
    cell_px : int, optional
        Chart pixels per noise cell (default 1 for print, 2 for display: a cell must span at
        least 2-3 display pixels and image to about one sensor pixel).
    square : int
        Checker square size in cells (about the sensor pixels it spans when a cell images to
        one pixel; keep it above twice the widest PSF).
    seed : int
        Noise seed (PSF charts).
    n_noise_frames : int
        Display PSF charts: number of independent noise frames.
    n_patches : int
        Gray charts: number of patches (greys, plus black and paper white).
    margin_mm : float
        Print charts: white kept free on every side of the page (printers print nothing in
        their outer few millimetres; ``dpcal make-chart`` uses 8 mm).
    label_mm : float
        Print charts: extra white below the chart for the page's label (chart id, seed, scale
        bar, instructions).

    Examples
    --------
    >>> s = build_spec("psf", screen=(640, 480), square=16)
    >>> s.medium, [f["role"] for f in s.frames][:3], s.noise["cells"], s.square
    ('display', ['geometry', 'black', 'white'], [208, 128], 32)
    """
    if kind not in KINDS:
        raise BadInputError(f"chart kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if (screen is None) == (size_mm is None):
        raise BadInputError("give either `size_mm` W H (with `dpi`) for a print chart or `screen` W H for a display")
    if screen is not None:
        medium = "display"
        w, h = int(screen[0]), int(screen[1])
        cell = int(cell_px or 2)
    else:
        medium = "print"
        dpi = float(dpi or 300)
        if not (dpi > 0 and size_mm[0] > 0 and size_mm[1] > 0):
            raise BadInputError(f"chart size and DPI must be positive, got {size_mm} mm at {dpi} DPI")
        w = int(round(size_mm[0] / 25.4 * dpi))
        h = int(round(size_mm[1] / 25.4 * dpi))
        cell = int(cell_px or 1)
    if cell < 1:
        raise BadInputError(f"`cell_px` must be at least 1, got {cell}", param="cell_px")
    if square < 4:
        raise BadInputError(f"`square` must be at least 4 cells, got {square}", param="square")
    if medium == "print" and (margin_mm < 0 or label_mm < 0):
        raise BadInputError(f"`margin_mm` and `label_mm` must not be negative, got {margin_mm} and {label_mm}",
                            param="margin_mm")
    mm_cells = (lambda mm: int(math.ceil(mm / 25.4 * dpi / cell))) if medium == "print" else (lambda mm: 0)
    lay = _scale_layout(_layout(w // cell, h // cell, square, min_margin=mm_cells(margin_mm),
                                extra_bottom=mm_cells(label_mm)), cell)
    geometry_grid = False
    corners, pol, squares = _ring_geometry(lay, full_grid=geometry_grid)
    spec = ChartSpec(
        kind=kind, medium=medium, size_px=(w, h), cell_px=cell, layout=lay, corners=corners,
        corner_polarity=pol, squares=squares, dpi=dpi if medium == "print" else None,
        size_mm=(float(size_mm[0]), float(size_mm[1])) if medium == "print" else None,
        screen_px=(w, h) if medium == "display" else None,
    )
    if kind == "psf":
        ix0, iy0, ix1, iy1 = lay["interior_rect"]
        nx, ny = (ix1 - ix0) // cell, (iy1 - iy0) // cell
        nframes = n_noise_frames if medium == "display" else 1
        if nframes < 1:
            raise BadInputError("a display PSF chart needs at least one noise frame")
        spec.noise = {
            "rect": [ix0, iy0, ix1, iy1], "cells": [nx, ny], "cell_px": cell, "seed": int(seed),
            "generator": NOISE_GENERATOR,
            "sha256": [bits_sha256(noise_bits(seed, i, nx, ny)) for i in range(nframes)],
        }
        if medium == "print":
            spec.frames = [{"role": "chart", "file": "chart.png", "seed_frame": 0}]
        else:
            spec.frames = [
                {"role": "geometry", "file": "frame_00_checkerboard.png"},
                {"role": "black", "file": "frame_01_black.png"},
                {"role": "white", "file": "frame_02_white.png"},
            ] + [{"role": "noise", "file": f"frame_{3 + i:02d}_noise.png", "seed_frame": i} for i in range(nframes)]
            # The geometry frame shows the checkerboard over the whole interior: many corners.
            spec.layout["geometry_corners"] = _ring_geometry(lay, full_grid=True)[0].tolist()
    else:
        spec.patches, spec.background = _gray_patches(lay, cell, n_patches)
        spec.frames = [{"role": "chart", "file": "chart.png"}]
    spec.validate()
    return spec


def _gray_patches(lay: dict, cell: int, n: int) -> tuple[list, float]:
    """A grid of ``n`` flat patches: black, greys evenly spaced in linear value, paper white."""
    if n < 4:
        raise BadInputError(f"a gray chart needs at least 4 patches, got {n}")
    ix0, iy0, ix1, iy1 = lay["interior_rect"]
    iw, ih = ix1 - ix0, iy1 - iy0
    rows = max(1, int(round(math.sqrt(n * ih / iw))))
    cols = int(math.ceil(n / rows))
    pitch_x, pitch_y = iw // cols, ih // rows
    pad = max(cell, min(pitch_x, pitch_y) // 8) // cell * cell
    # Linear values: ink black, greys up to 0.8 of paper white, then paper white, which clips
    # when the exposure puts the brightest grey near 90 % of saturation.
    greys = np.linspace(0.02, 0.80, n - 2)
    values = np.concatenate([[0.0], greys, [1.0]])
    codes = np.round(linear_to_srgb(np.clip(np.asarray(values, float), 0, 1)) * 255).astype(int)
    patches = []
    for i, code in enumerate(codes):
        r, c = divmod(i, cols)
        x0 = ix0 + c * pitch_x + pad
        y0 = iy0 + r * pitch_y + pad
        x1 = ix0 + (c + 1) * pitch_x - pad
        y1 = iy0 + (r + 1) * pitch_y - pad
        x0, y0 = x0 // cell * cell, y0 // cell * cell
        x1, y1 = x1 // cell * cell, y1 // cell * cell
        name = "black" if i == 0 else "white" if i == len(codes) - 1 else f"grey{i:02d}"
        patches.append({"name": name, "rect": [int(x0), int(y0), int(x1), int(y1)],
                        "value": float(srgb_to_linear(code / 255)), "png_value": int(code),
                        "clipped_white": bool(i == len(codes) - 1)})
    bg_code = int(round(float(linear_to_srgb(0.18)) * 255))
    return patches, float(srgb_to_linear(bg_code / 255))
