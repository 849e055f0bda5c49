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
    margin_mm: float = 0.0,
    label_mm: float = 0.0,
) -> ChartSpec:
    """Lay out a chart and write its images and ``chart.json`` into ``out_dir``.

    Print charts get ``chart.png`` (with its DPI recorded) and ``chart.pdf`` at the physical
    size; display charts get one PNG per frame at the screen resolution. Binary frames are
    1-bit PNGs; grey values are sRGB-encoded, as printers and displays expect.

    Parameters
    ----------
    kind, size_mm, dpi, screen, cell_px, square, seed, n_noise_frames, n_patches, margin_mm, label_mm
        As :func:`dpcal.chart.spec.build_spec`. With ``label_mm`` the PDF carries, below the
        chart, its id and seed, a 100 mm scale bar (to check 100 % printing) and a line of
        instructions.
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
                      seed=seed, n_noise_frames=n_noise_frames, n_patches=n_patches, margin_mm=margin_mm,
                      label_mm=label_mm)
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
        _write_pdf(out / "chart.pdf", chart_raster(spec, 0), spec, label=label_mm > 0, margin_mm=margin_mm)
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


def page_label(spec: ChartSpec) -> list[str]:
    """The two lines printed under a chart: what it is, and how to print and use it.

    Examples
    --------
    >>> s = build_spec("psf", size_mm=(297, 210), dpi=300, cell_px=2, margin_mm=8, label_mm=12)
    >>> page_label(s)[0].startswith(f"dpcal psf chart {s.chart_id}, seed 0, 300 DPI")
    True
    """
    what = f"dpcal {spec.kind} chart {spec.chart_id}"
    if spec.kind == "psf" and spec.noise:
        what += f", seed {spec.noise['seed']}"
    what += f", {spec.dpi:g} DPI, {spec.size_mm[0]:g} x {spec.size_mm[1]:g} mm"
    if spec.kind == "psf":
        what += f", noise cell {spec.cell_px * spec.mm_per_px:.2f} mm"
    how = ("Print at 100 % (actual size, no 'fit to page'): the bar measures 100 mm. Photograph the chart flat and "
           "whole, filling most of the frame; keep its chart.json for fit-psf.")
    return [what, how]


def _write_pdf(path: Path, raster: np.ndarray, spec: ChartSpec, *, label: bool = False, margin_mm: float = 0.0) -> None:
    """One page at the chart's physical size, the raster embedded pixel for pixel; with
    ``label``, the chart id, seed, a 100 mm scale bar and instructions below the chart."""
    from matplotlib.figure import Figure

    w_in, h_in = spec.size_mm[0] / 25.4, spec.size_mm[1] / 25.4
    fig = Figure(figsize=(w_in, h_in))
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_axis_off()
    # interpolation="none" makes vector backends embed the image unresampled.
    ax.imshow(_png_codes(raster), cmap="gray", vmin=0, vmax=255, interpolation="none", aspect="auto")
    if label:
        _draw_label(fig, spec, margin_mm)
    meta = {"Title": f"dpcal {spec.kind} chart {spec.chart_id}",
            "Subject": "Print at 100 % (no scaling, no fit to page).", "Creator": "dpcal make-chart",
            "Keywords": f"chart_id={spec.chart_id}" + (f" seed={spec.noise['seed']}" if spec.noise else "")}
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="pdf", dpi=spec.dpi, metadata=meta)


def _draw_label(fig, spec: ChartSpec, margin_mm: float) -> None:
    """Label lines and a 100 mm scale bar (10 mm ticks) in the white band under the frame."""
    from matplotlib.lines import Line2D

    W, H = spec.size_mm
    frame_bottom = spec.layout["frame_rect"][3] * spec.mm_per_px
    x0 = spec.layout["frame_rect"][0] * spec.mm_per_px
    band = H - margin_mm - frame_bottom  # mm available under the frame

    def at(x_mm, y_mm):  # page mm (from the top-left) -> figure fraction
        return x_mm / W, 1.0 - y_mm / H

    top = frame_bottom + 0.15 * band
    bar_y = frame_bottom + 0.45 * band
    for k in range(11):  # 0 .. 100 mm
        tick = 0.12 * band if k % 5 == 0 else 0.07 * band
        fig.add_artist(Line2D(*zip(at(x0 + 10 * k, bar_y - tick), at(x0 + 10 * k, bar_y)), color="k", lw=0.5))
    fig.add_artist(Line2D(*zip(at(x0, bar_y), at(x0 + 100, bar_y)), color="k", lw=0.8))
    fig.text(*at(x0 + 102, bar_y), "100 mm", fontsize=6, va="center")
    what, how = page_label(spec)
    fig.text(*at(x0 + 120, top + 0.12 * band), what, fontsize=6.5, va="center")
    fig.text(*at(x0, bar_y + 0.3 * band), how, fontsize=6, va="center")


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
