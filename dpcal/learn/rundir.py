"""The run folder of ``dpcal train``: starting, resuming, and the metrics table.

``RUN/config.json`` (resolved settings), ``RUN/metrics.csv`` (one row per log interval and per
validation; rows written after the checkpoint a run resumes from are dropped, so a killed run
leaves no duplicates), ``RUN/metrics.json`` (summary), ``RUN/curve.png``,
``RUN/checkpoints/last.pt`` and ``RUN/model.pt`` (:mod:`dpcal.learn.checkpoint`).
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from pathlib import Path

from dpcal.errors import BadInputError
from dpcal.io.atomic import write_bytes_atomic
from dpcal.learn.checkpoint import FINAL, LAST, load_checkpoint
from dpcal.learn.config import TrainConfig

METRICS_COLUMNS = ["step", "epoch", "phase", "split", "loss", "top1", "top5", "psnr", "lr", "images_per_s", "elapsed_s"]

__all__ = ["METRICS_COLUMNS", "append_metrics", "check_resume", "prepare_run", "truncate_metrics"]


def prepare_run(out: Path, resume: bool, overwrite: bool) -> dict | None:
    """Check the run folder; return the checkpoint to resume from (or None for a new run)."""
    last = out / LAST
    if resume:
        if last.is_file():
            return load_checkpoint(last)
        if not (out / "config.json").is_file():
            raise BadInputError(f"{out} has no checkpoint to resume ({LAST} is missing); drop `resume` to start a run")
        # Interrupted before its first checkpoint: nothing to keep, so the run starts again from step 0.
        overwrite = True
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            what = "a training run" if last.is_file() or (out / "config.json").is_file() else "files"
            raise BadInputError(f"{out} already holds {what}; pass `resume=True` to continue it or `overwrite=True` to start over")
        for name in ("checkpoints", FINAL, "config.json", "metrics.csv", "metrics.json", "curve.png"):
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    return None


def check_resume(saved: dict, cfg: TrainConfig, force: bool) -> None:
    old = TrainConfig.from_dict(saved)
    changed = [k for k in (*TrainConfig.MODEL_KEYS, *TrainConfig.DATA_KEYS)
               if old.to_dict()[k] != cfg.to_dict()[k]]
    if changed and not force:
        detail = ", ".join(f"{k}: {old.to_dict()[k]!r} -> {cfg.to_dict()[k]!r}" for k in changed)
        raise BadInputError(f"`resume` with a changed model or data setting ({detail}); use the run's settings, "
                            "or pass `force=True` to continue anyway")


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metric rows written after the checkpoint we resume from (a killed run wrote them)."""
    if not path.is_file():
        return
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    keep = [r for r in rows if int(r["step"]) <= step]
    write_metrics(path, keep)


def write_metrics(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=METRICS_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in METRICS_COLUMNS})
    write_bytes_atomic(path, buf.getvalue().encode())


def append_metrics(path: Path, rows: list[dict]) -> None:
    new = not path.is_file()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=METRICS_COLUMNS, lineterminator="\n")
        if new:
            w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in METRICS_COLUMNS})
        f.flush()
        os.fsync(f.fileno())
