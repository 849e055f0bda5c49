"""Low-light RAW simulation (paper eq. 1): the simulator and its input images.

- :class:`Simulator` (:mod:`dpcal.sim.simulator`): a profile's image formation model, the
  ``nn.Module`` :class:`dpcal.physics.forward.RawForward`, CPU or GPU.
- :mod:`dpcal.sim.geometry`: decoding and the crop/resize rules (reference and realistic).
- :mod:`dpcal.sim.layout`: the on-disk format of source trees and simulated datasets.

The dataset writer behind ``dpcal simulate`` (folders, manifest, journal, executors, preview)
is the workflow :mod:`dpcal.workflows.simulate`.

Names are imported lazily (``lazy_loader``, SPEC 1), so that ``import dpcal.sim`` (and settings errors) do not pay for
importing torch.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submodules=["config", "geometry", "layout", "simulator"],
    submod_attrs={
        "config": ["MODES", "PSF_POSITIONS", "SimConfig", "parse_lux"],
        "simulator": ["SimResult", "Simulator", "psf_for_image"],
        "geometry": ["load_image"],
        "layout": ["derive_seed", "discover", "imagenet_synsets", "read_card"],
    },
)
