"""MobileNet classifiers: v1 (Howard et al. 2017) and v2 (Sandler et al. 2018).

Both take RGB ``(B, 3, H, W)`` in [0, 1], map it to [-1, 1] (``2x - 1``, the input range of the
reference's MobileNet), and return logits ``(B, num_classes)``. Any input size works (global
average pooling); the paper uses 128 x 128.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MobileNetV1", "MobileNetV2", "make_divisible"]


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round a channel count to the nearest multiple of ``divisor`` without losing more than 10 %.

    Examples
    --------
    >>> make_divisible(32 * 1.4), make_divisible(16 * 0.25)
    (48, 8)
    """
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


def _init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


class _Classifier(nn.Module):
    """Feature trunk, global average pooling, dropout, linear; RGB in [0, 1] mapped to [-1, 1]."""

    input_kind = "rgb"

    def _head(self, features: nn.Sequential, channels: int, num_classes: int, dropout: float) -> None:
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(channels, num_classes)
        _init(self)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(rgb * 2.0 - 1.0)).flatten(1)
        return self.classifier(self.dropout(x))


# (output channels, stride) of the 13 depthwise-separable blocks.
_V1_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]


class MobileNetV1(_Classifier):
    """MobileNet-v1: 3x3 stride-2 stem, 13 depthwise-separable blocks, global pool, linear.

    Parameters
    ----------
    num_classes : int
    width : float
        Width multiplier applied to every layer (channels rounded to multiples of 8).
    dropout : float
        Dropout before the classifier.

    Shapes
    ------
    ``(B, 3, H, W)`` in [0, 1] -> logits ``(B, num_classes)``.

    Examples
    --------
    >>> sum(p.numel() for p in MobileNetV1(1000).parameters())
    4231976
    >>> MobileNetV1(10, width=0.25)(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """

    def __init__(self, num_classes: int = 1000, width: float = 1.0, dropout: float = 0.0) -> None:
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be > 0, got {width}")
        c = make_divisible(32 * width)
        layers = [_conv_bn(3, c, 3, 2)]
        for cout, stride in _V1_BLOCKS:
            cout = make_divisible(cout * width)
            layers += [_conv_bn(c, c, 3, stride, groups=c), _conv_bn(c, cout, 1)]
            c = cout
        self._head(nn.Sequential(*layers), c, num_classes, dropout)


class _InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers = [] if expand == 1 else [_conv_bn(cin, hidden, 1)]
        layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden), _conv_bn(hidden, cout, 1, act=False)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


# (expansion t, channels c, repeats n, first stride s), Sandler et al. Table 2.
_V2_SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


class MobileNetV2(_Classifier):
    """MobileNet-v2 with inverted residual blocks.

    Parameters
    ----------
    num_classes : int
    width : float
        Width multiplier (the paper's baseline uses 1.4). The last 1x1 conv has
        ``1280 * max(1, width)`` channels, as in the original.
    dropout : float
        Dropout before the classifier.

    Shapes
    ------
    ``(B, 3, H, W)`` in [0, 1] -> logits ``(B, num_classes)``.

    Notes
    -----
    6,108,776 parameters at width 1.4 and 1000 classes: 6,110,569 with 1001 classes (the
    reference's class count) and 6,156,712 if batch-norm running statistics are counted too.
    The 6.90 M of the Dirty Pixels paper's Table 1 matches none of these; a different head or
    class count does not explain the 0.79 M gap (one class is 1,793 parameters), so the table
    here lists the architecture's own count.

    Examples
    --------
    >>> sum(p.numel() for p in MobileNetV2(1000).parameters())
    6108776
    """

    def __init__(self, num_classes: int = 1000, width: float = 1.4, dropout: float = 0.0) -> None:
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be > 0, got {width}")
        c = make_divisible(32 * width)
        layers: list[nn.Module] = [_conv_bn(3, c, 3, 2)]
        for t, ch, n, s in _V2_SETTINGS:
            cout = make_divisible(ch * width)
            for i in range(n):
                layers.append(_InvertedResidual(c, cout, s if i == 0 else 1, t))
                c = cout
        last = make_divisible(1280 * max(1.0, width))
        layers.append(_conv_bn(c, last, 1))
        self._head(nn.Sequential(*layers), last, num_classes, dropout)
