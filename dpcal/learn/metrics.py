"""Classification and reconstruction metrics: one implementation for the trainer's validation
and ``dpcal eval`` (:mod:`dpcal.evaluate`).

Top-k follows the usual definition: an image counts as a top-k hit when its label is among the
``k`` highest scores, so top-5 is **five** guesses (the paper's reference code counted six on its
captured data, ``rank <= 5`` with ranks from 0). Ties are broken by :func:`torch.topk` (the lower
class index first on CPU), the same rule for every model. With fewer than ``k`` classes, top-k
uses all of them (and is 1).

PSNR and SSIM come from :mod:`kornia.metrics` (data range 1, SSIM with an 11 x 11 Gaussian
window), per image, then averaged over images.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["topk_predictions", "topk_hits", "topk_correct", "confusion_matrix", "per_class_accuracy",
           "psnr_per_image", "ssim_per_image"]


def topk_predictions(logits: torch.Tensor, k: int = 5) -> torch.Tensor:
    """The ``min(k, K)`` best class indices per row, best first, ``(B, min(k, K))`` int64.

    Examples
    --------
    >>> topk_predictions(torch.tensor([[0.1, 0.9, 0.5]]), 5).tolist()
    [[1, 2, 0]]
    """
    return logits.topk(min(k, logits.shape[1]), dim=1).indices


def topk_hits(predictions: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image top-1 and top-k hits ``(B,)`` bool from :func:`topk_predictions`.

    Examples
    --------
    >>> p = torch.tensor([[2, 0, 1], [1, 2, 0]])
    >>> [h.tolist() for h in topk_hits(p[:, :2], torch.tensor([0, 1]))]
    [[False, True], [True, True]]
    """
    hit = predictions == labels[:, None]
    return hit[:, 0], hit.any(1)


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, k: int = 5) -> tuple[int, int]:
    """Numbers of top-1 and top-``k`` hits in a batch.

    Examples
    --------
    >>> logits = torch.tensor([[3.0, 2, 1, 0, -1, -2], [0.0, 1, 2, 3, 4, 5]])
    >>> topk_correct(logits, torch.tensor([0, 0]))   # second: label ranked 6th, not in the top 5
    (1, 1)
    """
    t1, tk = topk_hits(topk_predictions(logits, k), labels)
    return int(t1.sum()), int(tk.sum())


def confusion_matrix(labels, predictions, num_classes: int) -> np.ndarray:
    """``(K, K)`` counts: row = true class, column = top-1 prediction.

    Examples
    --------
    >>> confusion_matrix([0, 0, 1, 2], [0, 1, 1, 1], 3).tolist()
    [[1, 1, 0], [0, 1, 0], [0, 1, 0]]
    """
    lab = np.asarray(labels, dtype=np.int64)
    pred = np.asarray(predictions, dtype=np.int64)
    return np.bincount(lab * num_classes + pred, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(confusion: np.ndarray) -> np.ndarray:
    """Top-1 accuracy per true class from a confusion matrix (NaN for classes without images).

    Examples
    --------
    >>> per_class_accuracy(np.array([[1, 1], [0, 0]])).tolist()
    [0.5, nan]
    """
    n = confusion.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.diag(confusion) / np.maximum(n, 1), np.nan)


def psnr_per_image(estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of each image, ``(B,)``, data range 1 (estimates clipped to [0, 1]).

    Examples
    --------
    >>> t = torch.zeros(2, 3, 8, 8)
    >>> psnr_per_image(t + 0.1, t).round().tolist()
    [20.0, 20.0]
    """
    from kornia.metrics import psnr

    est, tgt = estimate.float().clamp(0, 1), target.float()
    return torch.stack([psnr(est[i], tgt[i], 1.0) for i in range(est.shape[0])])


def ssim_per_image(estimate: torch.Tensor, target: torch.Tensor, window_size: int = 11) -> torch.Tensor:
    """Mean SSIM of each image, ``(B,)`` (Gaussian window, data range 1, estimates clipped).

    Examples
    --------
    >>> t = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    >>> float(ssim_per_image(t, t))
    1.0
    """
    from kornia.metrics import ssim

    est, tgt = estimate.float().clamp(0, 1), target.float()
    return ssim(est, tgt, window_size, max_val=1.0).flatten(1).mean(1)
