"""``dpcal models``: the model zoo with parameter and MAC counts."""

from __future__ import annotations

import click

from dpcal.cli.options import emit_json, json_option

MAC_NOTE = "MACs = multiply-accumulates = FLOPs/2 (torch.utils.flop_counter)"


@click.command()
@click.option("--size", type=click.IntRange(min=16), default=128, show_default=True, help="Input image side in pixels.")
@click.option("--classes", type=click.IntRange(min=1), default=1000, show_default=True, help="Number of classes.")
@click.option("--pattern", default="BGGR", show_default=True, help="CFA pattern of the RAW input.")
@json_option
def models(size: int, classes: int, pattern: str, as_json: bool) -> None:
    """List the model presets with their parameters and MACs per image."""
    from dpcal.cfa import validate_pattern
    from dpcal.learn.models import model_table

    rows = model_table(size=size, classes=classes, pattern=validate_pattern(pattern))
    if as_json:
        emit_json({"size": size, "classes": classes, "pattern": pattern.upper(), "note": MAC_NOTE, "models": rows})
        return
    width = max(len(r["name"]) for r in rows)
    click.echo(f"{'model':<{width}}  {'params (M)':>10}  {'MACs (M)':>9}   at {size}x{size}, {classes} classes")
    for r in rows:
        click.echo(f"{r['name']:<{width}}  {r['params'] / 1e6:>10.3f}  {r['macs'] / 1e6:>9.1f}")
    click.echo(MAC_NOTE)
