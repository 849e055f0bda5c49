"""``dpcal info``: what dpcal reads from a RAW file."""

from __future__ import annotations

import click

from dpcal.cli.options import emit_json, json_option, raw_kwargs, raw_options


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@raw_options
@click.option("--iso", type=float, help="ISO to assume when the file carries none.")
@click.option("--stats", is_flag=True, help="Also print per-plane statistics of the normalised data.")
@json_option
def info(file: str, iso: float | None, stats: bool, as_json: bool, **kw) -> None:
    """Show the CFA pattern, black/white levels and metadata of a RAW file."""
    from dpcal.io.raw import read_raw

    img = read_raw(file, iso=iso, **raw_kwargs(kw))
    doc = img.info()
    if stats:
        import numpy as np

        from dpcal.cfa import PLANES, split_planes

        planes = split_planes(img.normalized(), img.pattern)
        doc["stats"] = {
            n: {"mean": float(np.mean(p)), "std": float(np.std(p)), "min": float(np.min(p)), "max": float(np.max(p)),
                "saturated_fraction": float(np.mean(p >= 1.0))}
            for n, p in zip(PLANES, planes)
        }
    if as_json:
        emit_json(doc)
        return
    click.echo(f"{doc['path']}: {doc['width']}x{doc['height']} {doc['pattern']}")
    click.echo(f"  black (R,Gr,Gb,B): {doc['black_level']}  white: {doc['white_level']:g}  bits: {doc['bit_depth']}")
    iso_s = "unknown" if doc["iso"] is None else f"{doc['iso']:g}"
    camera = " ".join(x for x in (doc["maker"], doc["model"]) if x) or "unknown"
    click.echo(f"  ISO: {iso_s}  exposure: {_exposure(doc['exposure_time'])}  camera: {camera}")
    for n, s in doc.get("stats", {}).items():
        click.echo(f"  {n:<3} mean {s['mean']:.4f} std {s['std']:.4f} min {s['min']:.4f} max {s['max']:.4f}")


def _exposure(t: float | None) -> str:
    """Exposure time as photographers write it: 1/230 s below half a second."""
    if t is None:
        return "unknown"
    if t < 0.5:
        return f"1/{1 / t:.4g} s ({t:.4g} s)"
    return f"{t:g} s"
