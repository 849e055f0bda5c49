"""Low-light RAW simulation (paper eq. 1) and the dataset writer behind ``dpcal simulate``.

- :class:`Simulator` (:mod:`dpcal.sim.simulator`): batched PyTorch forward model, CPU or GPU.
- :mod:`dpcal.sim.ops`: CFA mosaic and its adjoint, Poisson-Gaussian noise at CFA sites,
  quantisation.
- :mod:`dpcal.sim.color`: sRGB linearisation and Brooks et al. (2019) unprocessing.
- :mod:`dpcal.sim.geometry`: decoding and the crop/resize rules (reference and realistic).
- :mod:`dpcal.sim.dataset`: :func:`simulate_dataset` (resumable, deterministic, parallel).
- :mod:`dpcal.sim.moments`: clipped Poisson-Gaussian moments for checking the output.

Names are imported lazily, so that ``import dpcal.sim`` (and settings errors) do not pay for
importing torch.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submodules=["color", "config", "dataset", "geometry", "moments", "ops", "preview", "simulator", "worker"],
    submod_attrs={
        "config": ["LINEARIZE", "MODES", "PSF_POSITIONS", "SimConfig", "parse_lux"],
        "simulator": ["SimResult", "Simulator", "psf_for_image"],
        "ops": ["cfa_mask", "mosaic", "mosaic3", "poisson_gaussian", "quantize"],
        "color": ["linearize", "srgb_to_linear", "unprocess"],
        "dataset": ["discover", "imagenet_synsets", "simulate_dataset"],
        "geometry": ["load_image"],
    },
)
