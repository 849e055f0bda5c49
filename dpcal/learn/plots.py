"""Plots of training runs (matplotlib's object API: no pyplot state, no backend switch)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from dpcal.io.atomic import atomic_path

__all__ = ["learning_curve"]


def learning_curve(metrics_csv: str | os.PathLike, png: str | os.PathLike) -> None:
    """Loss (left) and top-1 accuracy or PSNR (right) against the optimiser step, train and
    validation, with the phases of the run shaded."""
    from matplotlib.figure import Figure

    with open(metrics_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{metrics_csv} has no rows")

    def series(split: str, key: str):
        pts = [(float(r["step"]), float(r[key])) for r in rows if r["split"] == split and r.get(key) not in ("", None)]
        return [p[0] for p in pts], [p[1] for p in pts]

    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    for split, style in (("train", dict(lw=1, alpha=0.8)), ("val", dict(lw=2, marker="o", ms=4))):
        x, y = series(split, "loss")
        if x:
            ax_loss.plot(x, y, label=split, **style)
    metric = "top1" if any(r.get("top1") for r in rows) else "psnr"
    for split, style in (("train", dict(lw=1, alpha=0.8)), ("val", dict(lw=2, marker="o", ms=4))):
        x, y = series(split, metric)
        if x:
            ax_acc.plot(x, [v * 100 for v in y] if metric == "top1" else y, label=split, **style)
    # Shade the phases (e.g. the Anscombe network's stage 1 before joint training).
    bounds: list[tuple[str, float, float]] = []
    for r in rows:
        s = float(r["step"])
        if bounds and bounds[-1][0] == r["phase"]:
            bounds[-1] = (r["phase"], bounds[-1][1], s)
        else:
            bounds.append((r["phase"], bounds[-1][2] if bounds else 0.0, s))
    if len(bounds) > 1:
        for i, (name, a, b) in enumerate(bounds):
            for ax in (ax_loss, ax_acc):
                ax.axvspan(a, b, color="0.9" if i % 2 == 0 else "white", zorder=0)
            ax_loss.text((a + b) / 2, 1.0, name, transform=ax_loss.get_xaxis_transform(), ha="center", va="bottom",
                         fontsize=8, color="0.3")
    ax_loss.set(xlabel="optimiser step", ylabel="loss", title="loss")
    ax_acc.set(xlabel="optimiser step", ylabel="top-1 accuracy (%)" if metric == "top1" else "PSNR (dB)",
               title="accuracy" if metric == "top1" else "reconstruction")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[1]:  # a run of 0 steps has nothing to label
            ax.legend(frameon=False)
    with atomic_path(Path(png)) as tmp:
        fig.savefig(tmp, dpi=110)
