"""Lens PSF calibration from photos of a random-noise chart (``docs/psf.md``).

- :func:`fit_psf` (:mod:`dpcal.psf.fit`): captures of a chart -> a :class:`PSFField`, in stages:
  :mod:`~dpcal.psf.prepare` (registration, :mod:`~dpcal.psf.photometry`, sharp chart),
  :mod:`~dpcal.psf.tiles` (pilot and kernels per tile), :mod:`~dpcal.psf.fieldmodel` (node
  kernels of a smooth field) and :mod:`~dpcal.psf.qa`.
- :mod:`dpcal.psf.estimate`: the per-tile non-blind kernel solver and kernel measures.
- :mod:`dpcal.psf.matlab`: import of MATLAB PSF files.
- :mod:`dpcal.psf.plots`: figures of a field.

The field type itself, :class:`PSFField`, and its application live in the physics layer
(:mod:`dpcal.physics.optics`), because the simulator and the chart renderer use them too; they
are re-exported here. Names are imported on first use (``lazy_loader``, SPEC 1).
"""

import lazy_loader as _lazy

__getattr__, _lazy_dir, __all__ = _lazy.attach(
    __name__,
    submodules=["estimate", "fieldmodel", "fit", "matlab", "photometry", "plots", "prepare", "qa", "tiles"],
    submod_attrs={
        "fit": ["FitPSFResult", "fit_psf"],
        "estimate": ["mtf50", "relative_l2"],
        "qa": ["compare_fields"],
    },
)

from dpcal.physics.optics import (  # noqa: E402  (re-exported: part of this package's public API)
    PSFField,
    apply_psf_field,
    blur_rgb_to_planes,
    gaussian_kernel,
    hat_weights,
)

__all__ = [*__all__, "PSFField", "apply_psf_field", "blur_rgb_to_planes", "gaussian_kernel", "hat_weights"]


def __dir__():
    return list(__all__)
