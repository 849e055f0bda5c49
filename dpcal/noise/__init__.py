"""Poisson-Gaussian noise calibration (``docs/method.md`` section 2): ``sigma^2(y) = alpha y + sigma^2``.

Two routes, one model, per CFA plane in normalised [0, 1] units:

* **single image** (Foi et al. 2008, clipping per Foi 2009): :func:`fit_noise_single` on one
  capture of a gray chart or any scene with flat areas (:mod:`dpcal.noise.single`,
  :mod:`dpcal.noise.chart`, :mod:`dpcal.noise.fit`, :mod:`dpcal.physics.clipped`);
* **pairs / stacks** (photon transfer, EMVA 1288): :mod:`dpcal.noise.pairs`, including
  :func:`fit_emva` for ``EMVA1288_Data.txt`` data sets.

:func:`dpcal.workflows.fit_noise.run_fit_noise` is the ``dpcal fit-noise`` command's workflow
(files, grouping by ISO, ISO model, profile, CSV, plots) on top of these. Imports of numpy-heavy submodules happen
on first use (``lazy_loader``, SPEC 1).
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submodules=["chart", "clipped", "diagnostics", "emva", "fit", "hygiene", "levelsets", "pairs", "pairstats", "plots",
                "prnu", "single"],
    submod_attrs={
        "fit": ["NoiseFit", "fit_levelsets"],
        "levelsets": ["LevelSets"],
        "single": ["fit_noise_single"],
        "pairs": ["fit_emva", "photon_transfer", "temporal_stats"],
    },
)
