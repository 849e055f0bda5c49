"""Evaluation of trained checkpoints: metrics, runs over simulated, on-the-fly and captured data,
and reports (``dpcal eval``).

- :mod:`dpcal.evaluate.metrics`: top-k (five guesses), confusion matrix, PSNR/SSIM (kornia);
- :mod:`dpcal.evaluate.run`: :func:`evaluate` (checkpoints x data -> :class:`Evaluation`);
- :mod:`dpcal.evaluate.captures`: real RAW captures reduced to a model's input;
- :mod:`dpcal.evaluate.report`: tables (pandas) as Markdown/CSV, plots, ``report.md``.
"""

from dpcal.evaluate.metrics import confusion_matrix, per_class_accuracy, topk_correct, topk_predictions
from dpcal.evaluate.run import PREDICTION_COLUMNS, Evaluation, evaluate

__all__ = ["PREDICTION_COLUMNS", "Evaluation", "confusion_matrix", "evaluate", "per_class_accuracy", "topk_correct",
           "topk_predictions"]
