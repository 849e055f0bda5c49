"""Low-light RAW simulation (paper eq. 1) and the dataset writer behind ``dpcal simulate``.

- :class:`Simulator` (:mod:`dpcal.sim.simulator`): batched PyTorch forward model, CPU or GPU.
- :mod:`dpcal.sim.ops`: CFA mosaic and its adjoint, Poisson-Gaussian noise at CFA sites,
  quantisation.
- :mod:`dpcal.sim.color`: sRGB linearisation and Brooks et al. (2019) unprocessing.
- :mod:`dpcal.sim.geometry`: decoding and the crop/resize rules (reference and realistic).
- :mod:`dpcal.sim.dataset`: :func:`simulate_dataset` (resumable, deterministic, parallel).
- :mod:`dpcal.sim.moments`: clipped Poisson-Gaussian moments for checking the output.
"""

from dpcal.sim.color import LINEARIZE, linearize, srgb_to_linear, unprocess
from dpcal.sim.dataset import discover, imagenet_synsets, simulate_dataset
from dpcal.sim.ops import cfa_mask, mosaic, mosaic3, poisson_gaussian, quantize
from dpcal.sim.simulator import MODES, PSF_POSITIONS, SimConfig, SimResult, Simulator, psf_for_image

__all__ = [
    "LINEARIZE",
    "MODES",
    "PSF_POSITIONS",
    "SimConfig",
    "SimResult",
    "Simulator",
    "cfa_mask",
    "discover",
    "imagenet_synsets",
    "linearize",
    "mosaic",
    "mosaic3",
    "poisson_gaussian",
    "psf_for_image",
    "quantize",
    "simulate_dataset",
    "srgb_to_linear",
    "unprocess",
]
