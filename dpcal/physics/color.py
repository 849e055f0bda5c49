"""From display sRGB to linear sensor-like RGB: ``none``, ``gamma`` or ``unprocess``.

``gamma`` inverts the sRGB transfer function (IEC 61966-2-1). ``unprocess`` follows Brooks et
al., "Unprocessing Images for Learned Raw Denoising", CVPR 2019: invert a global tone curve
(smoothstep), the gamma (2.2), the colour correction (a random convex combination of four
camera XYZ->camera matrices) and the white balance and brightness gains (random, with
highlights protected). The constants below are the published ones (Brooks et al. 2019, Table/
supplement and their Apache-2.0 reference implementation); they are
embedded so that an installed dpcal needs no data files. The code is written from the
equations, not copied.

All functions work on ``(B, 3, H, W)`` tensors in [0, 1] and are differentiable (the inverse
smoothstep has infinite slope exactly at 0 and 1).
"""

from __future__ import annotations

import dataclasses
import torch

from dpcal.physics.noise import Generators, draw
from dpcal.physics.tone import LINEARIZE, linear_to_srgb, srgb_to_linear

#: XYZ -> camera matrices of four cameras (Brooks et al. 2019); a random convex combination
#: of them is drawn per image.
XYZ2CAMS = (
    ((1.0234, -0.2969, -0.2266), (-0.5625, 1.6328, -0.0469), (-0.0703, 0.2188, 0.6406)),
    ((0.4913, -0.0541, -0.0202), (-0.6130, 1.3513, 0.2906), (-0.1564, 0.2151, 0.7183)),
    ((0.8380, -0.2630, -0.0639), (-0.2887, 1.0725, 0.2496), (-0.0627, 0.1427, 0.5438)),
    ((0.6596, -0.2079, -0.0562), (-0.4782, 1.3016, 0.1933), (-0.0970, 0.1581, 0.5181)),
)
#: linear sRGB (D65) -> XYZ.
RGB2XYZ = ((0.4124564, 0.3575761, 0.1804375), (0.2126729, 0.7151522, 0.0721750), (0.0193339, 0.1191920, 0.9503041))
#: Gain distributions: brightness 1/N(0.8, 0.1), red U(1.9, 2.4), blue U(1.5, 1.9).
RGB_GAIN_MEAN, RGB_GAIN_STD = 0.8, 0.1
RED_GAIN = (1.9, 2.4)
BLUE_GAIN = (1.5, 1.9)
GAMMA = 2.2
HIGHLIGHT = 0.9  # gray level above which the inverse gains fade out (highlight protection)

__all__ = [
    "LINEARIZE",
    "UnprocessParams",
    "sample_unprocess_params",
    "unprocess",
    "reprocess",
    "linearize",
    "inverse_tone",
    "forward_tone",
    "inverse_tone_lut",
    "camera_colors",
]


@dataclasses.dataclass
class UnprocessParams:
    """Per-image unprocessing parameters (Brooks et al. 2019).

    Attributes
    ----------
    rgb2cam : Tensor (B, 3, 3)
        Linear sRGB -> camera RGB, rows summing to 1.
    rgb_gain, red_gain, blue_gain : Tensor (B,)
        The forward pipeline's gains; unprocessing divides by them.
    """

    rgb2cam: torch.Tensor
    rgb_gain: torch.Tensor
    red_gain: torch.Tensor
    blue_gain: torch.Tensor

    @property
    def inverse_gains(self) -> torch.Tensor:
        """``(B, 3)``: ``[1/red, 1, 1/blue] / rgb_gain``."""
        one = torch.ones_like(self.red_gain)
        return torch.stack([1 / self.red_gain, one, 1 / self.blue_gain], 1) / self.rgb_gain[:, None]


def sample_unprocess_params(batch: int, generator: Generators = None, *, dtype=torch.float32, device=None) -> UnprocessParams:
    """Draw per-image unprocessing parameters.

    Per sample, in this order: four matrix weights ``U(0, 1)`` (normalised: a random convex
    combination), the brightness ``N(0.8, 0.1)`` (its inverse is the gain), red ``U(1.9, 2.4)``
    and blue ``U(1.5, 1.9)`` gains.
    """
    kw = {"dtype": torch.float64, "device": device}
    u = draw(torch.rand, batch, (6,), generator, **kw)
    n = draw(torch.randn, batch, (1,), generator, **kw)[:, 0]
    w = u[:, :4] + 1e-8
    w = w / w.sum(1, keepdim=True)
    xyz2cam = torch.einsum("bm,mij->bij", w, torch.tensor(XYZ2CAMS, **kw))
    rgb2cam = xyz2cam @ torch.tensor(RGB2XYZ, **kw)
    rgb2cam = rgb2cam / rgb2cam.sum(-1, keepdim=True)
    brightness = (RGB_GAIN_MEAN + RGB_GAIN_STD * n).clamp(min=0.1)  # 7 std from the mean
    red = RED_GAIN[0] + (RED_GAIN[1] - RED_GAIN[0]) * u[:, 4]
    blue = BLUE_GAIN[0] + (BLUE_GAIN[1] - BLUE_GAIN[0]) * u[:, 5]
    return UnprocessParams(rgb2cam.to(dtype), (1 / brightness).to(dtype), red.to(dtype), blue.to(dtype))


def _ccm(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return torch.einsum("bij,bjhw->bihw", m.to(x.dtype), x)


def inverse_tone(x: torch.Tensor, method: str) -> torch.Tensor:
    """The pointwise part of a linearisation (the same function for every image).

    ``none``: identity; ``gamma``: inverse sRGB curve; ``unprocess``: inverse smoothstep tone
    curve ``0.5 - sin(asin(1 - 2x) / 3)`` then inverse gamma ``x ** 2.2``. Being pointwise, it
    can be applied to decoded 8- or 16-bit codes through an exact lookup table
    (:func:`inverse_tone_lut`), before resizing (so that resampling averages linear light).
    """
    if method == "none":
        return x
    if method == "gamma":
        return srgb_to_linear(x)
    if method == "unprocess":
        x = x.clamp(0.0, 1.0)
        x = 0.5 - torch.sin(torch.asin(1.0 - 2.0 * x) / 3.0)
        return x.clamp(min=1e-8) ** GAMMA
    raise ValueError(f"unknown linearisation {method!r}; use one of {', '.join(LINEARIZE)}")


def forward_tone(x: torch.Tensor, method: str) -> torch.Tensor:
    """Inverse of :func:`inverse_tone` (for display)."""
    if method == "none":
        return x
    if method == "gamma":
        return linear_to_srgb(x.clamp(0.0, 1.0))
    if method == "unprocess":
        x = x.clamp(min=1e-8) ** (1 / GAMMA)
        x = x.clamp(0.0, 1.0)
        return 3 * x**2 - 2 * x**3
    raise ValueError(f"unknown linearisation {method!r}; use one of {', '.join(LINEARIZE)}")


def inverse_tone_lut(method: str, bits: int = 8):
    """``inverse_tone`` at every ``bits``-bit code value ``k / (2**bits - 1)``, float32 numpy.

    Examples
    --------
    >>> lut = inverse_tone_lut("gamma")
    >>> lut.shape, round(float(lut[128]), 4)
    ((256,), 0.2159)
    """
    n = 2**bits
    x = torch.arange(n, dtype=torch.float64) / (n - 1)
    return inverse_tone(x, method).to(torch.float32).numpy()


def camera_colors(x: torch.Tensor, params: UnprocessParams) -> torch.Tensor:
    """The per-image part of unprocessing: ``rgb2cam``, then the inverse white-balance and
    brightness gains ``g``, faded to 1 above a gray level of 0.9 so that highlights stay
    saturated instead of turning coloured; clipped to [0, 1].

    Brooks et al. multiply the camera image by ``max(m + (1 - m) g, g)`` with
    ``m = (max(gray - 0.9, 0) / 0.1)^2``; that equals ``g (1 + m max(1/g - 1, 0))``, so the gains
    fold into the colour matrix.
    """
    m3 = params.rgb2cam.to(x.dtype)
    gains = params.inverse_gains.to(x.dtype)
    y = _ccm(x, gains[:, :, None] * m3)
    gray = torch.einsum("bj,bjhw->bhw", m3.mean(1), x)[:, None]  # mean of the camera channels
    # Evaluated for every image (no data-dependent branch, so the model traces into one graph);
    # where no pixel is above the threshold the factor is exactly 1.
    m = ((gray - HIGHLIGHT).clamp(min=0) * (1 / (1 - HIGHLIGHT))) ** 2
    c = (1 / gains - 1).clamp(min=0)[:, :, None, None]
    y = y * (1 + m * c)
    return y.clamp(0.0, 1.0)


def unprocess(x: torch.Tensor, params: UnprocessParams) -> torch.Tensor:
    """sRGB ``(B, 3, H, W)`` in [0, 1] -> linear camera RGB in [0, 1] (Brooks et al. 2019):
    :func:`inverse_tone` then :func:`camera_colors`."""
    return camera_colors(inverse_tone(x, "unprocess"), params)


def reprocess(x: torch.Tensor, params: UnprocessParams) -> torch.Tensor:
    """Approximate inverse of :func:`unprocess` (for display): gains, ``cam2rgb``, gamma, smoothstep.

    Exact for pixels whose unprocessed gray level stays below the highlight threshold.
    """
    gains = params.inverse_gains.to(x.dtype)[:, :, None, None]
    x = x / gains
    x = _ccm(x, torch.linalg.inv(params.rgb2cam.to(torch.float64)))
    return forward_tone(x, "unprocess")


def linearize(x: torch.Tensor, method: str, params: UnprocessParams | None = None, *,
              tone_applied: bool = False) -> torch.Tensor:
    """Apply one of :data:`LINEARIZE` to an sRGB batch ``(B, 3, H, W)``.

    ``tone_applied``: ``x`` already went through :func:`inverse_tone` (e.g. by lookup table at
    decode time); only the per-image colour part remains.
    """
    if method not in LINEARIZE:
        raise ValueError(f"unknown linearisation {method!r}; use one of {', '.join(LINEARIZE)}")
    if not tone_applied:
        x = inverse_tone(x, method)
    if method == "unprocess":
        if params is None:
            raise ValueError("unprocess needs UnprocessParams (see sample_unprocess_params)")
        return camera_colors(x, params)
    return x
