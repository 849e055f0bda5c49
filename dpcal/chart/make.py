"""Write calibration charts: PNG (and print-ready PDF) plus the ``chart.json`` spec."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from dpcal.chart.spec import ChartSpec, build_spec, chart_raster
from dpcal.errors import BadInputError
from dpcal.io.atomic import atomic_path
from dpcal.physics.tone import linear_to_srgb, srgb_to_linear

log = logging.getLogger("dpcal")


def make_chart(
    kind: str,
    out_dir: str | os.PathLike,
    *,
    size_mm: tuple[float, float] | None = None,
    dpi: float | None = None,
    screen: tuple[int, int] | None = None,
    cell_px: int | None = None,
    square: int = 40,
    seed: int = 0,
    n_noise_frames: int = 4,
    n_patches: int = 24,
    pdf: bool = True,
    overwrite: bool = False,
) -> ChartSpec:
    """Lay out a chart and write its images and ``chart.json`` into ``out_dir``.

    Print charts get ``chart.png`` (with its DPI recorded) and ``chart.pdf`` at the physical
    size; display charts get one PNG per frame at the screen resolution. Binary frames are
    1-bit PNGs; grey values are sRGB-encoded, as printers and displays expect.

    Parameters
    ----------
    kind, size_mm, dpi, screen, cell_px, square, seed, n_noise_frames, n_patches
        As :func:`dpcal.chart.spec.build_spec`.
    pdf : bool
        Also write the print-ready PDF (print charts).
    overwrite : bool
        Replace an existing ``chart.json`` and images.

    Returns
    -------
    ChartSpec
        The spec, as written to ``out_dir/chart.json``.

    Raises
    ------
    BadInputError
        Impossible layouts, or existing outputs without ``overwrite``.

    Examples
    --------
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> s = make_chart("gray", d, screen=(320, 240), square=8)
    >>> sorted(os.listdir(d))
    ['chart.json', 'chart.png']
    """
    spec = build_spec(kind, size_mm=size_mm, dpi=dpi, screen=screen, cell_px=cell_px, square=square,
                      seed=seed, n_noise_frames=n_noise_frames, n_patches=n_patches)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise BadInputError(f"{out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    files = [f["file"] for f in spec.frames] + ["chart.json"]
    if spec.medium == "print" and pdf:
        files.append("chart.pdf")
    existing = [f for f in files if (out / f).exists()]
    if existing and not overwrite:
        raise BadInputError(f"{out / existing[0]} already exists; pass `overwrite=True` to replace the chart")
    for i, f in enumerate(spec.frames):
        raster = chart_raster(spec, i)
        _write_png(out / f["file"], raster, spec.dpi)
        log.info("wrote %s", out / f["file"])
    spec.files = {"png": [f["file"] for f in spec.frames]}
    if spec.medium == "print" and pdf:
        _write_pdf(out / "chart.pdf", chart_raster(spec, 0), spec)
        spec.files["pdf"] = "chart.pdf"
        log.info("wrote %s", out / "chart.pdf")
    # The spec goes last: a folder with chart.json is a complete chart.
    spec.save(out / "chart.json")
    return spec


def _png_codes(raster: np.ndarray) -> np.ndarray:
    # sRGB-encoded PNG codes: what printers and displays expect
    return np.round(linear_to_srgb(np.clip(np.asarray(raster, float), 0, 1)) * 255).astype(np.uint8)


def _write_png(path: Path, raster: np.ndarray, dpi: float | None) -> None:
    from PIL import Image

    codes = _png_codes(raster)
    binary = bool(np.all((codes == 0) | (codes == 255)))
    img = Image.fromarray(codes, mode="L")
    if binary:
        img = img.convert("1", dither=Image.Dither.NONE)
    kw = {"optimize": True}
    if dpi:
        kw["dpi"] = (float(dpi), float(dpi))
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG", **kw)


def _write_pdf(path: Path, raster: np.ndarray, spec: ChartSpec) -> None:
    """One page at the chart's physical size, the raster embedded pixel for pixel."""
    from matplotlib.figure import Figure

    w_in, h_in = spec.size_mm[0] / 25.4, spec.size_mm[1] / 25.4
    fig = Figure(figsize=(w_in, h_in))
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_axis_off()
    # interpolation="none" makes vector backends embed the image unresampled.
    ax.imshow(_png_codes(raster), cmap="gray", vmin=0, vmax=255, interpolation="none", aspect="auto")
    meta = {"Title": f"dpcal {spec.kind} chart", "Subject": "Print at 100 % (no scaling, no fit to page).",
            "Creator": "dpcal make-chart"}
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="pdf", dpi=spec.dpi, metadata=meta)


def load_chart_image(spec: ChartSpec, frame: int = 0) -> np.ndarray:
    """Read a frame's PNG back as linear float32 values (checks it against the spec).

    Raises
    ------
    BadInputError
        Missing file, or an image that differs from the spec's raster.
    """
    from PIL import Image

    if spec.path is None:
        raise BadInputError("the chart spec has no folder to find its images in")
    p = spec.path.parent / spec.frames[frame]["file"]
    if not p.is_file():
        raise BadInputError(f"{p}: chart image missing")
    codes = np.asarray(Image.open(p).convert("L"))
    img = srgb_to_linear(codes / 255.0).astype(np.float32)
    ref = chart_raster(spec, frame)
    if img.shape != ref.shape or np.max(np.abs(img - ref)) > 1e-3:
        raise BadInputError(f"{p} does not match {spec.path.name}; regenerate the chart with `dpcal make-chart`")
    return img
