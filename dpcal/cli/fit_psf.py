"""``dpcal fit-psf``: a spatially varying PSF field from captures of a PSF chart."""

from __future__ import annotations

import click

from dpcal.cli.options import emit_json, json_option, overwrite_option, raw_kwargs, raw_options, show_progress


@click.command("fit-psf")
@click.argument("captures", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--chart", "chart_path", required=True, type=click.Path(),
              help="chart.json of the chart photographed (dpcal make-chart psf).")
@click.option("-o", "--out", "out_path", required=True, type=click.Path(dir_okay=False), help="Output field .npz.")
@click.option("--kernel-size", type=int, default=31, show_default=True, help="Kernel size (odd, full-sensor px).")
@click.option("--grid", nargs=2, type=click.IntRange(min=1), default=(8, 6), show_default=True,
              help="Nodes along x and y.")
@click.option("--nodes", type=click.Choice(["coverage", "sensor"]), default="coverage", show_default=True,
              help="Spread the grid over the area that sees the chart, or over the whole sensor.")
@click.option("--profile", "profile_id", help="Take the noise model from this profile (default: measure it).")
@click.option("--prior", type=click.Choice(["laplacian", "gradient"]), default="laplacian", show_default=True,
              help="Tikhonov smoothness prior on each kernel.")
@click.option("--distortion", default="k1,k2", show_default=True,
              help="Lens distortion terms of the registration model (from k1,k2,p1,p2; 'none').")
@click.option("--no-smooth", is_flag=True, help="No smoothing of the field across the grid.")
@click.option("--plots", "plots_dir", type=click.Path(file_okay=False), help="Write PSF mosaics and the MTF50 map here.")
@click.option("--attach", "attach_path", type=click.Path(dir_okay=False),
              help="Profile .json to attach the field to (sets its psf.file).")
@raw_options
@overwrite_option
@json_option
def fit_psf(captures, chart_path, out_path, kernel_size, grid, nodes, profile_id, prior, distortion, no_smooth, plots_dir,
            attach_path, overwrite, as_json, **kw):
    """Estimate the lens PSF per CFA plane across the field from RAW captures of a PSF chart.

    Printed chart: one or more photos. Display chart: the frames in the chart's order
    (checkerboard, black, white, noise...). Writes the field (psf [gy, gx, 4, k, k], node_xy,
    planes) only when the fit succeeds.
    """
    from dpcal.workflows.fit_psf import run_fit_psf

    dist = () if distortion.strip().lower() == "none" else tuple(d.strip() for d in distortion.split(",") if d.strip())
    doc = run_fit_psf(captures, chart_path, out_path, kernel_size=kernel_size, grid=tuple(grid), nodes=nodes,
                      profile=profile_id, prior=prior, distortion=dist, smooth=not no_smooth, plots=plots_dir,
                      attach=attach_path, overwrite=overwrite, raw_kw=raw_kwargs(kw), progress=show_progress() and not as_json)
    if as_json:
        emit_json(doc)
        return
    s = doc
    click.echo(f"PSF field {s['grid'][0]}x{s['grid'][1]} nodes, {s['kernel_size']}x{s['kernel_size']} kernels, "
               f"planes {', '.join(s['planes'])} -> {out_path}")
    click.echo(f"  registration RMS {s['registration_rms_px']:.3f} px (model {s['registration_model_rms_px']:.3f} px)")
    mtf = [t["mtf50"] for t in doc["tiles"]]
    chi = [t["reduced_chi2"] for t in doc["tiles"] if t["reduced_chi2"] is not None]
    click.echo(f"  MTF50 {min(mtf):.3f}..{max(mtf):.3f} cycles/px; reduced chi2 median "
               f"{sorted(chi)[len(chi) // 2]:.2f}; {s['tiles_extrapolated']} tile-planes extrapolated")
    if plots_dir:
        click.echo(f"  plots in {plots_dir}")
    if attach_path:
        click.echo(f"  attached to {attach_path}")
