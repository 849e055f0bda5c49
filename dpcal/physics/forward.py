"""The image formation model (paper eq. 1) as one ``torch.nn.Module``.

::

    sRGB -> linearise (none | gamma | unprocess) -> [lens blur] -> CFA mosaic
         -> alpha * Poisson(x / alpha) + N(0, sigma^2) at the CFA sites -> clip [0, 1]
         -> [quantise to the sensor's digital numbers]

with ``(alpha, sigma)`` per CFA plane from the camera's ISO model at the ISO its light-level
model gives for the sample's illuminance (:mod:`dpcal.physics.light`). :class:`RawForward` holds
the sensor's constants as buffers (ISO-model coefficients, black and white levels, the measured
noise table), so ``.to(device)`` moves everything, ``forward`` makes no host round trip, and the
module traces into one graph for ``torch.compile`` when given one generator (or none).

The same module simulates datasets (``dpcal simulate``), noise on the fly in training, and the
evaluation data, so all three see identical physics. :class:`dpcal.sim.Simulator` builds it
from a camera profile.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from dpcal.physics.cfa import mosaic, mosaic3
from dpcal.physics.color import UnprocessParams, linearize, sample_unprocess_params
from dpcal.physics.light import iso_model_coeffs, noise_at_iso
from dpcal.physics.noise import Generators, draw, make_generators, poisson_gaussian, quantize
from dpcal.physics.tone import LINEARIZE

__all__ = ["RawForward", "SimResult"]


@dataclasses.dataclass
class SimResult:
    """Output of :class:`RawForward` for a batch (all tensors on the input's device).

    Attributes
    ----------
    mosaic : Tensor (B, 1, H, W)
        Noisy, clipped (and quantised, if enabled) mosaic in [0, 1].
    clean : Tensor (B, 1, H, W)
        The noiseless mosaic ``A x`` (after linearisation, blur and CFA sampling).
    linear : Tensor (B, 3, H, W)
        The linear latent image (before blur): the reconstruction target.
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


class RawForward(nn.Module):
    """Clean sRGB batches -> noisy RAW mosaics for one sensor.

    Parameters
    ----------
    pattern : str
        CFA pattern of the simulated mosaics.
    iso_model : mapping
        ``{"kind": "linear" | "cts", "params": {plane: {name: value}}}`` (a profile's
        ``noise.iso_model``).
    light : mapping
        ``{"lux_per_light_level": .., "iso_at_unit_light_level": ..}``.
    black_level : sequence of 4 floats
        Per plane, in DN.
    white_level : float
        Saturation in DN; ``white_level_per_iso`` (``{iso: dn}``) overrides it at the nearest
        measured ISO (in log ISO).
    lux : (lo, hi)
        Illuminance range sampled log-uniformly per image (``lo == hi``: fixed).
    linearize : {"none", "gamma", "unprocess"}
    quantize : bool
        Round to the sensor's digital numbers.
    noise_table : list of dict, optional
        Measured per-ISO rows (``iso``, ``alpha``/``sigma`` per plane); with
        ``noise_source="table"`` they are interpolated log-log inside their range and the ISO
        model is used outside it.
    blur : callable, optional
        ``linear (B, 3, H, W) -> planes (B, 4, H, W)``: the lens PSF per CFA plane.

    Examples
    --------
    >>> from dpcal.cfa import PLANES
    >>> fwd = RawForward(pattern="BGGR", iso_model={"kind": "linear", "params": {
    ...     p: {"a1": 1.8724e-6, "s1": 4.733e-6} for p in PLANES}},
    ...     light={"lux_per_light_level": 2000, "iso_at_unit_light_level": 100},
    ...     black_level=[64] * 4, white_level=1023, lux=(3, 3))
    >>> out = fwd(torch.full((2, 3, 8, 8), 0.5), seeds=[0, 1])
    >>> out.mosaic.shape, round(float(out.alpha[0, 0]), 4)
    (torch.Size([2, 1, 8, 8]), 0.1248)
    """

    def __init__(
        self,
        *,
        pattern: str,
        iso_model: Mapping,
        light: Mapping,
        black_level: Sequence[float],
        white_level: float,
        white_level_per_iso: Mapping | None = None,
        lux: tuple[float, float] = (3.0, 3.0),
        linearize: str = "none",
        quantize: bool = False,
        noise_table: Sequence[Mapping] | None = None,
        noise_source: str = "model",
        blur: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        super().__init__()
        if linearize not in LINEARIZE:
            raise ValueError(f"unknown linearize {linearize!r}; use one of {', '.join(LINEARIZE)}")
        if noise_source not in ("model", "table"):
            raise ValueError(f"noise_source must be 'model' or 'table', got {noise_source!r}")
        lo, hi = (float(v) for v in lux)
        if not (0 < lo <= hi and math.isfinite(hi)):
            raise ValueError(f"lux must be 0 < lo <= hi, got {lux}")
        self.pattern = pattern
        self.lux = (lo, hi)
        self.linearize = linearize
        self.quantize = bool(quantize)
        self.iso_model_kind = iso_model["kind"]
        self.lux_per_light_level = float(light["lux_per_light_level"])
        self.iso_at_unit_light_level = float(light["iso_at_unit_light_level"])
        self.blur = blur
        f64 = torch.float64
        self.register_buffer("iso_coeffs", torch.tensor(iso_model_coeffs(iso_model["kind"], iso_model["params"]), dtype=f64))
        self.register_buffer("black", torch.tensor([float(b) for b in black_level], dtype=f64))
        wpi = sorted((float(k), float(v)) for k, v in (white_level_per_iso or {}).items())
        if not wpi:
            wpi = [(1.0, float(white_level))]
        self.register_buffer("white_log_iso", torch.tensor([math.log(k) for k, _ in wpi], dtype=f64))
        self.register_buffer("white", torch.tensor([v for _, v in wpi], dtype=f64))
        self.use_table = noise_source == "table" and bool(noise_table)
        rows = sorted(noise_table or [], key=lambda r: r["iso"]) if self.use_table else []
        from dpcal.cfa import PLANES

        self.register_buffer("table_log_iso", torch.tensor([math.log(r["iso"]) for r in rows], dtype=f64))
        self.register_buffer("table_log_alpha", torch.tensor(
            [[math.log(max(r["alpha"][p], 1e-300)) for p in PLANES] for r in rows], dtype=f64).reshape(-1, 4))
        self.register_buffer("table_log_sigma", torch.tensor(
            [[math.log(max(r["sigma"][p], 1e-300)) for p in PLANES] for r in rows], dtype=f64).reshape(-1, 4))

    def extra_repr(self) -> str:
        return (f"pattern={self.pattern}, lux={self.lux}, linearize={self.linearize}, quantize={self.quantize}, "
                f"iso_model={self.iso_model_kind}, table={self.use_table}, blur={self.blur is not None}")

    # -- noise parameters --------------------------------------------------------------------
    def noise_params(self, lux) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``alpha (B, 4)``, ``sigma (B, 4)``, ``iso (B,)`` (float64) at each illuminance."""
        lux = torch.as_tensor(lux, dtype=torch.float64, device=self.iso_coeffs.device).reshape(-1)
        # ``float / tensor`` is computed as ``reciprocal * float`` in torch: divide tensors to
        # get the correctly rounded quotient that NumPy (and the profile) give.
        iso = torch.full_like(lux, self.iso_at_unit_light_level) / (lux / self.lux_per_light_level)
        alpha, sigma = noise_at_iso(self.iso_model_kind, self.iso_coeffs, iso)
        if self.use_table:
            li = torch.log(iso)
            lt = self.table_log_iso
            if lt.numel() == 1:
                inside = li == lt[0]
                la, ls = self.table_log_alpha.expand(len(li), 4), self.table_log_sigma.expand(len(li), 4)
            else:
                j = torch.searchsorted(lt, li).clamp(1, lt.numel() - 1)
                t = ((li - lt[j - 1]) / (lt[j] - lt[j - 1]))[:, None]
                la = torch.lerp(self.table_log_alpha[j - 1], self.table_log_alpha[j], t)
                ls = torch.lerp(self.table_log_sigma[j - 1], self.table_log_sigma[j], t)
                inside = (li >= lt[0]) & (li <= lt[-1])
            alpha = torch.where(inside[:, None], torch.exp(la), alpha)
            sigma = torch.where(inside[:, None], torch.exp(ls), sigma)
        return alpha, sigma, iso

    def levels(self, iso: torch.Tensor) -> torch.Tensor:
        """DN steps between black and white per sample and plane, ``(B, 4)``."""
        j = torch.argmin((torch.log(iso)[:, None] - self.white_log_iso[None]).abs(), dim=1)
        return self.white[j][:, None] - self.black[None]

    def sample_lux(self, batch: int, generator: Generators = None, device=None) -> torch.Tensor:
        """Log-uniform illuminance in the configured range, ``(B,)`` float64 (one uniform draw per
        sample, even for a fixed lux, so the draws that follow do not depend on the range)."""
        lo, hi = self.lux
        u = draw(torch.rand, batch, (), generator, dtype=torch.float64, device=device)
        return lo * torch.exp(u * math.log(hi / lo)) if hi > lo else torch.full_like(u, lo)

    # -- the forward model -------------------------------------------------------------------
    def forward(self, images: torch.Tensor, *, generator: Generators = None, seeds: Sequence[int] | None = None,
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
        lux : float or tensor (B,), optional
            Fixed illuminance per sample instead of drawing it (no draw is made).
        tone_applied : bool
            The images already went through the linearisation's pointwise inverse tone curve
            (done exactly at decode time, before resizing); only its per-image colour part
            (unprocessing's CCM and gains) is applied here.

        Returns
        -------
        SimResult
        """
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
            raise ValueError(f"images must be a (B, 3, H, W) tensor, got {shape}")
        if not images.is_floating_point():
            raise ValueError(f"images must be floating point in [0, 1], got {images.dtype}")
        b = images.shape[0]
        dev, dt = images.device, images.dtype
        gens = make_generators(seeds, dev) if seeds is not None else generator
        if lux is None:
            lux_t = self.sample_lux(b, gens, dev)
        else:
            lux_t = torch.as_tensor(lux, dtype=torch.float64, device=dev).expand(b).clone()
        alpha, sigma, iso = self.noise_params(lux_t)
        params = sample_unprocess_params(b, gens, dtype=dt, device=dev) if self.linearize == "unprocess" else None
        lin = linearize(images, self.linearize, params, tone_applied=tone_applied)
        clean = mosaic(self.blur(lin) if self.blur is not None else lin, self.pattern)
        y = poisson_gaussian(clean, alpha.to(dt), sigma.to(dt), pattern=self.pattern, generator=gens)
        lv = self.levels(iso)
        if self.quantize:
            y = quantize(y, lv.to(dt), pattern=self.pattern)
        return SimResult(mosaic=y, clean=clean, linear=lin, lux=lux_t, iso=iso, alpha=alpha, sigma=sigma,
                         levels=lv, pattern=self.pattern, unprocess=params)
