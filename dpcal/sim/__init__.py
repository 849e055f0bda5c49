"""Low-light RAW simulation (paper eq. 1) and the dataset writer behind ``dpcal simulate``.

- :class:`Simulator` (:mod:`dpcal.sim.simulator`): a profile's image formation model, the
  ``nn.Module`` :class:`dpcal.physics.forward.RawForward`, CPU or GPU.
- :mod:`dpcal.sim.geometry`: decoding and the crop/resize rules (reference and realistic).
- :mod:`dpcal.sim.dataset`: :func:`simulate_dataset` (resumable, deterministic, parallel).

Names are imported lazily, so that ``import dpcal.sim`` (and settings errors) do not pay for
importing torch.
"""

import importlib

_WHERE = {
    "MODES": "config", "PSF_POSITIONS": "config", "SimConfig": "config", "parse_lux": "config",
    "SimResult": "simulator", "Simulator": "simulator", "psf_for_image": "simulator",
    "discover": "dataset", "imagenet_synsets": "dataset", "simulate_dataset": "dataset",
    "load_image": "geometry",
}

__all__ = sorted(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(f"dpcal.sim.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'dpcal.sim' has no attribute {name!r}")


def __dir__():
    return __all__
