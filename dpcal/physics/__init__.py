"""The physics core: one image formation model that every stage calls (``docs/method.md``).

- :mod:`dpcal.physics.cfa`: CFA operators on tensors (mosaic, its adjoint, masks, packing).
- :mod:`dpcal.physics.noise`: Poisson-Gaussian sampling and quantisation in torch.
- :mod:`dpcal.physics.sensor`: the same draws and DN conversion in NumPy.
- :mod:`dpcal.physics.clipped`: moments of clipped noisy observations (noise fits, tests).
- :mod:`dpcal.physics.tone`, :mod:`dpcal.physics.color`: sRGB curves, Brooks et al. (2019)
  unprocessing.
- :mod:`dpcal.physics.light`: lux -> ISO -> per-plane (alpha, sigma).
- :mod:`dpcal.physics.optics`: spatially varying PSF fields (:class:`PSFField`) and their
  application as a bilinear product convolution (:func:`apply_psf_field`).
- :mod:`dpcal.physics.forward`: :class:`~dpcal.physics.forward.RawForward`, the whole model as
  an ``nn.Module`` (simulation, training and evaluation use it).

This layer sits under the calibration, profile and simulation packages (``docs/architecture.md``).
Nothing is imported here: names and submodules load on first use (``lazy_loader``, SPEC 1), and
only the submodules that need torch import it.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submodules=["cfa", "clipped", "color", "forward", "light", "noise", "optics", "sensor", "tone"],
    submod_attrs={
        "optics": ["PSFField", "apply_psf_field", "blur_rgb_to_planes", "gaussian_kernel", "hat_weights"],
        "forward": ["RawForward"],
    },
)
