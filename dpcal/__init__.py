"""dpcal: camera calibration, low-light RAW simulation and learned ISPs.

The package follows the pipeline of the Dirty Pixels paper (Diamond et al., ACM TOG 2021)::

    calibrate (dpcal.noise, dpcal.psf) -> profile (dpcal.profile)
      -> simulate (dpcal.sim) -> learn (dpcal.learn) -> evaluate (dpcal.evaluate)

``docs/architecture.md`` draws the layers and the import contract between them.

Heavy modules (torch, rawpy, cv2) are imported inside the functions that need them so that
``import dpcal`` and ``dpcal --help`` stay fast.
"""

from dpcal._version import __version__
from dpcal.errors import (
    BadCFAError,
    BadInputError,
    BadProfileError,
    BadRawError,
    DpcalError,
    FitError,
)

__all__ = [
    "__version__",
    "DpcalError",
    "BadInputError",
    "BadProfileError",
    "BadRawError",
    "BadCFAError",
    "FitError",
]
