"""One error hierarchy for the whole package.

The CLI turns any :class:`DpcalError` into a single line on stderr and exit code 1; anything
else is a bug and keeps its traceback under ``-v``.
"""


class DpcalError(Exception):
    """Base class of every error dpcal raises on purpose (bad input, failed fit, ...)."""


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
