"""The image formation model that every stage shares (``docs/method.md`` section 1).

- :mod:`dpcal.physics.optics`: spatially varying PSF fields (:class:`PSFField`) and their
  application as a bilinear product convolution (:func:`apply_psf_field`).

This layer sits under the calibration, profile and simulation packages (``docs/architecture.md``):
it imports nothing of dpcal but ``cfa``, ``errors`` and ``io``. Names are imported on first use
(``lazy_loader``, SPEC 1), so that importing the package does not import torch.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submodules=["optics"],
    submod_attrs={
        "optics": ["PSFField", "apply_psf_field", "blur_rgb_to_planes", "gaussian_kernel", "hat_weights"],
    },
)
