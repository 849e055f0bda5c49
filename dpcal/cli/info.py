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
    click.echo(f"  ISO: {doc['iso']}  exposure: {doc['exposure_time']} s  camera: {doc['maker']} {doc['model']}")
    for n, s in doc.get("stats", {}).items():
        click.echo(f"  {n:<3} mean {s['mean']:.4f} std {s['std']:.4f} min {s['min']:.4f} max {s['max']:.4f}")
