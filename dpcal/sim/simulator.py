"""The simulator: a camera profile's image formation model, ready for datasets and training.

:class:`Simulator` is :class:`dpcal.physics.forward.RawForward` (an ``nn.Module``) built from
a camera profile and a :class:`~dpcal.sim.config.SimConfig`::

    sRGB -> linearise (none | gamma | unprocess) -> [PSF field blur] -> CFA mosaic
         -> alpha * Poisson(x / alpha) + N(0, sigma^2) at the CFA sites -> clip [0, 1]
         -> [quantise to the sensor's digital numbers]

Two modes:

``reference``
    The Dirty Pixels reference code: BGGR, the sRGB values taken as linear, no quantisation
    (its crop/resize rules live in :mod:`dpcal.sim.geometry`).
``realistic`` (default)
    The profile's CFA pattern, Brooks et al. (2019) unprocessing, quantisation to the
    profile's black/white levels.

Noise parameters come from the camera profile at the sample's illuminance: a fixed lux, or a
range sampled log-uniformly per image (identical to ``Profile.noise(lux=...)``, per CFA plane).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from dpcal.cfa import PLANES
from dpcal.errors import BadInputError
from dpcal.physics.forward import RawForward, SimResult
from dpcal.physics.optics import PSFField, blur_rgb_to_planes
from dpcal.profile import Profile, load_profile
from dpcal.sim.config import MODES, PSF_POSITIONS, REFERENCE_PATTERN, SimConfig, parse_lux

__all__ = ["MODES", "PSF_POSITIONS", "REFERENCE_PATTERN", "SimConfig", "SimResult", "Simulator", "parse_lux",
           "psf_for_image"]


def psf_for_image(field, height: int, width: int, position: str = "sensor"):
    """The PSF field expressed in the pixel frame of a ``height`` x ``width`` image.

    Parameters
    ----------
    field : dpcal.psf.PSFField
        Full-sensor field (``sensor_size`` required).
    position : str
        ``sensor``: the image shows the largest centred region of the sensor with the image's
        aspect ratio, scaled isotropically; node positions scale and each kernel is
        re-integrated over the image's larger pixels (``PSFField.resampled``), so a 128 px image
        of a 4000 px sensor sees kernels shrunk ~30x (mostly a delta): the blur a downscaled
        photo really has. ``center``/``offaxis``/``periphery``: the image is a crop at full sensor
        resolution centred at 0.5/0.9/1.0 of the sensor diagonal (clamped inside the frame),
        kernels at native scale, still varying across the crop.

    Returns
    -------
    PSFField
        Node coordinates in image pixels; ``sensor_size == (width, height)``.
    """
    if field.sensor_size is None:
        raise BadInputError("the PSF field has no sensor_size, so it cannot be placed on an image; re-save it with one")
    if position not in PSF_POSITIONS:
        raise BadInputError(f"unknown PSF position {position!r}; use one of {', '.join(PSF_POSITIONS)}")
    sw, sh = field.sensor_size
    frac = PSF_POSITIONS[position]
    if frac is None:
        if width * sh >= height * sw:
            rw, rh = sw, max(1, round(sw * height / width))
        else:
            rw, rh = max(1, round(sh * width / height)), sh
        x0, y0 = (sw - rw) // 2, (sh - rh) // 2
        sub = PSFField(field.psf, field.node_xy - np.array([x0, y0], float), field.planes, (rw, rh), dict(field.meta))
        return sub.resampled(width, height)
    x0 = int(round(frac * sw - width / 2))
    y0 = int(round(frac * sh - height / 2))
    x0 = min(max(x0, 0), max(sw - width, 0))
    y0 = min(max(y0, 0), max(sh - height, 0))
    return PSFField(field.psf, field.node_xy - np.array([x0, y0], float), field.planes, (width, height), dict(field.meta))


class Simulator(RawForward):
    """Clean sRGB batches -> noisy RAW mosaics for one camera profile (an ``nn.Module``).

    Parameters
    ----------
    profile : str, path or Profile
        Camera profile (default ``nexus6p-rear``).
    config : SimConfig, optional
    psf_field : PSFField, optional
        Use this field instead of the profile's (implies ``psf=True``).
    device : str or torch.device, optional
        Move the module there, and inputs with it (default: leave inputs where they are).
    **overrides
        Fields of :class:`SimConfig` (``mode``, ``lux``, ``linearize``, ``pattern``, ...).

    Examples
    --------
    >>> sim = Simulator("nexus6p-rear", mode="reference", lux=3)
    >>> out = sim(torch.full((2, 3, 8, 8), 0.5), seeds=[0, 1])
    >>> out.mosaic.shape, out.pattern, round(float(out.alpha[0, 0]), 4)
    (torch.Size([2, 1, 8, 8]), 'BGGR', 0.1248)
    """

    def __init__(self, profile: str | Profile = "nexus6p-rear", config: SimConfig | None = None, *,
                 psf_field=None, device=None, **overrides):
        prof = load_profile(profile)
        cfg = config or SimConfig()
        if psf_field is not None:
            overrides.setdefault("psf", True)
        if overrides:
            cfg = dataclasses.replace(cfg, **overrides)
        if psf_field is not None:
            # The given field stands in for the profile's: validate everything else.
            cfg = dataclasses.replace(dataclasses.replace(cfg, psf=False).resolve(prof), psf=True)
        else:
            cfg = cfg.resolve(prof)
        field = psf_field
        if cfg.psf and field is None:
            field = PSFField.load(prof.psf_path())
        if field is not None and tuple(field.planes) != PLANES:
            raise BadInputError(f"the PSF field's planes are {field.planes}; the simulator needs {PLANES}")
        sensor = prof.doc["sensor"]
        super().__init__(
            pattern=cfg.pattern, iso_model=prof.iso_model, light=prof.doc["light"], black_level=prof.black_level,
            white_level=float(sensor["white_level"]), white_level_per_iso=sensor.get("white_level_per_iso"),
            lux=cfg.lux, linearize=cfg.linearize, quantize=cfg.quantize, noise_table=prof.table,
            noise_source=cfg.noise_source, blur=self._blur if field is not None else None,
        )
        self.profile = prof
        self.config = cfg
        self.field = field
        self._psf_cache: dict = {}
        self.device = torch.device(device) if device is not None else None
        if self.device is not None:
            self.to(self.device)

    def psf_for_size(self, height: int, width: int):
        """The PSF field in the frame of a ``height`` x ``width`` image (cached)."""
        key = (height, width)
        if key not in self._psf_cache:
            self._psf_cache[key] = psf_for_image(self.field, height, width, self.config.psf_position)
        return self._psf_cache[key]

    def _blur(self, lin: torch.Tensor) -> torch.Tensor:
        return blur_rgb_to_planes(lin, self.psf_for_size(lin.shape[-2], lin.shape[-1]))

    def forward(self, images: torch.Tensor, **kw) -> SimResult:
        """Simulate a batch; see :meth:`RawForward.forward`."""
        if self.device is not None and isinstance(images, torch.Tensor):
            images = images.to(self.device)
        return super().forward(images, **kw)
