"""Options shared by several commands, and output helpers."""

from __future__ import annotations

import json
import math
import os

import click

json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
overwrite_option = click.option("--overwrite", is_flag=True, help="Replace existing outputs.")


def raw_options(f):
    """--pattern/--width/--height/--bits/--black/--white/--iso for RAW inputs."""
    opts = [
        click.option("--pattern", help="CFA pattern (RGGB, BGGR, GRBG, GBRG) for files that carry none; overrides metadata."),
        click.option("--width", type=click.IntRange(min=2), help="Width of a headerless .raw file."),
        click.option("--height", type=click.IntRange(min=2), help="Height of a headerless .raw file."),
        click.option("--bits", type=click.IntRange(1, 16), help="Bit depth of headerless or decoded mosaics."),
        click.option("--black", "black_level", type=float, help="Black level (DN), overrides metadata."),
        click.option("--white", "white_level", type=float, help="White level (DN), overrides metadata."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def raw_kwargs(kw: dict) -> dict:
    """Pop the raw options out of a command's kwargs, as read_raw keywords."""
    keys = ("pattern", "width", "height", "bits", "black_level", "white_level")
    return {k: kw.pop(k) for k in keys if k in kw}


def _clean(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if hasattr(x, "item") and callable(x.item):  # numpy scalars
        return _clean(x.item())
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    return x


def emit_json(doc) -> None:
    """One JSON document on stdout (NaN/inf become null)."""
    click.echo(json.dumps(_clean(doc), indent=2))


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


class OneOrTwoNumbers(click.Option):
    """An option taking one value, and a second one when the next token is a number
    (``--lux 3`` or ``--lux 2 20``)."""

    def add_to_parser(self, parser, ctx):
        super().add_to_parser(parser, ctx)
        for name in self.opts:
            opt = parser._long_opt.get(name) or parser._short_opt.get(name)
            if opt is None:
                continue
            orig = opt.process

            def process(value, state, orig=orig):
                vals = [value]
                if state.rargs and _is_number(state.rargs[0]):
                    vals.append(state.rargs.pop(0))
                orig(tuple(vals), state)

            opt.process = process
