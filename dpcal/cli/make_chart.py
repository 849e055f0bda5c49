"""``dpcal make-chart``: print-ready and display calibration charts with their chart.json."""

from __future__ import annotations

import click

from dpcal.cli.options import emit_json, json_option, overwrite_option

A4_LANDSCAPE_MM = (297.0, 210.0)
#: white kept free at the page edges (office printers print nothing in their outer 3-6 mm)
PRINT_MARGIN_MM = 8.0
#: white band under a print chart for its label and scale bar
LABEL_MM = 12.0
#: default noise cell of a print chart: twice a 300-DPI printer's dot, or as close at other DPIs
PRINT_CELL_MM = 0.17


@click.command("make-chart")
@click.argument("kind", type=click.Choice(["psf", "gray"]))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--size-mm", nargs=2, type=float, help="Print size W H in mm (default A4 landscape, 297 210).")
@click.option("--dpi", type=float, help="Printer resolution (print charts; default 300).")
@click.option("--screen", nargs=2, type=int, help="Display variant: screen resolution W H in pixels.")
@click.option("--cell-px", type=click.IntRange(min=1),
              help="Chart pixels per noise cell (default: printed about 0.17 mm, at least 2 printer dots; "
                   "2 on a display).")
@click.option("--margin-mm", type=click.FloatRange(min=0), default=PRINT_MARGIN_MM, show_default=True,
              help="Print charts: white kept free at the page edges, where printers print nothing.")
@click.option("--square", type=click.IntRange(min=4), default=40, show_default=True,
              help="Checker square size in noise cells (keep it above twice the widest PSF, in sensor pixels).")
@click.option("--frames", "n_frames", type=click.IntRange(min=1), default=4, show_default=True,
              help="Display PSF charts: independent noise frames.")
@click.option("--patches", type=click.IntRange(min=4), default=24, show_default=True, help="Gray charts: patches.")
@click.option("--seed", type=int, default=0, show_default=True, help="Noise seed (PSF charts).")
@click.option("--no-pdf", is_flag=True, help="Skip the PDF of print charts.")
@overwrite_option
@json_option
def make_chart(kind, out_dir, size_mm, dpi, screen, cell_px, margin_mm, square, n_frames, patches, seed, no_pdf,
               overwrite, as_json):
    """Make a PSF chart (Bernoulli noise, checker markers) or a gray chart (flat patches).

    Print charts: chart.png and chart.pdf at the physical size (print at 100 %). Display charts
    (--screen): a frame sequence to show full-screen in order with the camera still. Every
    chart comes with chart.json, which fit-psf and fit-noise read.
    """
    from dpcal.chart import make_chart as _make
    from dpcal.io.atomic import OutputSet

    if screen and (size_mm or dpi):
        raise click.UsageError("give either --screen (display) or --size-mm/--dpi (print), not both")
    if not screen and not size_mm:
        size_mm = A4_LANDSCAPE_MM
    print_kw = {}
    if not screen:
        dpi_ = dpi or 300.0
        cell_px = cell_px or max(2, round(PRINT_CELL_MM * dpi_ / 25.4))
        print_kw = {"margin_mm": margin_mm, "label_mm": 0.0 if no_pdf else LABEL_MM}
    with OutputSet() as outs:  # checked before drawing; nothing left behind if it fails
        outs.folder(out_dir)
        spec = _make(kind, out_dir, size_mm=size_mm, dpi=dpi, screen=screen, cell_px=cell_px, square=square,
                     seed=seed, n_noise_frames=n_frames, n_patches=patches, pdf=not no_pdf, overwrite=overwrite,
                     **print_kw)
    doc = {
        "kind": spec.kind, "medium": spec.medium, "spec": str(spec.path), "size_px": list(spec.size_px),
        "size_mm": list(spec.size_mm) if spec.size_mm else None, "dpi": spec.dpi,
        "screen_px": list(spec.screen_px) if spec.screen_px else None, "cell_px": spec.cell_px,
        "noise_cell_mm": spec.cell_px * spec.mm_per_px if spec.mm_per_px else None,
        "square_px": spec.square, "corners": int(len(spec.corners)),
        "frames": [f["file"] for f in spec.frames], "pdf": spec.files.get("pdf"), "chart_id": spec.chart_id,
    }
    if spec.medium == "print":
        fx0, fy0, fx1, fy1 = spec.layout["frame_rect"]
        mm = spec.mm_per_px
        doc["frame_margins_mm"] = [fx0 * mm, fy0 * mm, (spec.width - fx1) * mm, (spec.height - fy1) * mm]
    if kind == "psf":
        doc["noise_cells"] = spec.noise["cells"]
        doc["seed"] = spec.noise["seed"]
    else:
        doc["patches"] = [{"name": p["name"], "value": p["value"]} for p in spec.patches]
    if as_json:
        emit_json(doc)
        return
    where = f"{spec.size_mm[0]:g} x {spec.size_mm[1]:g} mm at {spec.dpi:g} DPI" if spec.medium == "print" \
        else f"{spec.screen_px[0]}x{spec.screen_px[1]} screen, {len(spec.frames)} frames"
    click.echo(f"{kind} chart ({where}) in {out_dir}: {', '.join(doc['frames'])}"
               f"{', chart.pdf' if doc['pdf'] else ''}, chart.json")
    if spec.medium == "print":
        click.echo(f"chart id {spec.chart_id}; the black frame starts {min(doc['frame_margins_mm']):.1f} mm from the "
                   "page edge")
        click.echo("print chart.pdf at 100 % (no scaling, no fit to page; its bar measures 100 mm); photograph it "
                   "flat, filling most of the frame")
