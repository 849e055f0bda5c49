"""Support for testing and benchmarking dpcal (like ``numpy.testing``): synthetic inputs with a
known truth, which the test suite, the benchmarks and ``dpcal demo`` build on.

- :mod:`dpcal.testing.captures`: synthetic gray-chart captures with known Poisson-Gaussian noise.
- :mod:`dpcal.testing.scenes`: clean "natural-ish" scenes for the noise fitters.
- :mod:`dpcal.testing.shapes`: a labelled texture data set (four classes) for the demo and tests.

Nothing in the calibration, profile, simulation or learning layers imports this package
(``docs/architecture.md``). Names are imported on first use (``lazy_loader``, SPEC 1).
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submodules=["captures", "scenes", "shapes"],
    submod_attrs={"captures": ["gray_chart", "synthetic_capture"], "scenes": ["natural_scene"],
                  "shapes": ["SHAPE_CLASSES", "draw_shape", "make_shapes_dataset"]},
)
