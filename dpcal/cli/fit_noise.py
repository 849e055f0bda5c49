"""``dpcal fit-noise``: Poisson-Gaussian noise calibration (single image, frame pairs, EMVA 1288)."""

from __future__ import annotations

import math

import click

from dpcal.cli.options import emit_json, json_option, overwrite_option, raw_kwargs, raw_options, show_progress


@click.command("fit-noise")
@click.argument("inputs", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--method", type=click.Choice(["single", "pairs"]), default="single", show_default=True,
              help="single: Foi's fit on each capture (gray chart or flat areas); pairs: photon transfer "
                   "from two or more frames per exposure.")
@click.option("--iso", type=float, help="ISO of every input (overrides metadata).")
@click.option("--emva", type=click.Path(dir_okay=False), help="An EMVA 1288 descriptor (EMVA1288_Data.txt); monochrome, plane Y.")
@click.option("--manifest", type=click.Path(dir_okay=False), help="CSV of file,iso[,kind[,exposure]] (kind: capture or dark).")
@click.option("--dark", "darks", multiple=True, type=click.Path(dir_okay=False),
              help="Dark frame (repeatable): black level, read noise and hot pixels.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write a camera profile (JSON).")
@click.option("--update", is_flag=True, help="Merge into the existing --output profile (keep its other ISOs).")
@click.option("--camera-id", help="Profile id (default: from the camera make and model).")
@click.option("--iso-model", type=click.Choice(["cts", "linear"]), default="cts", show_default=True,
              help="ISO model of the profile.")
@click.option("--scene", type=click.Choice(["auto", "chart", "natural"]), default="auto", show_default=True,
              help="single method: flat patches as level sets (chart) or Foi's wavelet level sets (natural).")
@click.option("--prnu", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="single method: model a variance term growing with the signal squared (PRNU, print "
                   "texture): on, off, or auto (when significant).")
@click.option("--strict", is_flag=True, help="Refuse (exit 1) an ISO whose fit the honesty checks flag.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="Write every level set and its fit to a CSV.")
@click.option("--plots", type=click.Path(file_okay=False), help="Folder for the figures (std vs mean per plane; ISO model).")
@click.option("--skip-failed", is_flag=True, help="Report ISOs whose fit is undetermined instead of stopping.")
@raw_options
@overwrite_option
@json_option
def fit_noise(inputs, method, iso, emva, manifest, darks, output, update, camera_id, iso_model, scene, prnu,
              strict, csv_path, plots, skip_failed, overwrite, as_json, **kw) -> None:
    """Fit alpha and sigma (normalised units) per CFA plane and ISO from RAW captures.

    \b
    dpcal fit-noise chart_iso100.dng chart_iso400.dng -o cam.json --plots figs --json
    dpcal fit-noise --method pairs a1.dng a2.dng b1.dng b2.dng --dark d1.dng --dark d2.dng
    dpcal fit-noise --emva EMVA1288_Data.txt --json
    """
    from dpcal.workflows.fit_noise import run_fit_noise

    if not inputs and not emva and not manifest:
        raise click.UsageError("give RAW files, --manifest CSV or --emva FILE")
    rep = run_fit_noise(
        list(inputs), method=method, iso=iso, emva=emva, manifest=manifest, darks=list(darks), output=output,
        camera_id=camera_id, csv_path=csv_path, plots=plots, overwrite=overwrite, update=update,
        iso_model=iso_model, scene=scene, skip_failed=skip_failed, raw_kw=raw_kwargs(kw), progress=show_progress(),
        prnu=prnu, strict=strict,
    )
    if as_json:
        emit_json(rep)
        return
    click.echo(f"method: {rep['method']}")
    click.echo(f"  {'ISO':<8} {'plane':<6} {'alpha':<22} {'sigma':<22} chi2_red")
    for f in rep["fits"]:
        iso_s = "?" if f["iso"] is None else f"{f['iso']:g}"
        chi = f["gof"].get("chi2_red")
        alpha, sigma = f"{f['alpha']:.5g} ± {f['alpha_std']:.2g}", f"{f['sigma']:.5g} ± {f['sigma_std']:.2g}"
        click.echo(f"  {iso_s:<8} {f['plane']:<6} {alpha:<22} {sigma:<22} {'' if chi is None else f'{chi:.2f}'}")
    for f in rep.get("failed", []):
        click.echo(f"  ISO {f['iso']}: failed: {f['reason']}")
    for s in rep.get("summary", []):
        click.echo(f"  {'' if s['iso'] is None else 'ISO %g ' % s['iso']}scene: {s['scene']}")
    for f in rep["fits"]:
        if f.get("prnu_modelled"):
            click.echo(f"  {f['plane']}: PRNU/texture term modelled, {f['prnu']:.2%} of the signal "
                       f"(± {0.5 * f['prnu_c_std'] / max(f['prnu'], 1e-12):.2%})")
    for w in rep.get("warnings", []):
        click.echo(f"  warning: {w['message']}")
    if rep.get("emva"):
        e = rep["emva"]
        click.echo(f"  EMVA 1288: K = {e['K']:.5f} ± {e['K_std']:.2g} DN/e-, dark noise {e['sigma_y_dark']:.4f} DN, "
                   f"dark offset {e['dark_offset']:.2f} DN, single-frame K reads {e['fixed_pattern_share']:+.1%} "
                   "(fixed pattern)")
        m = {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in e["emva1288"].items()}

        def f(k, spec, unit=""):
            return "undetermined" if m.get(k) is None else f"{m[k]:{spec}}{unit}"

        click.echo(f"    dark noise {f('sigma_d', '.2f', ' e-')}, QE {f('QE', '.1f', ' %')}, saturation capacity "
                   f"{f('u_e_sat', '.0f', ' e-')}, SNRmax {f('SNR_max_dB', '.1f', ' dB')}, dynamic range "
                   f"{f('DR_dB', '.1f', ' dB')}")
        click.echo(f"    linearity error {f('LE_min', '+.2f', ' %')} .. {f('LE_max', '+.2f', ' %')}, DSNU "
                   f"{f('DSNU1288', '.2f', ' e-')} ({f('DSNU1288_DN', '.3f', ' DN')}), PRNU {f('PRNU1288', '.2f', ' %')}")
        for n in m["notes"]:
            click.echo(f"    note: {n}")
    m = rep.get("iso_model")
    if m and m.get("loo_alpha_rel_err_rms") is not None:
        click.echo(f"  ISO model {m['kind']}: leave-one-ISO-out rms error alpha {m['loo_alpha_rel_err_rms']:.1%}, "
                   f"sigma {m['loo_sigma_rel_err_rms']:.1%}")
    for k, v in rep["outputs"].items():
        if k in ("profile", "csv"):
            click.echo(f"  wrote {v}")
    for p in rep["outputs"].get("plots", []):
        click.echo(f"  wrote {p}")
