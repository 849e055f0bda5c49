"""``dpcal fit-psf``: a spatially varying PSF field from captures of a PSF chart."""

from __future__ import annotations

from pathlib import Path

import click

from dpcal.cli.options import emit_json, json_option, overwrite_option, raw_kwargs, raw_options
from dpcal.errors import BadInputError


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
    from dpcal.chart import load_chart
    from dpcal.io.atomic import OutputSet, check_writable
    from dpcal.io.raw import read_raw
    from dpcal.profile import load_profile
    from dpcal.psf.fit import attach_to_profile, fit_psf as _fit

    rk = raw_kwargs(kw)
    with OutputSet() as outs:  # every output checked before the fit; new files removed if it fails
        outs.file(out_path, overwrite)
        if plots_dir:
            pd = outs.folder(plots_dir)
            if pd.is_dir() and any(pd.glob("psf_mosaic_*.png")) and not overwrite:
                raise BadInputError(f"{pd} already holds PSF plots; pass --overwrite to replace them")
        if attach_path:  # the profile to update must exist, be valid and writable
            if Path(attach_path).suffix != ".json" or not Path(attach_path).is_file():
                raise BadInputError(f"{attach_path}: --attach needs an existing profile .json file (copy a bundled "
                                    "one with `dpcal profile show ID --json > my.json` first)")
            load_profile(attach_path)
            check_writable(attach_path, overwrite=True)
        chart = load_chart(chart_path)
        raws = [read_raw(c, **rk) for c in captures]
        dist = () if distortion.strip().lower() == "none" else tuple(d.strip() for d in distortion.split(",") if d.strip())
        res = _fit(raws, chart, kernel_size=kernel_size, grid=tuple(grid), nodes=nodes, profile=profile_id, prior=prior,
                   distortion=dist, smooth=not no_smooth, progress=not as_json)
        doc = res.to_dict()
        if plots_dir:  # plots, the field, then the profile it is attached to
            from dpcal.psf.plots import write_plots

            doc["plots"] = write_plots(res.field, plots_dir)
        res.field.save(out_path)
        doc["out"] = out_path
        if attach_path:
            doc["attached"] = {"profile": attach_path, **attach_to_profile(attach_path, out_path)}
    if as_json:
        emit_json(doc)
        return
    s = res.summary
    click.echo(f"PSF field {s['grid'][0]}x{s['grid'][1]} nodes, {s['kernel_size']}x{s['kernel_size']} kernels, "
               f"planes {', '.join(s['planes'])} -> {out_path}")
    click.echo(f"  registration RMS {s['registration_rms_px']:.3f} px (model {s['registration_model_rms_px']:.3f} px)")
    mtf = [t["mtf50"] for t in res.qa]
    chi = [t["reduced_chi2"] for t in res.qa if t["reduced_chi2"] is not None]
    click.echo(f"  MTF50 {min(mtf):.3f}..{max(mtf):.3f} cycles/px; reduced chi2 median "
               f"{sorted(chi)[len(chi) // 2]:.2f}; {s['tiles_extrapolated']} tile-planes extrapolated")
    if plots_dir:
        click.echo(f"  plots in {plots_dir}")
    if attach_path:
        click.echo(f"  attached to {attach_path}")
