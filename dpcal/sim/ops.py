"""Differentiable image-formation operators on ``(B, C, H, W)`` tensors.

CFA sub-sampling (:func:`mosaic`, its adjoint :func:`mosaic3`), Poisson-Gaussian noise drawn only
at the CFA sites (:func:`poisson_gaussian`) and quantisation (:func:`quantize`), all in PyTorch so
the same code runs on CPU or GPU, in a dataset writer or on the fly in training.

Randomness is always explicit: each sampling function takes ``generator``, either one
:class:`torch.Generator` for the whole batch (fast; training) or a sequence of one generator per
sample (each sample's draws then depend only on its own generator, so results do not depend on
how samples are grouped into batches; dataset writing).
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch

from dpcal.cfa import PLANES, channel_map, plane_map, validate_pattern

Generators = Union[None, torch.Generator, Sequence[torch.Generator]]

__all__ = [
    "cfa_mask",
    "plane_index",
    "mosaic",
    "mosaic3",
    "plane_values",
    "poisson_gaussian",
    "quantize",
    "make_generators",
    "draw",
]


def _check_bchw(x: torch.Tensor, name: str, channels: tuple[int, ...] | None = None) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
        raise ValueError(f"{name} must be a (B, C, H, W) tensor, got {shape}")
    if channels is not None and x.shape[1] not in channels:
        raise ValueError(f"{name} must have {' or '.join(map(str, channels))} channels, got shape {tuple(x.shape)}")


def plane_index(pattern: str, height: int, width: int, device=None) -> torch.Tensor:
    """``(H, W)`` long tensor: index (in ``R, Gr, Gb, B`` order) of each pixel's CFA plane.

    Examples
    --------
    >>> plane_index("BGGR", 2, 2).tolist()
    [[3, 2], [1, 0]]
    """
    return torch.as_tensor(plane_map(pattern, height, width), device=device)


def _channel_index(pattern: str, height: int, width: int, device=None) -> torch.Tensor:
    cm = channel_map(pattern)
    idx = np.tile(cm, ((height + 1) // 2, (width + 1) // 2))[:height, :width]
    return torch.as_tensor(idx, device=device)


def cfa_mask(pattern: str, height: int, width: int, *, dtype=torch.float32, device=None) -> torch.Tensor:
    """``(3, H, W)`` mask: 1 where the sensor samples that RGB channel, else 0.

    Examples
    --------
    >>> cfa_mask("BGGR", 2, 2)[2].tolist()   # blue sits top-left in BGGR
    [[1.0, 0.0], [0.0, 0.0]]
    """
    idx = _channel_index(validate_pattern(pattern), height, width, device)
    return torch.stack([(idx == c) for c in range(3)]).to(dtype)


def mosaic(image: torch.Tensor, pattern: str) -> torch.Tensor:
    """CFA sub-sampling: keep, at each pixel, the value its colour filter passes.

    Parameters
    ----------
    image : Tensor (B, 3, H, W) or (B, 4, H, W)
        RGB, or four per-plane images in ``R, Gr, Gb, B`` order (e.g. after a PSF blur that
        gives Gr and Gb their own kernels).
    pattern : str
        CFA pattern (``RGGB``, ``BGGR``, ``GRBG``, ``GBRG``).

    Returns
    -------
    Tensor (B, 1, H, W)
        The single-channel mosaic. Linear in ``image`` and differentiable (a gather); its
        adjoint is :func:`mosaic3` for RGB input.

    Examples
    --------
    >>> x = torch.tensor([0.1, 0.5, 0.9]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    >>> mosaic(x, "RGGB")[0, 0].tolist()
    [[0.10000000149011612, 0.5], [0.5, 0.8999999761581421]]
    """
    _check_bchw(image, "image", (3, 4))
    b, c, h, w = image.shape
    pattern = validate_pattern(pattern)
    idx = _channel_index(pattern, h, w, image.device) if c == 3 else plane_index(pattern, h, w, image.device)
    return torch.gather(image, 1, idx.expand(b, 1, h, w))


def mosaic3(m: torch.Tensor, pattern: str) -> torch.Tensor:
    """A single-channel mosaic as three channels with zeros at unsampled sites.

    This is the reference code's representation of RAW data (``noisy * bayer_mask``) and the
    adjoint of :func:`mosaic` on RGB images.

    Parameters
    ----------
    m : Tensor (B, 1, H, W)
    pattern : str

    Returns
    -------
    Tensor (B, 3, H, W)
    """
    _check_bchw(m, "mosaic", (1,))
    mask = cfa_mask(pattern, m.shape[-2], m.shape[-1], dtype=m.dtype, device=m.device)
    return m * mask[None]


def plane_values(values: torch.Tensor, pattern: str, height: int, width: int) -> torch.Tensor:
    """Expand per-sample, per-plane values ``(B, 4)`` to a mosaic map ``(B, 1, H, W)``.

    Examples
    --------
    >>> plane_values(torch.tensor([[1.0, 2.0, 3.0, 4.0]]), "RGGB", 2, 4)[0, 0].tolist()
    [[1.0, 2.0, 1.0, 2.0], [3.0, 4.0, 3.0, 4.0]]
    """
    if values.ndim != 2 or values.shape[1] != 4:
        raise ValueError(f"per-plane values must have shape (B, 4) in {', '.join(PLANES)} order, got {tuple(values.shape)}")
    tile_idx = plane_index(pattern, 2, 2, values.device).reshape(-1)
    tile = values[:, tile_idx].reshape(-1, 1, 2, 2)
    return tile.repeat(1, 1, (height + 1) // 2, (width + 1) // 2)[..., :height, :width]


def _as_map(v, like: torch.Tensor, pattern: str | None, name: str) -> torch.Tensor:
    """alpha/sigma given as a number, (B,), (B, 4) per plane, or a broadcastable map."""
    t = torch.as_tensor(v, dtype=like.dtype, device=like.device)
    b, _, h, w = like.shape
    if t.ndim == 0:
        return t.expand(b, 1, 1, 1)
    if t.ndim == 1:
        if t.shape[0] != b:
            raise ValueError(f"{name} has {t.shape[0]} values for a batch of {b}")
        return t.view(b, 1, 1, 1)
    if t.ndim == 2:
        if pattern is None:
            raise ValueError(f"per-plane {name} (B, 4) needs the CFA pattern")
        return plane_values(t, pattern, h, w)
    return t


def make_generators(seeds: Sequence[int], device=None) -> list[torch.Generator]:
    """One seeded :class:`torch.Generator` per sample.

    Examples
    --------
    >>> g = make_generators([1, 2])
    >>> len(g), g[0].initial_seed()
    (2, 1)
    """
    dev = torch.device(device) if device is not None else torch.device("cpu")
    return [torch.Generator(device=dev).manual_seed(int(s)) for s in seeds]


def draw(fn, batch: int, shape: tuple[int, ...], generator: Generators, **kw) -> torch.Tensor:
    """``fn(size, generator=...)`` (e.g. ``torch.rand``) for a batch, per-sample when given a list."""
    if generator is None or isinstance(generator, torch.Generator):
        return fn((batch, *shape), generator=generator, **kw)
    gens = list(generator)
    if len(gens) != batch:
        raise ValueError(f"{len(gens)} generators for a batch of {batch}")
    return torch.stack([fn(shape, generator=g, **kw) for g in gens])


def _poisson(lam: torch.Tensor, generator: Generators) -> torch.Tensor:
    if generator is None or isinstance(generator, torch.Generator):
        return torch.poisson(lam, generator=generator)
    gens = list(generator)
    if len(gens) != lam.shape[0]:
        raise ValueError(f"{len(gens)} generators for a batch of {lam.shape[0]}")
    return torch.stack([torch.poisson(lam[i], generator=g) for i, g in enumerate(gens)])


def poisson_gaussian(
    x: torch.Tensor,
    alpha,
    sigma,
    *,
    pattern: str | None = None,
    generator: Generators = None,
    clip: bool = True,
) -> torch.Tensor:
    """Paper eq. 1 on a mosaic: ``y = clip(alpha * Poisson(x / alpha) + N(0, sigma^2), 0, 1)``.

    One Poisson and one Gaussian draw per pixel of the single-channel mosaic, i.e. only at the
    CFA sites (the reference code draws all three channels and masks two thirds away; the
    distribution of the kept values is the same).

    Parameters
    ----------
    x : Tensor (B, 1, H, W)
        Clean mosaic in normalised units; negative values count as 0 for the shot noise.
    alpha, sigma : float, Tensor (B,), Tensor (B, 4) or map broadcastable to ``x``
        Poisson scale and Gaussian std; ``(B, 4)`` is per CFA plane (``R, Gr, Gb, B``) and needs
        ``pattern``. ``alpha == 0`` means no shot noise.
    pattern : str, optional
    generator : torch.Generator or sequence of them, optional
        One for the batch, or one per sample (then each sample's noise depends only on its
        own generator). Draw order: all Poisson, then all Gaussian.
    clip : bool
        Clip to [0, 1] (the sensor's range).

    Returns
    -------
    Tensor (B, 1, H, W), same dtype as ``x``.

    Notes
    -----
    Gradients: the shot-noise residual ``alpha * Poisson(x / alpha) - x`` is treated as a
    constant (straight-through, the pathwise derivative of its mean ``x``), the Gaussian term is
    reparameterised (``sigma * eps``), and the clip passes gradients inside [0, 1].

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> y = poisson_gaussian(torch.full((1, 1, 256, 256), 0.5), 0.01, 0.02, generator=g, clip=False)
    >>> bool(abs(y.var().item() - (0.01 * 0.5 + 0.02 ** 2)) < 3e-4)
    True
    """
    _check_bchw(x, "mosaic", (1,))
    a = _as_map(alpha, x, pattern, "alpha")
    s = _as_map(sigma, x, pattern, "sigma")
    with torch.no_grad():
        xc = x.detach().clamp(min=0)
        if bool((a > 0).all()):
            shot = _poisson(xc / a, generator).mul_(a)
        else:
            has_shot = a > 0
            safe_a = torch.where(has_shot, a, torch.ones_like(a))
            counts = _poisson((xc / safe_a).expand_as(x).contiguous(), generator)
            shot = torch.where(has_shot, counts * safe_a, xc)
    eps = draw(torch.randn, x.shape[0], tuple(x.shape[1:]), generator, dtype=x.dtype, device=x.device)
    if x.requires_grad:
        y = x + (shot - x).detach() + s * eps
    else:
        y = shot.add_(eps.mul_(s) if not s.requires_grad else eps * s)
    return y.clamp(0.0, 1.0) if clip else y


def quantize(y: torch.Tensor, levels, *, pattern: str | None = None, straight_through: bool = True) -> torch.Tensor:
    """Round ``y`` to the sensor's digital numbers: ``round(y * levels) / levels``.

    Parameters
    ----------
    y : Tensor (B, 1, H, W)
        Normalised mosaic.
    levels : float, Tensor (B,) or (B, 4)
        DN steps between black and white (``white - black``), per sample or per plane.
    straight_through : bool
        Pass gradients through the rounding unchanged (else they are zero almost everywhere).

    Examples
    --------
    >>> quantize(torch.tensor([[[[0.26]]]]), 4.0).item()
    0.25
    """
    _check_bchw(y, "mosaic", (1,))
    lv = _as_map(levels, y, pattern, "levels")
    q = torch.round(y * lv).div_(lv)
    return y + (q - y).detach() if straight_through and y.requires_grad else q
