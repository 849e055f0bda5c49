"""An ISP stage followed by a classifier, as one module."""

from __future__ import annotations

import torch
from torch import nn

from dpcal.cfa import validate_pattern
from dpcal.physics.cfa import mosaic3

__all__ = ["Pipeline"]


class Pipeline(nn.Module):
    """RAW mosaic -> (ISP stage) -> RGB -> (classifier) -> logits.

    Parameters
    ----------
    isp : nn.Module or None
        A stage ``(mosaic, alpha, sigma) -> rgb (B, 3, H, W)`` in [0, 1]. ``None``: the classifier
        sees the 3-channel mosaic (zeros at unsampled sites), the "classifier from scratch on
        RAW" baseline.
    classifier : nn.Module or None
        ``rgb -> logits``. ``None``: a reconstruction model whose output is the stage's RGB.
    pattern : str
        CFA pattern; must match the stage's own ``pattern`` when it has one.

    Shapes
    ------
    ``forward(mosaic (B, 1, H, W), alpha (B, 4), sigma (B, 4))`` -> ``(B, K)`` logits, or
    ``(B, 3, H, W)`` without a classifier.

    Examples
    --------
    >>> from dpcal.learn.models import AnscombeNet, MobileNetV1
    >>> net = Pipeline(AnscombeNet("RGGB"), MobileNetV1(10, width=0.25), pattern="RGGB")
    >>> net(torch.rand(2, 1, 32, 32), torch.full((2, 4), 0.01), torch.full((2, 4), 0.02)).shape
    torch.Size([2, 10])
    """

    input_kind = "raw"

    def __init__(self, isp: nn.Module | None, classifier: nn.Module | None, pattern: str = "BGGR") -> None:
        super().__init__()
        if isp is None and classifier is None:
            raise ValueError("a pipeline needs an isp, a classifier or both")
        self.pattern = validate_pattern(pattern)
        stage_pattern = getattr(isp, "pattern", self.pattern)
        if stage_pattern != self.pattern:
            raise ValueError(f"isp pattern {stage_pattern!r} differs from the pipeline's pattern {self.pattern!r}")
        self.isp = isp
        self.classifier = classifier

    def stage_output(self, mosaic: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """What the classifier sees: ``(B, 3, H, W)`` in [0, 1]."""
        if self.isp is not None:
            return self.isp(mosaic, alpha, sigma)
        return mosaic3(mosaic, self.pattern)

    def forward(self, mosaic: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        x = self.stage_output(mosaic, alpha, sigma)
        return x if self.classifier is None else self.classifier(x)
