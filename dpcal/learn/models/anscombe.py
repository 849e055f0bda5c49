"""The Anscombe network (Dirty Pixels, Sec. 4, Algorithm 1): a variance-stabilised unrolled ISP.

Pipeline of :class:`AnscombeNet` on a normalised mosaic ``y`` with per-plane ``alpha, sigma``:

1. generalised Anscombe transform per pixel, with each pixel's own plane parameters
   (:func:`generalized_anscombe`), which turns Poisson-Gaussian noise into unit-variance
   Gaussian noise;
2. min-max normalisation per image (:class:`AnscombeTransform`): ``t = (f - lo) * s``,
   ``s = 1 / (hi - lo)``; the result is stored as a 3-channel mosaic with zeros at unsampled
   sites, and the noise level after normalisation, ``s``, becomes a constant extra channel;
3. unrolled proximal gradient from ``x0 = t``: a residual U-Net prior step
   ``z = x - UNet_k([x, s])`` (:class:`PriorUNet`) and a soft projection onto the data
   ``x = (lam M t + beta_k z) / (lam M + beta_k)`` (:class:`SoftProjection`);
4. de-normalisation ``D = x / s + lo`` and the inverse transform
   (:func:`inverse_anscombe_asymptotic` by default, or :func:`inverse_anscombe_closed_form`),
   clipped to [0, 1].

References
----------
Diamond et al., "Dirty Pixels: Towards End-to-end Image Processing and Perception", ACM TOG 40(3),
2021. Makitalo & Foi, "Optimal inversion of the generalized Anscombe transformation for
Poisson-Gaussian noise", IEEE TIP 22(1), 2013.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dpcal.cfa import PLANES, plane_offsets, validate_pattern
from dpcal.physics.cfa import cfa_mask, plane_values

__all__ = [
    "ALPHA_FLOOR",
    "generalized_anscombe",
    "inverse_anscombe_asymptotic",
    "inverse_anscombe_closed_form",
    "soft_projection",
    "SoftProjection",
    "AnscombeTransform",
    "channel_plane_values",
    "PriorUNet",
    "AnscombeNet",
]

#: Smallest Poisson scale used in the transforms. ``alpha -> 0`` (no shot noise) would divide by
#: zero; at 1e-6 the transform is already the Gaussian-only limit to within float32 precision
#: for normalised data, and nothing overflows.
ALPHA_FLOOR = 1e-6

_S32 = math.sqrt(1.5)


def generalized_anscombe(z: torch.Tensor, alpha, sigma) -> torch.Tensor:
    """Generalised Anscombe transform ``f(z) = 2 sqrt(max(z/alpha + 3/8 + (sigma/alpha)^2, 0))``.

    For ``z = alpha * Poisson(x / alpha) + N(0, sigma^2)`` the result has variance close to 1
    whatever ``x``.

    Parameters
    ----------
    z : Tensor
        Noisy values (normalised units).
    alpha, sigma : Tensor or float
        Poisson scale and Gaussian std, broadcastable to ``z``; ``alpha`` is floored at
        :data:`ALPHA_FLOOR`.

    Returns
    -------
    Tensor, the shape of ``z``.

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> x, a, s = 0.2, 0.01, 0.02
    >>> z = a * torch.poisson(torch.full((200000,), x / a), generator=g) + s * torch.randn(200000, generator=g)
    >>> round(generalized_anscombe(z, a, s).std().item(), 2)
    1.0
    """
    alpha = torch.as_tensor(alpha, dtype=z.dtype, device=z.device).clamp(min=ALPHA_FLOOR)
    sigma = torch.as_tensor(sigma, dtype=z.dtype, device=z.device)
    arg = z / alpha + 0.375 + (sigma / alpha) ** 2
    # The clamp keeps sqrt's gradient finite where the argument would reach zero.
    return 2.0 * torch.sqrt(arg.clamp(min=torch.finfo(z.dtype).tiny))


def inverse_anscombe_asymptotic(d: torch.Tensor, alpha, sigma) -> torch.Tensor:
    """Asymptotically unbiased inverse ``alpha (d^2/4 - 1/8 - (sigma/alpha)^2)``.

    The reference code's default. For large counts ``E[f(z)] ~ 2 sqrt(x/alpha + 1/8 +
    (sigma/alpha)^2)``, so this maps ``E[f(z)]`` back to ``x``; at low counts (a few photons)
    it is biased: upwards when read noise is small (towards ``+alpha/4`` as ``x -> 0``), downwards
    when ``sigma/alpha`` is a few counts. It is not the algebraic inverse of
    :func:`generalized_anscombe`: on a single transformed value it returns ``z + alpha/4``.

    Examples
    --------
    >>> z = torch.tensor([0.3], dtype=torch.float64)
    >>> round(inverse_anscombe_asymptotic(generalized_anscombe(z, 0.01, 0.02), 0.01, 0.02).item(), 6)
    0.3025
    """
    alpha = torch.as_tensor(alpha, dtype=d.dtype, device=d.device).clamp(min=ALPHA_FLOOR)
    sigma = torch.as_tensor(sigma, dtype=d.dtype, device=d.device)
    return alpha * (0.25 * d * d - 0.125 - (sigma / alpha) ** 2)


#: The closed form below is increasing for D >= 1 and is already <= 0 at D = 1 (so the max(0, .)
#: returns 0 there); clamping D at 1 removes its spurious branch that rises to +inf as D -> 0.
_CLOSED_FORM_D_MIN = 1.0


def inverse_anscombe_closed_form(d: torch.Tensor, alpha, sigma) -> torch.Tensor:
    """Makitalo-Foi closed-form approximation of the exact unbiased inverse.

    ``alpha * max(0, D^2/4 + (1/4) sqrt(3/2) / D - (11/8) / D^2 + (5/8) sqrt(3/2) / D^3 - 1/8
    - (sigma/alpha)^2)``, with ``D`` clamped to at least 1 (where the expression is already
    <= 0). Use it on *denoised* values, i.e. estimates of ``E[f(z)]``: it then returns ``x``
    with little bias even at a few photons (within 0.04 counts of ``x / alpha`` from 0.5 to 100
    counts and ``sigma/alpha`` up to 2, checked against the exact expectation in the tests).

    Examples
    --------
    >>> round(inverse_anscombe_closed_form(torch.tensor([20.0]), 1.0, 0.0).item(), 2)
    99.89
    """
    alpha = torch.as_tensor(alpha, dtype=d.dtype, device=d.device).clamp(min=ALPHA_FLOOR)
    sigma = torch.as_tensor(sigma, dtype=d.dtype, device=d.device)
    d = d.clamp(min=_CLOSED_FORM_D_MIN)
    inv = d.reciprocal()
    val = 0.25 * d * d + inv * (0.25 * _S32 + inv * (-1.375 + inv * (0.625 * _S32))) - 0.125 - (sigma / alpha) ** 2
    return alpha * val.clamp(min=0.0)


def soft_projection(z: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, lam, beta) -> torch.Tensor:
    """Data step ``(lam M y + beta z) / (lam M + beta)``, elementwise.

    The minimiser over ``x`` of ``lam/2 ||M (x - y)||^2 + beta/2 ||x - z||^2`` for a 0/1 mask
    ``M``: measured sites move from the prior's ``z`` towards the data ``y``; unmeasured sites
    keep ``z``.

    Examples
    --------
    >>> soft_projection(torch.tensor([0.0, 0.0]), torch.tensor([1.0, 1.0]), torch.tensor([1.0, 0.0]), 1.0, 1.0).tolist()
    [0.5, 0.0]
    """
    lm = lam * mask
    return (lm * y + beta * z) / (lm + beta)


class SoftProjection(nn.Module):
    """Learnable soft projection with its own step weight ``beta`` (one per unrolled iteration).

    The data weight ``lam`` is passed in, so several iterations can share one (as the
    reference network does: one ``lam``, one ``beta`` per iteration).

    Parameters
    ----------
    beta : float
        Initial ``beta`` (the reference uses ``2^(k+1)`` at iteration ``k``).

    Shapes
    ------
    ``z, y``: ``(B, 3, H, W)``; ``mask``: broadcastable, e.g. ``(3, H, W)``; output like ``z``.
    """

    def __init__(self, beta: float = 2.0) -> None:
        super().__init__()
        self.beta = nn.Parameter(torch.tensor(float(beta)))

    def forward(self, z: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, lam) -> torch.Tensor:
        return soft_projection(z, y, mask, lam, self.beta)


def channel_plane_values(values: torch.Tensor, pattern: str, height: int, width: int) -> torch.Tensor:
    """Per-plane values ``(B, 4)`` as a map ``(B, 3, H, W)`` for an RGB estimate at every pixel.

    Red reads the R plane and blue the B plane everywhere; green reads ``Gr`` on the rows that
    hold the red sites and ``Gb`` on the others. At each measured site this is the site's own
    plane. Used to invert the Anscombe transform of a demosaicked estimate.

    Examples
    --------
    >>> v = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    >>> channel_plane_values(v, "GBRG", 2, 2)[0, 1].tolist()   # Gb row on top in GBRG
    [[3.0, 3.0], [2.0, 2.0]]
    """
    offs = plane_offsets(validate_pattern(pattern))
    out = values.new_empty((values.shape[0], 3, height, width))
    out[:, 0] = values[:, PLANES.index("R"), None, None]
    out[:, 2] = values[:, PLANES.index("B"), None, None]
    for green in ("Gr", "Gb"):
        out[:, 1, offs[green][0] :: 2] = values[:, PLANES.index(green), None, None]
    return out


class AnscombeTransform(nn.Module):
    """Forward Anscombe layer with min-max normalisation, and its inverse.

    Parameters
    ----------
    pattern : str
        CFA pattern of the mosaics.
    inverse : {"asymptotic", "closed_form"}
        Inverse used by :meth:`inverse`.

    Notes
    -----
    ``lo`` and ``hi`` are the extremes over the transformed samples *and* the transform of a
    zero signal for each plane. With one ``alpha, sigma`` per image this is exactly the
    reference's min/max over the 3-channel mosaic (whose unsampled zeros transform to ``f(0)``);
    unsampled sites are then set to 0 after normalisation.
    """

    def __init__(self, pattern: str = "BGGR", inverse: str = "asymptotic") -> None:
        super().__init__()
        if inverse not in ("asymptotic", "closed_form"):
            raise ValueError(f"inverse must be 'asymptotic' or 'closed_form', got {inverse!r}")
        self.pattern = validate_pattern(pattern)
        self.inverse_kind = inverse

    def forward(self, mosaic: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor):
        """Transform and normalise.

        Parameters
        ----------
        mosaic : Tensor (B, 1, H, W)
        alpha, sigma : Tensor (B, 4)
            Per-plane noise parameters, ``R, Gr, Gb, B``.

        Returns
        -------
        t : Tensor (B, 3, H, W)
            Normalised transform as a 3-channel mosaic, in [0, 1], zeros at unsampled sites.
        scale : Tensor (B, 1, 1, 1)
            ``s = 1 / (hi - lo)``, the std of the (unit-variance) transformed noise after scaling.
        lo : Tensor (B, 1, 1, 1)
        """
        alpha, sigma = _raw_inputs(mosaic, alpha, sigma)
        h, w = mosaic.shape[-2:]
        f = generalized_anscombe(mosaic, plane_values(alpha, self.pattern, h, w), plane_values(sigma, self.pattern, h, w))
        f0 = generalized_anscombe(torch.zeros_like(alpha), alpha, sigma)
        lo = torch.minimum(f.amin(dim=(1, 2, 3)), f0.amin(dim=1)).view(-1, 1, 1, 1)
        hi = torch.maximum(f.amax(dim=(1, 2, 3)), f0.amax(dim=1)).view(-1, 1, 1, 1)
        scale = (hi - lo).clamp(min=torch.finfo(f.dtype).eps).reciprocal()
        t = (f - lo) * scale * cfa_mask(self.pattern, h, w, dtype=f.dtype, device=f.device)
        return t, scale, lo

    def inverse(self, x: torch.Tensor, scale: torch.Tensor, lo: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor):
        """De-normalise an RGB estimate ``(B, 3, H, W)`` and invert the transform (not clipped)."""
        h, w = x.shape[-2:]
        d = x / scale + lo
        a = channel_plane_values(alpha, self.pattern, h, w)
        s = channel_plane_values(sigma, self.pattern, h, w)
        if self.inverse_kind == "closed_form":
            return inverse_anscombe_closed_form(d, a, s)
        return inverse_anscombe_asymptotic(d, a, s)


def _raw_inputs(mosaic: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor):
    """Validate a RAW input; return ``alpha, sigma`` in the mosaic's dtype and device.

    (The simulator reports noise parameters in float64; the network may run in float32.)
    """
    if not isinstance(mosaic, torch.Tensor) or mosaic.ndim != 4 or mosaic.shape[1] != 1:
        raise ValueError(f"mosaic must be a (B, 1, H, W) tensor, got {tuple(getattr(mosaic, 'shape', ()))}")
    out = []
    for name, v in (("alpha", alpha), ("sigma", sigma)):
        if not isinstance(v, torch.Tensor) or v.shape != (mosaic.shape[0], 4):
            raise ValueError(
                f"{name} must be a (B, 4) tensor of per-plane values (R, Gr, Gb, B) with B = {mosaic.shape[0]}, "
                f"got {tuple(getattr(v, 'shape', ()))}"
            )
        out.append(v.to(mosaic))
    return out


class _CenteredBN(nn.Module):
    """Batch norm without scale: normalise, then add a learned bias (TF ``center=True, scale=False``).

    The only parameter is ``bias``; ``F.batch_norm`` takes a bias without a weight, so this is
    one fused operation. (Not an ``nn.BatchNorm2d`` subclass: ``convert_sync_batchnorm`` would
    drop the bias of a non-affine batch norm.)
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        # eps and momentum as the reference (TF decay 0.95 = torch momentum 0.05).
        self.eps, self.momentum = 1e-4, 0.05
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, None, self.bias, self.training, self.momentum, self.eps)


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), _CenteredBN(cout), nn.ReLU(inplace=True))


class _Level(nn.Module):
    """One U-Net level: two convs, the coarser levels on the average-pooled features, two convs."""

    def __init__(self, cin: int, width: int, depth: int, levels: int, out_channels: int) -> None:
        super().__init__()
        if depth == 0:
            # The top level's first conv: dilation 2, bias, ReLU, no BN.
            self.conv_in = nn.Sequential(nn.Conv2d(cin, width, 3, padding=2, dilation=2), nn.ReLU(inplace=True))
        else:
            self.conv_in = _conv_bn_relu(cin, width)
        self.conv_1 = _conv_bn_relu(width, width)
        # The coarser level returns width channels (its transposed conv halves its 2*width).
        self.lower = _Level(width, 2 * width, depth + 1, levels, out_channels) if depth < levels - 1 else None
        self.conv_2 = _conv_bn_relu(2 * width if self.lower is not None else width, width)
        if depth == 0:
            self.out = nn.Conv2d(width, out_channels, 3, padding=1)
        else:
            self.out = nn.Sequential(_conv_bn_relu(width, width), nn.ConvTranspose2d(width, width // 2, 2, stride=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_1(self.conv_in(x))
        if self.lower is not None:
            x = torch.cat([x, self.lower(F.avg_pool2d(x, 2))], dim=1)
        return self.out(self.conv_2(x))


class PriorUNet(nn.Module):
    """The residual U-Net prior of one unrolled iteration.

    Parameters
    ----------
    in_channels : int
        Iterate channels plus the noise channel (4).
    out_channels : int
        3 (the RGB iterate).
    width : int, optional
        Channels at the top level, doubled at each coarser level. Default ``max(2 in_channels, 8)``
        (the reference rule), i.e. 8/16/32 for 4 input channels and 3 levels.
    levels : int
        Resolution levels (3: full, 1/2, 1/4).

    Shapes
    ------
    ``(B, in_channels, H, W) -> (B, out_channels, H, W)``. Any ``H, W``: inputs are padded
    (replicate) to a multiple of ``2^(levels-1)`` and the output cropped back.
    """

    def __init__(self, in_channels: int = 4, out_channels: int = 3, width: int | None = None, levels: int = 3) -> None:
        super().__init__()
        if levels < 1:
            raise ValueError(f"levels must be >= 1, got {levels}")
        width = max(2 * in_channels, 8) if width is None else int(width)
        if width < 2 or width % 2:
            raise ValueError(f"width must be an even number >= 2, got {width}")
        self.multiple = 2 ** (levels - 1)
        self.top = _Level(in_channels, width, 0, levels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.multiple, (-w) % self.multiple
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        return self.top(x)[..., :h, :w]


class AnscombeNet(nn.Module):
    """Anscombe network: RAW mosaic + per-plane noise -> RGB in [0, 1].

    Parameters
    ----------
    pattern : str
        CFA pattern of the input mosaics.
    iterations : int
        Unrolled proximal-gradient iterations (the reference's released models use 1).
    width : int, optional
        Top-level U-Net width, default ``max(2 * 4, 8) = 8`` (widths 8/16/32).
    levels : int
        U-Net levels (3).
    inverse : {"asymptotic", "closed_form"}
        Inverse transform; the reference uses the asymptotic one.

    Shapes
    ------
    ``forward(mosaic (B, 1, H, W), alpha (B, 4), sigma (B, 4)) -> (B, 3, H, W)``.

    Notes
    -----
    At the defaults the network has 47,661 parameters, the reference's count: 47,659 in the U-Net
    (the transposed convs and the last conv carry biases, BN layers only a bias), one ``lam``
    shared by all iterations, one ``beta`` per iteration.

    Examples
    --------
    >>> net = AnscombeNet("RGGB")
    >>> sum(p.numel() for p in net.parameters())
    47661
    >>> out = net(torch.rand(2, 1, 16, 16), torch.full((2, 4), 0.01), torch.full((2, 4), 0.02))
    >>> tuple(out.shape), bool(out.min() >= 0), bool(out.max() <= 1)
    ((2, 3, 16, 16), True, True)
    """

    input_kind = "raw"

    def __init__(self, pattern: str = "BGGR", iterations: int = 1, width: int | None = None, levels: int = 3,
                 inverse: str = "asymptotic") -> None:
        super().__init__()
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        self.transform = AnscombeTransform(pattern, inverse)
        self.pattern = self.transform.pattern
        self.priors = nn.ModuleList(PriorUNet(4, 3, width, levels) for _ in range(iterations))
        self.lam = nn.Parameter(torch.tensor(1.0))
        self.projections = nn.ModuleList(SoftProjection(2.0 ** (k + 1)) for k in range(iterations))

    def forward(self, mosaic: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor, clip: bool = True) -> torch.Tensor:
        """Reconstruct RGB; ``clip=False`` returns the inverse transform before clipping (for an L1 loss)."""
        alpha, sigma = _raw_inputs(mosaic, alpha, sigma)
        alpha = alpha.clamp(min=ALPHA_FLOOR)
        y, scale, lo = self.transform(mosaic, alpha, sigma)
        mask = cfa_mask(self.pattern, y.shape[-2], y.shape[-1], dtype=y.dtype, device=y.device)
        noise = scale.expand(-1, 1, y.shape[-2], y.shape[-1])
        x = y
        for prior, proj in zip(self.priors, self.projections):
            z = x - prior(torch.cat([x, noise], dim=1))
            x = proj(z, y, mask, self.lam)
        out = self.transform.inverse(x, scale, lo, alpha, sigma)
        return out.clamp(0.0, 1.0) if clip else out
