"""Options shared by several commands, and output helpers."""

from __future__ import annotations

import json
import math
import os
import re

import click

json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
overwrite_option = click.option("--overwrite", is_flag=True, help="Replace existing outputs.")


#: Library parameters whose flag is not ``--`` + the name with ``-`` for ``_`` (the one place
#: where parameter names meet flags; every other parameter follows that rule).
FLAGS = {
    "black_level": "--black",
    "white_level": "--white",
    "fmt": "--format",
    "chart_path": "--chart",
}

# `name` or `name=value` in a library message (identifiers only: commands in backticks contain spaces).
_PARAM = re.compile(r"`([a-z_][a-z0-9_]*)(?:=([^`\s]+))?`")


def flag(param: str) -> str:
    """The command-line flag of a library parameter.

    Examples
    --------
    >>> flag("kernel_size"), flag("black_level")
    ('--kernel-size', '--black')
    """
    return FLAGS.get(param, "--" + param.replace("_", "-"))


def cli_message(message: str) -> str:
    """A library error message in command-line terms: `param` -> --flag, `param=v` -> --flag v.

    Examples
    --------
    >>> cli_message("`kernel_size` must be odd; or pass `overwrite=True`, or `scene=natural`")
    '--kernel-size must be odd; or pass --overwrite, or --scene natural'
    """
    def sub(m: re.Match) -> str:
        value = m.group(2)
        return flag(m.group(1)) + ("" if value in (None, "True") else f" {value}")

    return _PARAM.sub(sub, message)


def show_progress(as_json: bool = False) -> bool:
    """Progress bars on stderr: not under ``dpcal -q``, nor with ``--json`` unless stderr is a terminal."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.find_root().params.get("quiet"):
        return False
    return not as_json or os.isatty(2)


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
