"""Poisson-Gaussian noise calibration (REFERENCE.md section 4): ``sigma^2(y) = alpha y + sigma^2``.

Two routes, one model, per CFA plane in normalised [0, 1] units:

* **single image** (Foi et al. 2008, clipping per Foi 2009): :func:`fit_noise_single` on one
  capture of a gray chart or any scene with flat areas (:mod:`dpcal.noise.single`,
  :mod:`dpcal.noise.chart`, :mod:`dpcal.noise.fit`, :mod:`dpcal.physics.clipped`);
* **pairs / stacks** (photon transfer, EMVA 1288): :mod:`dpcal.noise.pairs`, including
  :func:`fit_emva` for ``EMVA1288_Data.txt`` data sets.

:func:`dpcal.noise.calibrate.run_fit_noise` runs the whole ``dpcal fit-noise`` command
(grouping by ISO, ISO model, profile, CSV, plots). Imports of numpy-heavy submodules happen
on first use.
"""

from __future__ import annotations

__all__ = [
    "NoiseFit",
    "LevelSets",
    "fit_levelsets",
    "fit_noise_single",
    "fit_emva",
    "photon_transfer",
    "temporal_stats",
    "clipped_moments",
    "clipped_std",
    "run_fit_noise",
]

_WHERE = {
    "NoiseFit": "dpcal.noise.fit",
    "fit_levelsets": "dpcal.noise.fit",
    "LevelSets": "dpcal.noise.levelsets",
    "fit_noise_single": "dpcal.noise.single",
    "fit_emva": "dpcal.noise.pairs",
    "photon_transfer": "dpcal.noise.pairs",
    "temporal_stats": "dpcal.noise.pairs",
    "clipped_moments": "dpcal.physics.clipped",
    "clipped_std": "dpcal.physics.clipped",
    "run_fit_noise": "dpcal.noise.calibrate",
}


def __getattr__(name: str):
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'dpcal.noise' has no attribute {name!r}")
