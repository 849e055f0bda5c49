"""Support for testing and benchmarking dpcal (like ``numpy.testing``): synthetic inputs with a
known truth, which the test suite, the benchmarks and ``dpcal demo`` build on.

- :mod:`dpcal.testing.scenes`: clean "natural-ish" scenes for the noise fitters.

Nothing in the calibration, profile, simulation or learning layers imports this package
(``docs/architecture.md``). Names are imported on first use (``lazy_loader``, SPEC 1).
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submodules=["scenes"],
    submod_attrs={"scenes": ["natural_scene"]},
)
