"""The U-Net of Chen et al. 2018 ("Learning to See in the Dark") as a learned-ISP baseline."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dpcal.cfa import validate_pattern
from dpcal.physics.cfa import pack

__all__ = ["ChenUNet"]


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1), nn.LeakyReLU(0.2, inplace=True),
    )


class ChenUNet(nn.Module):
    """Packed-Bayer U-Net: 4 half-resolution planes in, RGB at full resolution out.

    Five levels of two 3x3 convs + LeakyReLU(0.2) (``base`` to ``16 base`` channels), 2x2 max
    pooling down, 2x2 transposed convs (no bias) up with skip concatenation, a final 1x1 conv to
    12 channels and ``pixel_shuffle(2)``.

    Parameters
    ----------
    pattern : str
        CFA pattern; the mosaic is packed into ``R, Gr, Gb, B`` planes with it.
    base : int
        Channels of the top level (32 in the original).

    Shapes
    ------
    ``forward(mosaic (B, 1, H, W), alpha (B, 4), sigma (B, 4)) -> (B, 3, H, W)``, ``H, W`` even.
    The planes are padded (replicate) to a multiple of 16 and the output cropped back.

    Notes
    -----
    ``alpha`` and ``sigma`` are accepted to share the ISP interface and are unused: the network
    learns the noise from data. Chen et al. multiply the input by the exposure ratio; dpcal's
    mosaics are already normalised to [0, 1] at the capture's exposure, so there is no
    amplification step here. 7,760,268 parameters at ``base=32`` (the original's 7.76 M).

    Examples
    --------
    >>> net = ChenUNet("RGGB")
    >>> sum(p.numel() for p in net.parameters())
    7760268
    >>> net(torch.rand(1, 1, 20, 36), None, None).shape
    torch.Size([1, 3, 20, 36])
    """

    input_kind = "raw"

    def __init__(self, pattern: str = "BGGR", base: int = 32) -> None:
        super().__init__()
        self.pattern = validate_pattern(pattern)
        ch = [base * 2**i for i in range(5)]
        self.down = nn.ModuleList(_double_conv(cin, cout) for cin, cout in zip([4] + ch[:-1], ch))
        self.up = nn.ModuleList(nn.ConvTranspose2d(ch[i + 1], ch[i], 2, stride=2, bias=False) for i in reversed(range(4)))
        self.dec = nn.ModuleList(_double_conv(2 * ch[i], ch[i]) for i in reversed(range(4)))
        self.head = nn.Conv2d(base, 12, 1)

    def forward(self, mosaic: torch.Tensor, alpha=None, sigma=None, clip: bool = True) -> torch.Tensor:
        """Reconstruct RGB; ``clip=False`` returns the raw network output (for an L1 loss)."""
        x = pack(mosaic, self.pattern)
        h, w = x.shape[-2:]
        ph, pw = (-h) % 16, (-w) % 16
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        skips.pop()
        for up, dec in zip(self.up, self.dec):
            x = dec(torch.cat([up(x), skips.pop()], dim=1))
        out = F.pixel_shuffle(self.head(x), 2)[..., : 2 * h, : 2 * w]
        return out.clamp(0.0, 1.0) if clip else out
