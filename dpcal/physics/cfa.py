"""Colour filter array operators on ``(B, C, H, W)`` tensors, differentiable, in PyTorch.

CFA sub-sampling (:func:`mosaic`), its adjoint on RGB (:func:`mosaic3`), the sampling mask
(:func:`cfa_mask`), per-plane values as a mosaic map (:func:`plane_values`) and the packing of a
mosaic into its four half-resolution planes (:func:`pack`, :func:`unpack`).

Every operator works by strided slicing of the 2x2 tile (the offsets come from the single CFA
table, :func:`dpcal.cfa.plane_offsets`), so nothing is computed on the host per call, nothing
is uploaded, and ``torch.compile`` traces them without graph breaks.
"""

from __future__ import annotations

import torch

from dpcal.cfa import PATTERNS, PLANE_CHANNEL, PLANES, plane_offsets, validate_pattern

__all__ = ["cfa_mask", "mosaic", "mosaic3", "pack", "plane_values", "unpack", "check_bchw"]


def check_bchw(x: torch.Tensor, name: str, channels: tuple[int, ...] | None = None) -> None:
    """Raise ``ValueError`` unless ``x`` is a ``(B, C, H, W)`` tensor with ``C`` in ``channels``."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
        raise ValueError(f"{name} must be a (B, C, H, W) tensor, got {shape}")
    if channels is not None and x.shape[1] not in channels:
        raise ValueError(f"{name} must have {' or '.join(map(str, channels))} channels, got shape {tuple(x.shape)}")


#: Per pattern, per plane (in ``PLANES`` order): ``(plane, rgb channel, dy, dx)``.
_SITES = {pat: tuple((i, PLANE_CHANNEL[p], *plane_offsets(pat)[p]) for i, p in enumerate(PLANES)) for pat in PATTERNS}


def _sites(pattern: str) -> tuple[tuple[int, int, int, int], ...]:
    return _SITES[pattern] if pattern in _SITES else _SITES[validate_pattern(pattern)]


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
        The single-channel mosaic. Linear in ``image`` and differentiable; its adjoint is
        :func:`mosaic3` for RGB input.

    Examples
    --------
    >>> x = torch.tensor([0.1, 0.5, 0.9]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    >>> mosaic(x, "RGGB")[0, 0].tolist()
    [[0.10000000149011612, 0.5], [0.5, 0.8999999761581421]]
    """
    check_bchw(image, "image", (3, 4))
    b, c, h, w = image.shape
    out = image.new_empty((b, 1, h, w))
    for plane, ch, dy, dx in _sites(pattern):
        src = ch if c == 3 else plane
        out[:, 0, dy::2, dx::2] = image[:, src, dy::2, dx::2]
    return out


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

    Examples
    --------
    >>> mosaic3(torch.ones(1, 1, 2, 2), "BGGR")[0, 2].tolist()   # blue sits top-left in BGGR
    [[1.0, 0.0], [0.0, 0.0]]
    """
    check_bchw(m, "mosaic", (1,))
    b, _, h, w = m.shape
    out = m.new_zeros((b, 3, h, w))
    for _, ch, dy, dx in _sites(pattern):
        out[:, ch, dy::2, dx::2] = m[:, 0, dy::2, dx::2]
    return out


def cfa_mask(pattern: str, height: int, width: int, *, dtype=torch.float32, device=None) -> torch.Tensor:
    """``(3, H, W)`` mask: 1 where the sensor samples that RGB channel, else 0.

    Examples
    --------
    >>> cfa_mask("BGGR", 2, 2)[2].tolist()   # blue sits top-left in BGGR
    [[1.0, 0.0], [0.0, 0.0]]
    """
    out = torch.zeros((3, height, width), dtype=dtype, device=device)
    for _, ch, dy, dx in _sites(pattern):
        out[ch, dy::2, dx::2] = 1
    return out


def plane_values(values: torch.Tensor, pattern: str, height: int, width: int) -> torch.Tensor:
    """Expand per-sample, per-plane values ``(B, 4)`` to a mosaic map ``(B, 1, H, W)``.

    Examples
    --------
    >>> plane_values(torch.tensor([[1.0, 2.0, 3.0, 4.0]]), "RGGB", 2, 4)[0, 0].tolist()
    [[1.0, 2.0, 1.0, 2.0], [3.0, 4.0, 3.0, 4.0]]
    """
    if values.ndim != 2 or values.shape[1] != 4:
        raise ValueError(f"per-plane values must have shape (B, 4) in {', '.join(PLANES)} order, got {tuple(values.shape)}")
    out = values.new_empty((values.shape[0], 1, height, width))
    for plane, _, dy, dx in _sites(pattern):
        out[:, 0, dy::2, dx::2] = values[:, plane, None, None]
    return out


def pack(m: torch.Tensor, pattern: str) -> torch.Tensor:
    """Pack a mosaic ``(B, 1, H, W)`` (H, W even) into its planes ``(B, 4, H/2, W/2)``, ``R, Gr, Gb, B``.

    Examples
    --------
    >>> m = torch.arange(16.0).view(1, 1, 4, 4)
    >>> pack(m, "RGGB")[0, 0].tolist()
    [[0.0, 2.0], [8.0, 10.0]]
    """
    check_bchw(m, "mosaic", (1,))
    if m.shape[-2] % 2 or m.shape[-1] % 2:
        raise ValueError(f"packing needs an even height and width, got {tuple(m.shape[-2:])}")
    planes = [None] * 4
    for plane, _, dy, dx in _sites(pattern):
        planes[plane] = m[:, 0, dy::2, dx::2]
    return torch.stack(planes, 1)


def unpack(planes: torch.Tensor, pattern: str) -> torch.Tensor:
    """Inverse of :func:`pack`: ``(B, 4, h, w)`` -> ``(B, 1, 2h, 2w)``."""
    check_bchw(planes, "planes", (4,))
    b, _, h, w = planes.shape
    out = planes.new_empty((b, 1, 2 * h, 2 * w))
    for plane, _, dy, dx in _sites(pattern):
        out[:, 0, dy::2, dx::2] = planes[:, plane]
    return out
