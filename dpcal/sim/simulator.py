"""The simulator: clean sRGB images -> noisy low-light RAW mosaics (paper eq. 1).

One implementation in PyTorch, batched ``(B, 3, H, W)``, on CPU or GPU, used by
``dpcal simulate`` and on the fly in training::

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
range sampled log-uniformly per image (``Profile.noise(lux=...)``, per CFA plane).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np
import torch

from dpcal.cfa import PLANES
from dpcal.errors import BadInputError
from dpcal.profile import Profile, load_profile
from dpcal.profile.model import eval_iso_model
from dpcal.sim.color import UnprocessParams, linearize, sample_unprocess_params
from dpcal.sim.config import MODES, PSF_POSITIONS, REFERENCE_PATTERN, SimConfig, parse_lux
from dpcal.sim.ops import Generators, draw, make_generators, mosaic, mosaic3, poisson_gaussian, quantize

__all__ = ["MODES", "PSF_POSITIONS", "REFERENCE_PATTERN", "SimConfig", "SimResult", "Simulator", "parse_lux",
           "psf_for_image"]


@dataclasses.dataclass
class SimResult:
    """Output of :class:`Simulator` for a batch.

    Attributes
    ----------
    mosaic : Tensor (B, 1, H, W)
        Noisy, clipped (and quantised, if enabled) mosaic in [0, 1].
    clean : Tensor (B, 1, H, W)
        The noiseless mosaic ``A x`` (after linearisation, blur and CFA sampling).
    linear : Tensor (B, 3, H, W)
        The linear latent image (before blur), e.g. a training target.
    lux, iso : Tensor (B,), float64
    alpha, sigma : Tensor (B, 4), float64
        Noise parameters per CFA plane (``R, Gr, Gb, B``).
    levels : Tensor (B, 4), float64
        DN steps ``white - black`` per plane (used when quantising).
    pattern : str
    unprocess : UnprocessParams or None
    """

    mosaic: torch.Tensor
    clean: torch.Tensor
    linear: torch.Tensor
    lux: torch.Tensor
    iso: torch.Tensor
    alpha: torch.Tensor
    sigma: torch.Tensor
    levels: torch.Tensor
    pattern: str
    unprocess: UnprocessParams | None = None

    def mosaic3(self) -> torch.Tensor:
        """The noisy mosaic as ``(B, 3, H, W)`` with zeros at unsampled sites (reference layout)."""
        return mosaic3(self.mosaic, self.pattern)


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
    from dpcal.psf import PSFField

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


class Simulator:
    """Clean sRGB batches -> noisy RAW mosaics for one camera profile.

    Parameters
    ----------
    profile : str, path or Profile
        Camera profile (default ``nexus6p-rear``).
    config : SimConfig, optional
    psf_field : PSFField, optional
        Use this field instead of the profile's (implies ``psf=True``).
    device : str or torch.device, optional
        Move inputs there (default: leave them where they are).
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
        self.profile = load_profile(profile)
        cfg = config or SimConfig()
        if psf_field is not None:
            overrides.setdefault("psf", True)
        if overrides:
            cfg = dataclasses.replace(cfg, **overrides)
        if psf_field is not None:
            # The given field stands in for the profile's: validate everything else.
            self.config = dataclasses.replace(dataclasses.replace(cfg, psf=False).resolve(self.profile), psf=True)
        else:
            self.config = cfg.resolve(self.profile)
        self.device = torch.device(device) if device is not None else None
        self.pattern = self.config.pattern
        self.field = psf_field
        if self.config.psf and self.field is None:
            from dpcal.psf import PSFField

            self.field = PSFField.load(self.profile.psf_path())
        if self.field is not None and tuple(self.field.planes) != PLANES:
            raise BadInputError(f"the PSF field's planes are {self.field.planes}; the simulator needs {PLANES}")
        self._psf_cache: dict = {}
        light = self.profile.doc["light"]
        self._lux_per_ll = float(light["lux_per_light_level"])
        self._iso_at_ll1 = float(light["iso_at_unit_light_level"])

    # -- noise parameters --------------------------------------------------------------------
    def noise_params(self, lux) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``alpha (B, 4)``, ``sigma (B, 4)``, ``iso (B,)`` at each illuminance, per CFA plane.

        Vectorised form of ``Profile.noise(lux=...)`` (identical numbers).
        """
        lux = np.atleast_1d(np.asarray(lux, dtype=np.float64))
        if not np.all(np.isfinite(lux) & (lux > 0)):
            raise BadInputError(f"lux must be positive numbers, got {lux[~(np.isfinite(lux) & (lux > 0))][0]:g}")
        ll = lux / self._lux_per_ll
        iso = self._iso_at_ll1 / ll
        self.profile.warn_if_extrapolated(float(iso.min()), float(iso.max()), stacklevel=3)
        if self.config.noise_source == "table":
            rows = [self.profile.noise(iso=float(i), source="table") for i in iso]
            alpha = np.array([[r.alpha[p] for p in PLANES] for r in rows])
            sigma = np.array([[r.sigma[p] for p in PLANES] for r in rows])
            return alpha, sigma, iso
        m = self.profile.iso_model
        alpha = np.empty((len(lux), 4))
        sigma = np.empty((len(lux), 4))
        for j, p in enumerate(PLANES):
            a, s = eval_iso_model(m["kind"], m["params"][p], iso)
            alpha[:, j], sigma[:, j] = a, s
        return alpha, sigma, iso

    def levels(self, iso) -> np.ndarray:
        """DN steps between black and white per sample and plane, ``(B, 4)``."""
        black = np.asarray(self.profile.black_level, dtype=np.float64)
        white = np.array([self.profile.white_level(float(i)) for i in np.atleast_1d(iso)])
        return white[:, None] - black[None, :]

    def sample_lux(self, batch: int, generator: Generators = None, device=None) -> np.ndarray:
        """Log-uniform illuminance in the configured range (one uniform draw per sample)."""
        lo, hi = self.config.lux
        u = draw(torch.rand, batch, (), generator, dtype=torch.float64, device=device).cpu().numpy()
        return lo * np.exp(u * math.log(hi / lo)) if hi > lo else np.full(batch, lo)

    def psf_for_size(self, height: int, width: int):
        """The PSF field in the frame of a ``height`` x ``width`` image (cached)."""
        key = (height, width)
        if key not in self._psf_cache:
            self._psf_cache[key] = psf_for_image(self.field, height, width, self.config.psf_position)
        return self._psf_cache[key]

    # -- the forward model -------------------------------------------------------------------
    def __call__(self, images: torch.Tensor, *, generator: Generators = None, seeds: Sequence[int] | None = None,
                 lux=None, tone_applied: bool = False) -> SimResult:
        """Simulate a batch.

        Parameters
        ----------
        images : Tensor (B, 3, H, W), floating
            Clean sRGB in [0, 1].
        generator : torch.Generator or sequence of them, optional
            One for the batch, or one per sample (each sample's draws then depend only on it:
            lux, unprocessing parameters, Poisson, Gaussian, in that order).
        seeds : sequence of int, optional
            Per-sample seeds (makes one generator each, on the images' device).
        lux : float or array (B,), optional
            Fixed illuminance per sample instead of drawing it (no draw is made).
        tone_applied : bool
            The images already went through the linearisation's pointwise inverse tone curve
            (``load_image(..., tone=...)`` does it exactly at decode time, before resizing);
            only its per-image colour part (unprocessing's CCM and gains) is applied here.

        Returns
        -------
        SimResult
        """
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
            raise ValueError(f"images must be a (B, 3, H, W) tensor, got {shape}")
        if not images.is_floating_point():
            raise ValueError(f"images must be floating point in [0, 1], got {images.dtype}")
        if self.device is not None:
            images = images.to(self.device)
        b, _, h, w = images.shape
        dev, dt = images.device, images.dtype
        gens = make_generators(seeds, dev) if seeds is not None else generator
        if lux is None:
            lux_np = self.sample_lux(b, gens, dev)
        else:
            lux_np = np.broadcast_to(np.asarray(lux, dtype=np.float64), (b,)).copy()
        alpha, sigma, iso = self.noise_params(lux_np)
        params = None
        if self.config.linearize == "unprocess":
            params = sample_unprocess_params(b, gens, dtype=dt, device=dev)
        lin = linearize(images, self.config.linearize, params, tone_applied=tone_applied)
        if self.field is not None:
            from dpcal.psf import blur_rgb_to_planes

            clean = mosaic(blur_rgb_to_planes(lin, self.psf_for_size(h, w)), self.pattern)
        else:
            clean = mosaic(lin, self.pattern)
        a_t = torch.as_tensor(alpha, device=dev)
        s_t = torch.as_tensor(sigma, device=dev)
        y = poisson_gaussian(clean, a_t.to(dt), s_t.to(dt), pattern=self.pattern, generator=gens)
        lv = self.levels(iso)
        if self.config.quantize:
            y = quantize(y, torch.as_tensor(lv, dtype=dt, device=dev), pattern=self.pattern)
        return SimResult(
            mosaic=y, clean=clean, linear=lin,
            lux=torch.as_tensor(lux_np), iso=torch.as_tensor(iso), alpha=a_t.cpu(), sigma=s_t.cpu(),
            levels=torch.as_tensor(lv), pattern=self.pattern, unprocess=params,
        )
