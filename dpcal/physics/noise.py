"""Poisson-Gaussian sensor noise (paper eq. 1), sampled in PyTorch or NumPy.

``y = clip(alpha * Poisson(x / alpha) + N(0, sigma^2), 0, 1)`` in normalised units, with one
draw per pixel of the single-channel mosaic (only at the CFA sites).

Randomness is always explicit: each sampling function takes ``generator``, either one
:class:`torch.Generator` for the whole batch (fast; training) or a sequence of one generator per
sample (each sample's draws then depend only on its own generator, so results do not depend on
how samples are grouped into batches; dataset writing and evaluation). :func:`quantize` rounds to
the sensor's digital numbers. The NumPy sampler is :func:`dpcal.physics.sensor.sample_poisson_gaussian`.
"""

from __future__ import annotations

from typing import Sequence, Union

import torch

from dpcal.physics.cfa import check_bchw, plane_values

Generators = Union[None, torch.Generator, Sequence[torch.Generator]]

__all__ = ["Generators", "as_map", "draw", "make_generators", "poisson_gaussian", "quantize"]


def as_map(v, like: torch.Tensor, pattern: str | None, name: str) -> torch.Tensor:
    """``v`` given as a number, ``(B,)``, ``(B, 4)`` per plane, or a map broadcastable to ``like``."""
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
    reparameterised (``sigma * eps``), and the clip passes gradients inside [0, 1]. No branch
    depends on the values, so the function traces into one graph.

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> y = poisson_gaussian(torch.full((1, 1, 256, 256), 0.5), 0.01, 0.02, generator=g, clip=False)
    >>> bool(abs(y.var().item() - (0.01 * 0.5 + 0.02 ** 2)) < 3e-4)
    True
    """
    check_bchw(x, "mosaic", (1,))
    a = as_map(alpha, x, pattern, "alpha")
    s = as_map(sigma, x, pattern, "sigma")
    with torch.no_grad():
        xc = x.detach().clamp(min=0)
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
    check_bchw(y, "mosaic", (1,))
    lv = as_map(levels, y, pattern, "levels")
    q = torch.round(y * lv).div_(lv)
    return y + (q - y).detach() if straight_through and y.requires_grad else q
