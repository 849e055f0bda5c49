"""The ``dpcal`` command line: a thin click layer over the library.

Subcommands are imported only when invoked, so ``dpcal --help`` never imports torch, rawpy or
OpenCV. Errors: a :class:`~dpcal.errors.DpcalError` or an OS error prints one line and exits 1,
a usage error one line and exit 2; ``-v`` adds the traceback. SIGTERM and SIGHUP end a command
like Ctrl-C does (clean-up runs, worker processes end).
"""

from __future__ import annotations

import importlib
import logging
import sys
import traceback
import warnings

import click

from dpcal._version import __version__
from dpcal.cli.options import cli_message
from dpcal.errors import DpcalError, DpcalWarning

# name -> "module:attribute"; the order is the pipeline's.
COMMANDS = {
    "info": ("dpcal.cli.info:info", "Show the CFA, levels and metadata of a RAW file."),
    "fit-noise": ("dpcal.cli.fit_noise:fit_noise", "Calibrate Poisson-Gaussian noise from chart captures, frame pairs or EMVA 1288 data."),
    "profile": ("dpcal.cli.profile:profile", "List, show, validate camera profiles and query their noise."),
    "make-chart": ("dpcal.cli.make_chart:make_chart", "Make a PSF or gray calibration chart (print or display)."),
    "fit-psf": ("dpcal.cli.fit_psf:fit_psf", "Estimate a spatially varying PSF field from chart captures."),
    "render-chart": ("dpcal.cli.render_chart:render_chart", "Render a synthetic RAW capture of a chart."),
    "simulate": ("dpcal.cli.simulate:simulate", "Simulate noisy low-light RAW datasets from image folders."),
    "train": ("dpcal.cli.train:train", "Train the Anscombe network with a classifier, or a baseline."),
    "eval": ("dpcal.cli.eval:eval_", "Evaluate trained models: accuracy vs light level, tables, plots, real captures."),
    "models": ("dpcal.cli.models:models", "List the trainable models with their parameters and MACs."),
    "demo": ("dpcal.cli.demo:demo", "Run the pipeline end to end on built-in data."),
}

RERUN_TO_RESUME = "rerun the same command to resume"
_state = {"verbose": 0, "warned": set(), "resume_hint": RERUN_TO_RESUME}


def set_resume_hint(text: str) -> None:
    """What the interrupt message tells the user, for a command that resumes other than by a rerun."""
    _state["resume_hint"] = text


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """dpcal's own warnings as one line each, one per kind and command (not one per image)."""
    if not issubclass(category, DpcalWarning):
        return _show_other(message, category, filename, lineno, file, line)
    if category not in _state["warned"]:
        _state["warned"].add(category)
        click.echo(f"dpcal: warning: {message}", err=True)


_show_other = warnings.showwarning


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        mod, attr = COMMANDS[name][0].split(":")
        return getattr(importlib.import_module(mod), attr)

    def format_commands(self, ctx, formatter):
        # Short help from the table: listing commands must not import them.
        rows = [(name, help_) for name, (_, help_) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dpcal")
@click.option("-v", "--verbose", count=True, help="More log output; -v also shows tracebacks.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr.")
def cli(verbose: int, quiet: bool) -> None:
    """dpcal: calibrate a camera, simulate low-light RAW data, train a learned ISP.

    Pipeline: calibrate (fit-noise, fit-psf) -> profile -> simulate -> train -> eval.
    Results go to stdout (one JSON document with --json); logs and progress go to stderr.
    """
    _state["verbose"] = verbose
    _state["warned"] = set()
    _state["resume_hint"] = RERUN_TO_RESUME
    warnings.showwarning = _show_warning
    warnings.simplefilter("always", DpcalWarning)  # the once-per-kind rule is _show_warning's
    level = logging.ERROR if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="dpcal: %(message)s", stream=sys.stderr, force=True)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread like Ctrl-C so that the same clean-up runs
    (worker pools shut down, partial outputs removed)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _on_signal(signum, frame):
    raise Terminated(signum)


def _install_signal_handlers() -> dict:
    """Route SIGTERM (``kill``) and SIGHUP (a closed terminal) through Python's clean-up; without
    this they end the process at once and leave its worker processes running."""
    import signal

    old = {}
    for name in ("SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None:
            try:
                old[sig] = signal.signal(sig, _on_signal)
            except ValueError:  # not the main thread: leave signals alone
                pass
    return old


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``dpcal`` script."""
    import signal

    old_handlers = _install_signal_handlers()
    try:
        _main(argv)
    finally:
        for sig, h in old_handlers.items():
            signal.signal(sig, h)


def _main(argv: list[str] | None) -> None:
    try:
        cli.main(args=argv, prog_name="dpcal", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.exceptions.UsageError as e:  # one line too, with where to look
        hint = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
        click.echo(f"dpcal: usage error: {e.format_message()}{hint}", err=True)
        sys.exit(2)
    except click.exceptions.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt) as e:
        # click turns Ctrl-C (and our SIGTERM/SIGHUP) into Abort; the interrupt is its cause.
        intr = e if isinstance(e, KeyboardInterrupt) else e.__cause__
        if not isinstance(intr, KeyboardInterrupt):
            click.echo("dpcal: aborted", err=True)
            sys.exit(1)
        click.echo(f"dpcal: interrupted; {_state['resume_hint']}", err=True)
        sys.exit(128 + intr.signum if isinstance(intr, Terminated) else 130)
    except DpcalError as e:
        if _state["verbose"]:
            traceback.print_exc()
        click.echo(f"dpcal: error: {cli_message(str(e))}", err=True)
        sys.exit(1)
    except OSError as e:  # the file system said no (full disk, read-only, permissions)
        if _state["verbose"]:
            traceback.print_exc()
        where = f"{e.filename}: " if e.filename else ""
        click.echo(f"dpcal: error: {where}{e.strerror or e}", err=True)
        sys.exit(1)
    except Exception as e:  # a bug: keep it to one line unless asked
        if _state["verbose"]:
            traceback.print_exc()
        click.echo(f"dpcal: internal error: {type(e).__name__}: {e} (rerun with -v for the traceback)", err=True)
        sys.exit(1)
    sys.exit(0)
