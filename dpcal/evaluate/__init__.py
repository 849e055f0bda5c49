"""Evaluation of trained checkpoints: runs over simulated, on-the-fly and captured data, and
reports (``dpcal eval``).

- :mod:`dpcal.evaluate.run`: :func:`evaluate` (checkpoints x data -> :class:`Evaluation`);
- :mod:`dpcal.evaluate.captures`: real RAW captures reduced to a model's input;
- :mod:`dpcal.evaluate.panel`: what each pipeline hands its classifier (Figure 5);
- :mod:`dpcal.evaluate.report`: tables (pandas) as Markdown/CSV, plots, ``report.md``;
- :mod:`dpcal.evaluate.io`: the predictions CSV.

The metrics themselves (top-k with five guesses, confusion matrix, PSNR/SSIM from kornia) live in
:mod:`dpcal.learn.metrics`, shared with the trainer's validation. Names are imported on first use
(``lazy_loader``, SPEC 1).
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submodules=["captures", "io", "panel", "report", "run"],
    submod_attrs={
        "run": ["PREDICTION_COLUMNS", "Evaluation", "evaluate", "load_for_eval"],
        "captures": ["CaptureDataset", "open_captures", "reduce_mosaic"],
        "report": ["write_report", "results_table"],
        "io": ["write_predictions"],
    },
)
