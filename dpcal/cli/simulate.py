"""``dpcal simulate``: noisy low-light RAW datasets from ImageNet-style folders."""

from __future__ import annotations

import click

from dpcal.cli.options import OneOrTwoNumbers, emit_json, json_option, overwrite_option, show_progress


@click.command()
@click.argument("src", type=click.Path())
@click.argument("dst", type=click.Path())
@click.option("--profile", "profile_id", default="nexus6p-rear", show_default=True,
              help="Camera profile id or .json path (noise model, CFA, levels, PSF).")
@click.option("--lux", cls=OneOrTwoNumbers, required=True, type=click.UNPROCESSED, metavar="L | LO HI",
              help="Illuminance in lux, or a range sampled log-uniformly per image.")
@click.option("--mode", type=click.Choice(["realistic", "reference"]), default="realistic", show_default=True,
              help="reference: the Dirty Pixels code exactly (BGGR, sRGB as linear, no quantisation, its crops).")
@click.option("--linearize", type=click.Choice(["none", "gamma", "unprocess"]),
              help="sRGB -> linear [realistic default: unprocess (Brooks et al. 2019)].")
@click.option("--pattern", help="CFA pattern (RGGB, BGGR, GRBG, GBRG) [default: the profile's].")
@click.option("--quantize/--no-quantize", default=None,
              help="Round to the profile's digital numbers [realistic: on; reference: off].")
@click.option("--psf", is_flag=True, help="Blur with the profile's PSF field before the mosaic.")
@click.option("--psf-position", type=click.Choice(["sensor", "center", "offaxis", "periphery"]), default="sensor",
              show_default=True, help="Where the image sits on the sensor for --psf (see docs/simulate.md).")
@click.option("--size", default=128, show_default=True, type=int, help="Output side in pixels (even).")
@click.option("--crop", type=click.Choice(["eval", "train"]), default="eval", show_default=True,
              help="eval: centre crop; train: random sized crop + flip.")
@click.option("--seed", default=0, show_default=True, type=int, help="Run seed (per-image seeds derive from it).")
@click.option("--workers", type=click.IntRange(min=0), help="Worker processes [default: CPU count; 0: in-process].")
@click.option("--format", "fmt", type=click.Choice(["png", "dng"]), default="png", show_default=True,
              help="png: uint16 round(value*65535); dng: digital numbers with pattern and levels.")
@click.option("--min-size", default=32, show_default=True, type=int, help="Skip images with a shorter side below this.")
@click.option("--executor", type=click.Choice(["local", "dask"]), default="local", show_default=True)
@click.option("--scheduler", help="Dask scheduler address for --executor dask (e.g. tcp://host:8786).")
@click.option("--preview", type=click.Path(dir_okay=False), help="Also write a preview grid (PNG).")
@overwrite_option
@json_option
def simulate(src, dst, profile_id, lux, mode, linearize, pattern, quantize, psf, psf_position, size, crop, seed,
             workers, fmt, min_size, executor, scheduler, preview, overwrite, as_json):
    """Simulate noisy RAW mosaics of the images in SRC into DST.

    SRC: class folders SRC/<label>/<images> (ImageNet layout) or a CSV with path,label rows.
    DST: output folder; rerun the same command to resume an interrupted run.
    """
    from dpcal.sim.config import parse_lux
    from dpcal.workflows.simulate import simulate_dataset

    lo, hi = parse_lux(lux)
    res = simulate_dataset(
        src, dst, profile_id, lux=(lo, hi), mode=mode, linearize=linearize, pattern=pattern, quantize=quantize,
        psf=psf, psf_position=psf_position, size=size, crop=crop, seed=seed, fmt=fmt, min_size=min_size,
        workers=workers, executor=executor, scheduler=scheduler, overwrite=overwrite, preview=preview,
        progress=show_progress(as_json),
    )
    if as_json:
        emit_json(res)
        return
    c, r = res["counts"], res["run"]
    s = res["settings"]["simulator"]
    click.echo(f"{dst}: {c['ok']} mosaics written, {c['skipped']} skipped ({res['profile']['id']}, "
               f"{s['mode']}, {s['pattern']}, lux {s['lux'][0]:g}-{s['lux'][1]:g})")
    if r["images_per_s"]:
        click.echo(f"  {r['processed_now']} images in {r['work_s']:.1f} s ({r['images_per_s']:.0f} images/s)")
    click.echo(f"  manifest: {dst}/manifest.csv   card: {dst}/dataset.json")
    if res.get("preview"):
        click.echo(f"  preview: {res['preview']}")
