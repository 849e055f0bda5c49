"""One error hierarchy for the whole package.

The CLI turns any :class:`DpcalError` into a single line on stderr and exit code 1; anything
else is a bug and keeps its traceback under ``-v``.

Messages name the library's parameters in backticks (```kernel_size` must be odd``,
```overwrite=True```); the CLI rewrites those to its flags in one place
(:func:`dpcal.cli.options.cli_message`), so the library never speaks in command-line terms.
"""


class DpcalError(Exception):
    """Base class of every error dpcal raises on purpose (bad input, failed fit, ...).

    Parameters
    ----------
    message : str
    param : str, optional
        The name of the parameter at fault, for programs that react to it.

    Examples
    --------
    >>> e = BadInputError("`kernel_size` must be odd, got 14", param="kernel_size")
    >>> e.param, str(e)
    ('kernel_size', '`kernel_size` must be odd, got 14')
    """

    def __init__(self, *args, param: str | None = None):
        super().__init__(*args)
        self.param = param


class BadInputError(DpcalError, ValueError):
    """An input file, folder or value cannot be used as given.

    Also a :class:`ValueError`, so that code written against the usual Python convention for a
    bad argument catches it.
    """


class BadProfileError(BadInputError):
    """A camera profile is missing, malformed or fails validation."""


class BadRawError(BadInputError):
    """A RAW file cannot be read, or is not a Bayer mosaic."""


class BadCFAError(BadInputError):
    """An unknown or inconsistent colour filter array pattern."""


class FitError(DpcalError):
    """A calibration fit is undetermined (too little usable data) and returns no numbers."""
