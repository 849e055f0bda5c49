"""Writing evaluation outputs."""

from __future__ import annotations

import csv
import io
import os

from dpcal.io.atomic import write_bytes_atomic

__all__ = ["write_predictions"]


def write_predictions(rows: list[dict], path: str | os.PathLike) -> None:
    """One CSV row per image and pass with the columns of
    :data:`dpcal.evaluate.run.PREDICTION_COLUMNS` (``lux`` empty for clean images), atomically."""
    from dpcal.evaluate.run import PREDICTION_COLUMNS

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=PREDICTION_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else (repr(r[k]) if isinstance(r[k], float) else r[k]))
                    for k in PREDICTION_COLUMNS})
    write_bytes_atomic(path, buf.getvalue().encode())
