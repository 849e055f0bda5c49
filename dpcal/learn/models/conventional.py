"""A fixed, parameter-free ISP tuned for human viewing (the paper's Darktable-style baseline).

Stages, each a function usable on its own:

1. **denoise** in the variance-stabilised domain: the four CFA planes are packed at half
   resolution, transformed with the generalised Anscombe transform using the known per-plane
   noise (:func:`~dpcal.learn.models.anscombe.generalized_anscombe`), where the noise std is 1
   at every brightness, filtered with fixed settings (:func:`nonlocal_means` or
   :func:`bilateral`; patch distances pool all four planes), and inverted with the Makitalo-Foi
   closed form, which is the right inverse for a denoised (mean) estimate;
2. **demosaic** with Malvar-He-Cutler (:func:`demosaic_mhc`);
3. **white balance** (:func:`gray_world`), optional;
4. **tone**: the sRGB transfer function, optional.

Why Malvar-He-Cutler and not kornia's ``raw_to_rgb``: kornia's demosaic is bilinear (zipper
and colour fringes at edges, which a viewer-tuned ISP avoids), and its CFA names are shifted
against dpcal's; MHC's gradient-corrected 5x5 filters are as cheap (one 4-output convolution)
and are built here from :mod:`dpcal.cfa` directly, so no name mapping is involved.

References
----------
Malvar, He & Cutler, "High-quality linear interpolation for demosaicing of Bayer-patterned color
images", ICASSP 2004. Buades, Coll & Morel, "A non-local algorithm for image denoising", CVPR 2005.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dpcal.cfa import validate_pattern
from dpcal.learn.models.anscombe import ALPHA_FLOOR, _raw_inputs, generalized_anscombe, inverse_anscombe_closed_form
from dpcal.physics.cfa import pack, unpack

__all__ = ["ConventionalISP", "demosaic_mhc", "nonlocal_means", "bilateral", "gray_world", "DENOISERS"]

DENOISERS = ("nlm", "bilateral", "none")

# Malvar-He-Cutler filters (x 1/8): G at R/B sites; a colour at a green site whose row holds
# that colour ("row") or whose column does ("col"); R at B sites and B at R sites ("diag").
_MHC = torch.tensor([
    [[0, 0, -1, 0, 0], [0, 0, 2, 0, 0], [-1, 2, 4, 2, -1], [0, 0, 2, 0, 0], [0, 0, -1, 0, 0]],
    [[0, 0, 0.5, 0, 0], [0, -1, 0, -1, 0], [-1, 4, 5, 4, -1], [0, -1, 0, -1, 0], [0, 0, 0.5, 0, 0]],
    [[0, 0, -1, 0, 0], [0, -1, 4, -1, 0], [0.5, 0, 5, 0, 0.5], [0, -1, 4, -1, 0], [0, 0, -1, 0, 0]],
    [[0, 0, -1.5, 0, 0], [0, 2, 0, 2, 0], [-1.5, 0, 6, 0, -1.5], [0, 2, 0, 2, 0], [0, 0, -1.5, 0, 0]],
]) / 8.0
_RAW, _G_AT_RB, _ROW, _COL, _DIAG = range(5)


def _mhc_select_tile(pattern: str) -> torch.Tensor:
    """``(3, 2, 2)`` index into ``[raw, G@RB, row, col, diag]`` for each output channel and site."""
    p = validate_pattern(pattern)
    tile = torch.empty(3, 2, 2, dtype=torch.long)
    for dy in (0, 1):
        row = p[2 * dy : 2 * dy + 2]
        for dx in (0, 1):
            site = p[2 * dy + dx]
            for c, colour in enumerate("RGB"):
                if colour == site:
                    tile[c, dy, dx] = _RAW
                elif colour == "G":
                    tile[c, dy, dx] = _G_AT_RB
                elif site == "G":
                    tile[c, dy, dx] = _ROW if colour in row else _COL
                else:
                    tile[c, dy, dx] = _DIAG
    return tile


def demosaic_mhc(mosaic: torch.Tensor, pattern: str) -> torch.Tensor:
    """Malvar-He-Cutler demosaic of ``(B, 1, H, W)`` to ``(B, 3, H, W)`` (not clipped).

    Borders use reflect padding, which keeps the CFA phase. Exact on images that are linear
    in the pixel coordinates (away from the border).

    Examples
    --------
    >>> yy, xx = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    >>> rgb = torch.stack([0.1 + 0.01 * xx, 0.2 + 0.02 * yy, 0.5 - 0.01 * (xx + yy)])[None]
    >>> from dpcal.physics.cfa import mosaic
    >>> out = demosaic_mhc(mosaic(rgb, "GRBG"), "GRBG")
    >>> bool((out - rgb)[..., 2:-2, 2:-2].abs().max() < 1e-6)
    True
    """
    return _demosaic(mosaic, _MHC.to(mosaic), _mhc_select_tile(pattern).to(mosaic.device))


def _demosaic(mosaic: torch.Tensor, filters: torch.Tensor, select_tile: torch.Tensor) -> torch.Tensor:
    b, _, h, w = mosaic.shape
    est = F.conv2d(F.pad(mosaic, (2, 2, 2, 2), mode="reflect"), filters[:, None])
    stack = torch.cat([mosaic, est], dim=1)
    idx = select_tile.repeat(1, (h + 1) // 2, (w + 1) // 2)[:, :h, :w]
    return torch.gather(stack, 1, idx.expand(b, 3, h, w))


def _box_mean(x: torch.Tensor, size: int) -> torch.Tensor:
    """Mean over a ``size x size`` window (reflect padding), as two 1-D sums of shifted slices.

    Several times faster on CPU than ``avg_pool2d`` with stride 1 on one-channel images.
    """
    r = size // 2
    p = F.pad(x, (r, r, r, r), mode="reflect")
    h, w = x.shape[-2:]
    rows = sum(p[..., :, i : i + w] for i in range(size))
    return sum(rows[..., i : i + h, :] for i in range(size)) / (size * size)


def _offset_filter(f: torch.Tensor, radius: int, patch: int, h2: float, spatial_sigma: float | None) -> torch.Tensor:
    """Weighted average over a ``(2 radius + 1)^2`` window with weights from patch distances.

    ``f`` has unit-variance noise; the distance is the mean squared difference over the patch
    and all channels, minus its expectation for identical patches (2), as in Buades et al.
    """
    pad = radius
    fp = F.pad(f, (pad, pad, pad, pad), mode="reflect")
    h, w = f.shape[-2:]
    acc = torch.zeros_like(f)
    wsum = torch.zeros_like(f[:, :1])
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            g = fp[..., pad + dy : pad + dy + h, pad + dx : pad + dx + w]
            d = (f - g).square_().mean(dim=1, keepdim=True)
            if patch > 1:
                d = _box_mean(d, patch)
            # exp(-80) is still a normal float32: far smaller weights would be denormals, which
            # are many times slower to multiply and add on CPUs.
            wt = d.sub_(2.0).clamp_(min=0.0).mul_(-1.0 / h2).clamp_(min=-80.0).exp_()
            if spatial_sigma is not None:
                wt.mul_(math.exp(-(dy * dy + dx * dx) / (2.0 * spatial_sigma**2)))
            acc.addcmul_(wt, g)
            wsum += wt
    return acc / wsum


def nonlocal_means(f: torch.Tensor, radius: int = 2, patch: int = 3, h: float = 0.7) -> torch.Tensor:
    """Non-local means for unit-variance Gaussian noise, ``(B, C, H, W) -> (B, C, H, W)``.

    Parameters
    ----------
    f : Tensor
        Image with noise std 1 in every channel (e.g. after the Anscombe transform).
    radius : int
        Search window ``(2 radius + 1)^2``.
    patch : int
        Patch size (odd).
    h : float
        Filtering parameter in noise stds; weights ``exp(-max(d - 2, 0) / h^2)``.

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> clean = torch.full((1, 4, 32, 32), 10.0)
    >>> noisy = clean + torch.randn(clean.shape, generator=g)
    >>> bool((nonlocal_means(noisy) - clean).std() < 0.4)
    True
    """
    return _offset_filter(f, radius, patch, h * h, None)


def bilateral(f: torch.Tensor, radius: int = 2, h: float = 1.5, spatial_sigma: float = 1.0) -> torch.Tensor:
    """Bilateral filter for unit-variance Gaussian noise (range weights pooled over channels).

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> clean = torch.full((1, 4, 32, 32), 10.0)
    >>> noisy = clean + torch.randn(clean.shape, generator=g)
    >>> bool((bilateral(noisy) - clean).std() < 0.6)
    True
    """
    return _offset_filter(f, radius, 1, h * h, spatial_sigma)


def gray_world(rgb: torch.Tensor, max_gain: float = 4.0) -> torch.Tensor:
    """Scale red and blue so that their image means equal the green mean (gains capped).

    Examples
    --------
    >>> x = torch.tensor([0.2, 0.4, 0.8]).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    >>> gray_world(x)[0, :, 0, 0].tolist()
    [0.4000000059604645, 0.4000000059604645, 0.4000000059604645]
    """
    means = rgb.mean(dim=(2, 3), keepdim=True).clamp(min=1e-6)
    gains = (means[:, 1:2] / means).clamp(1.0 / max_gain, max_gain)
    return rgb * gains


class ConventionalISP(nn.Module):
    """Fixed ISP stage: denoise (Anscombe domain), demosaic, white balance, tone.

    Parameters
    ----------
    pattern : str
        CFA pattern of the input mosaics.
    denoise : {"nlm", "bilateral", "none"}
        Denoiser in the variance-stabilised domain, strength set by the known noise level.
    tone : {"none", "srgb"}
        ``srgb`` applies the sRGB transfer function (for linear inputs, dpcal's ``realistic``
        simulation). Use ``none`` for the ``reference`` simulation mode, whose latent images are
        the sRGB values themselves.
    white_balance : {"none", "gray_world"}
        ``none`` for the ``reference`` mode (no camera colours to undo).

    Shapes
    ------
    ``forward(mosaic (B, 1, H, W), alpha (B, 4), sigma (B, 4)) -> (B, 3, H, W)`` in [0, 1];
    ``H, W`` even. Runs without autograd (the stage has no parameters to train).

    Examples
    --------
    >>> isp = ConventionalISP("RGGB", tone="none", white_balance="none")
    >>> isp(torch.full((1, 1, 8, 8), 0.25), torch.full((1, 4), 0.01), torch.full((1, 4), 0.02)).shape
    torch.Size([1, 3, 8, 8])
    """

    input_kind = "raw"

    def __init__(self, pattern: str = "BGGR", denoise: str = "nlm", tone: str = "srgb", white_balance: str = "gray_world") -> None:
        super().__init__()
        self.pattern = validate_pattern(pattern)
        for name, value, options in (("denoise", denoise, DENOISERS), ("tone", tone, ("none", "srgb")),
                                     ("white_balance", white_balance, ("none", "gray_world"))):
            if value not in options:
                raise ValueError(f"{name} must be one of {', '.join(options)}, got {value!r}")
        self.denoise, self.tone, self.white_balance = denoise, tone, white_balance
        self.register_buffer("mhc", _MHC.clone(), persistent=False)
        self.register_buffer("select_tile", _mhc_select_tile(self.pattern), persistent=False)

    @torch.no_grad()
    def forward(self, mosaic: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor, clip: bool = True) -> torch.Tensor:
        alpha, sigma = _raw_inputs(mosaic, alpha, sigma)
        m = mosaic
        if self.denoise != "none":
            planes = pack(mosaic, self.pattern)
            a = alpha.clamp(min=ALPHA_FLOOR)[:, :, None, None]
            s = sigma[:, :, None, None]
            f = generalized_anscombe(planes, a, s)
            f = nonlocal_means(f) if self.denoise == "nlm" else bilateral(f)
            m = unpack(inverse_anscombe_closed_form(f, a, s), self.pattern)
        rgb = _demosaic(m, self.mhc.to(m.dtype), self.select_tile)
        if self.white_balance == "gray_world":
            rgb = gray_world(rgb)
        if self.tone == "srgb":
            from dpcal.physics.tone import linear_to_srgb

            rgb = linear_to_srgb(rgb.clamp(0.0, 1.0))
        return rgb.clamp(0.0, 1.0) if clip else rgb

    def extra_repr(self) -> str:
        return f"pattern={self.pattern!r}, denoise={self.denoise!r}, tone={self.tone!r}, white_balance={self.white_balance!r}"
