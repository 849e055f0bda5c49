"""CFA helpers for RAW-consuming modules: tiles kept as buffers, expanded on the device.

Every CFA fact comes from :mod:`dpcal.cfa` and :mod:`dpcal.physics.cfa` at construction time, as a
2x2 tile; ``forward`` only repeats the tile on the tensor's device, so nothing is built on the
host per call and the buffers follow ``module.to(device)``.
"""

from __future__ import annotations

import torch
from torch import nn

from dpcal.cfa import PLANES, plane_map, plane_offsets, validate_pattern
from dpcal.physics.cfa import cfa_mask

__all__ = ["CFATiles", "channel_plane_tile"]


def channel_plane_tile(pattern: str) -> torch.Tensor:
    """``(3, 2, 2)`` plane index (``R, Gr, Gb, B`` order) that each RGB channel uses per tile site.

    Red always uses the R plane and blue the B plane; green uses ``Gr`` on the row that holds the
    red site and ``Gb`` on the other row. This is how per-plane noise parameters are read for
    an RGB estimate at every pixel (e.g. inverting the Anscombe transform of a demosaicked image).

    Examples
    --------
    >>> channel_plane_tile("RGGB")[1].tolist()
    [[1, 1], [2, 2]]
    """
    offs = plane_offsets(validate_pattern(pattern))
    green_row = {offs["Gr"][0]: PLANES.index("Gr"), offs["Gb"][0]: PLANES.index("Gb")}
    tile = torch.empty(3, 2, 2, dtype=torch.long)
    tile[0] = PLANES.index("R")
    tile[2] = PLANES.index("B")
    for dy in (0, 1):
        tile[1, dy] = green_row[dy]
    return tile


def _repeat_tile(tile: torch.Tensor, height: int, width: int) -> torch.Tensor:
    reps = (1,) * (tile.ndim - 2) + ((height + 1) // 2, (width + 1) // 2)
    return tile.repeat(reps)[..., :height, :width]


class CFATiles(nn.Module):
    """The CFA pattern's 2x2 tiles as non-persistent buffers.

    Parameters
    ----------
    pattern : str
        ``RGGB``, ``BGGR``, ``GRBG`` or ``GBRG``.

    Examples
    --------
    >>> t = CFATiles("BGGR")
    >>> t.mask(2, 2)[2].tolist()         # blue top-left
    [[1.0, 0.0], [0.0, 0.0]]
    >>> t.site_values(torch.tensor([[1.0, 2.0, 3.0, 4.0]]), 2, 2)[0, 0].tolist()
    [[4.0, 3.0], [2.0, 1.0]]
    """

    def __init__(self, pattern: str) -> None:
        super().__init__()
        self.pattern = validate_pattern(pattern)
        self.register_buffer("mask_tile", cfa_mask(self.pattern, 2, 2), persistent=False)
        self.register_buffer("site_tile", torch.as_tensor(plane_map(self.pattern, 2, 2)).reshape(-1), persistent=False)
        self.register_buffer("channel_tile", channel_plane_tile(self.pattern).reshape(-1), persistent=False)

    def mask(self, height: int, width: int, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``(3, H, W)`` CFA mask: 1 where the sensor samples that RGB channel."""
        m = _repeat_tile(self.mask_tile, height, width)
        return m if dtype is None else m.to(dtype)

    def site_values(self, values: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Per-plane values ``(B, 4)`` -> ``(B, 1, H, W)`` map of each pixel's own plane."""
        tile = values[:, self.site_tile].reshape(-1, 1, 2, 2)
        return _repeat_tile(tile, height, width)

    def channel_values(self, values: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Per-plane values ``(B, 4)`` -> ``(B, 3, H, W)`` map for RGB estimates (see :func:`channel_plane_tile`)."""
        tile = values[:, self.channel_tile].reshape(-1, 3, 2, 2)
        return _repeat_tile(tile, height, width)

    def extra_repr(self) -> str:
        return f"pattern={self.pattern!r}"
