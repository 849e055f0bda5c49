"""Reports of an evaluation: side-by-side tables (pandas) as Markdown and CSV, plots, ``report.md``.

The main table is laid out like the paper's Table 1: one row per model, for each lux setting the
top-1 / top-5 accuracy in percent (PSNR / SSIM for reconstruction models), then parameters and
multiply-accumulates in millions and the measured images/s. Plots use matplotlib's object API
(no pyplot state).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from dpcal.errors import BadInputError
from dpcal.io.atomic import atomic_path, write_bytes_atomic, write_json_atomic

__all__ = ["results_table", "per_class_table", "markdown_table", "plot_accuracy_vs_lux", "plot_panel", "write_report",
           "REPORT_FILES"]

REPORT_FILES = ("report.md", "table.md", "table.csv", "per_class.csv", "results.json", "accuracy_vs_lux.png",
                "panel.png")


def _pct(v) -> float | None:
    return None if v is None else round(100 * v, 2)


def results_table(results: list[dict]):
    """One row per model: ``model``, ``pipeline``, per-lux metrics, ``params (M)``, ``MACs (M)``,
    ``images/s``. Accuracies in percent.

    Examples
    --------
    >>> r = {"name": "joint", "model": "anscombe+mobilenet_v1", "per_lux": [
    ...     {"label": "3 lux", "top1": 0.5, "top5": 0.9}], "params": 4_280_000, "macs": 282_000_000,
    ...     "images_per_s": 100.0}
    >>> results_table([r]).iloc[0].to_dict()["top-1 / top-5 @ 3 lux"]
    '50.00 / 90.00'
    """
    import pandas as pd

    rows = []
    for r in results:
        row = {"model": r["name"], "pipeline": r["model"]}
        for e in r["per_lux"]:
            if e.get("top1") is not None:
                row[f"top-1 / top-5 @ {e['label']}"] = f"{100 * e['top1']:.2f} / {100 * e['top5']:.2f}"
            elif e.get("psnr") is not None:
                row[f"PSNR / SSIM @ {e['label']}"] = f"{e['psnr']:.2f} dB / {e['ssim']:.3f}"
        row["params (M)"] = round(r["params"] / 1e6, 3)
        row["MACs (M)"] = round(r["macs"] / 1e6, 1)
        row["images/s"] = r.get("images_per_s")
        rows.append(row)
    df = pd.DataFrame(rows)
    # Metric columns in the order lux settings first appear, then the size columns.
    fixed = ["model", "pipeline"]
    tail = ["params (M)", "MACs (M)", "images/s"]
    middle = [c for c in df.columns if c not in fixed + tail]
    return df[fixed + middle + tail].fillna("")


def per_class_table(results: list[dict]):
    """Top-1 accuracy (percent) per class (columns) and model (rows), over all passes."""
    import pandas as pd

    rows = []
    for r in results:
        if "per_class" not in r:
            continue
        rows.append({"model": r["name"], **{c["class"]: _pct(c["top1"]) for c in r["per_class"]}})
    return pd.DataFrame(rows)


def markdown_table(df) -> str:
    """A pandas frame as a GitHub Markdown table (no extra dependency).

    Examples
    --------
    >>> import pandas as pd
    >>> print(markdown_table(pd.DataFrame({"a": [1], "b": ["x"]})))
    | a | b |
    |---|---|
    | 1 | x |
    """
    def cell(v) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(c) for c in df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)


def plot_accuracy_vs_lux(results: list[dict], path: str | os.PathLike) -> bool:
    """Top-1 (solid) and top-5 (dashed) accuracy against illuminance, log x; one colour per
    model. Clean-image models are drawn as horizontal lines (their ceiling). Returns False (and
    writes nothing) when no model was evaluated at a fixed illuminance."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4.2), layout="constrained")
    ax = fig.subplots()
    drawn = False
    ceilings = []
    for j, r in enumerate(results):
        pts = [(e["lux"], e["top1"], e["top5"]) for e in r["per_lux"]
               if isinstance(e["lux"], (int, float)) and e.get("top1") is not None]
        colour = f"C{j % 10}"
        if pts:
            pts.sort()
            x = [p[0] for p in pts]
            ax.plot(x, [100 * p[1] for p in pts], "-o", color=colour, label=f"{r['name']} top-1")
            ax.plot(x, [100 * p[2] for p in pts], "--", color=colour, alpha=0.6, label=f"{r['name']} top-5")
            drawn = True
        elif any(e["lux"] is None and e.get("label") == "clean" and e.get("top1") is not None for e in r["per_lux"]):
            ceilings.append((r, colour))
    if not drawn:
        return False
    for r, colour in ceilings:
        ax.axhline(100 * r["top1"], color=colour, lw=1, ls=":", label=f"{r['name']} (clean images) top-1")
    ax.set_xscale("log")
    n_cls = max(len(r["classes"]) for r in results)
    ax.axhline(100 / n_cls, color="0.5", lw=0.8, ls="-.", label="chance")
    ax.set(xlabel="illuminance (lux)", ylabel="accuracy (%)", ylim=(0, 100), title="accuracy vs light level")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, frameon=False)
    _save(fig, Path(path))
    return True


def plot_panel(panel: dict, path: str | os.PathLike) -> bool:
    """Rows = images; columns = clean image, noisy mosaic (demosaicked), what each model hands
    its classifier. Returns False when there is nothing to draw."""
    from matplotlib.figure import Figure

    if not panel or not panel.get("stages"):
        return False
    cols = []
    if panel.get("clean") is not None:
        cols.append(("clean", panel["clean"]))
    if panel.get("noisy") is not None:
        cols.append((f"noisy RAW, {panel['noisy_lux']}\n(demosaicked)", panel["noisy"]))
    cols += [(name, imgs) for name, imgs in panel["stages"].items()]
    n = len(panel["keys"])
    fig = Figure(figsize=(1.8 * len(cols), 1.9 * n + 0.4), layout="constrained")
    axes = np.atleast_2d(fig.subplots(n, len(cols), squeeze=False))
    for c, (title, imgs) in enumerate(cols):
        for r in range(n):
            ax = axes[r, c]
            ax.imshow(np.clip(imgs[r], 0, 1), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=8)
    _save(fig, Path(path))
    return True


def write_report(evaluation, out: str | os.PathLike, *, overwrite: bool = False, command: str | None = None,
                 title: str = "dpcal eval") -> dict:
    """Write ``report.md``, ``table.md``, ``table.csv``, ``per_class.csv``, ``results.json`` and the
    plots (``accuracy_vs_lux.png`` when there are fixed-lux passes, ``panel.png``) into ``out``.

    Raises
    ------
    BadInputError
        ``out`` holds a report and ``overwrite`` is false.

    Returns
    -------
    dict
        ``{file name: path}`` of what was written.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BadInputError(f"{out} is a file; the report needs a folder")
    if out.is_dir() and any((out / f).exists() for f in REPORT_FILES) and not overwrite:
        raise BadInputError(f"{out} already holds a report; pass `overwrite=True` to replace it")
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    res = evaluation.results
    table = results_table(res)
    write_bytes_atomic(out / "table.csv", table.to_csv(index=False).encode())
    write_bytes_atomic(out / "table.md", (markdown_table(table) + "\n").encode())
    written.update({"table.csv": out / "table.csv", "table.md": out / "table.md"})
    pc = per_class_table(res)
    if len(pc):
        write_bytes_atomic(out / "per_class.csv", pc.to_csv(index=False).encode())
        written["per_class.csv"] = out / "per_class.csv"
    write_json_atomic(out / "results.json", _jsonable(evaluation.to_json()))
    written["results.json"] = out / "results.json"
    if plot_accuracy_vs_lux(res, out / "accuracy_vs_lux.png"):
        written["accuracy_vs_lux.png"] = out / "accuracy_vs_lux.png"
    if plot_panel(evaluation.panel, out / "panel.png"):
        written["panel.png"] = out / "panel.png"
    write_bytes_atomic(out / "report.md", report_markdown(evaluation, written, command, title).encode())
    written["report.md"] = out / "report.md"
    return written


def report_markdown(evaluation, written: dict, command: str | None = None, title: str = "dpcal eval") -> str:
    """The text of ``report.md``."""
    d = evaluation.data
    res = evaluation.results
    lines = [f"# {title}", ""]
    if command:
        lines += ["Command:", "", "```", command, "```", ""]
    lines += [f"Data: `{d['root']}` ({d['kind']}, {d['n']} images, {len(d['classes'])} classes).", ""]
    lines += ["## Accuracy", "", markdown_table(results_table(res)), ""]
    lines += ["Top-1 / top-5 in percent over the images of each pass (top-5: the label is among the five "
              "highest scores). Each lux setting is a separate pass over the same images with the same "
              "per-image seeds. Params and MACs: one image at the model's size (MACs = FLOPs / 2 of "
              "convolutions and matrix products). images/s: model time only, batch as run.", ""]
    settings = ["| model | checkpoint | mode | step | seed | profile | sim mode | size | CFA |", "|---|---|---|---|---|---|---|---|---|"]
    for r in res:
        s = r["sim"]
        settings.append(f"| {r['name']} | `{r['checkpoint']}` | {r['mode'] or ''} | {r.get('step') or ''} | {r['seed']} | "
                        f"{s['profile']} | {s['mode']} | {s['size']} | {s['pattern'] or 'RGB'} |")
    lines += ["Settings:", "", *settings, ""]
    if "accuracy_vs_lux.png" in written:
        lines += ["## Accuracy vs light level", "", "![accuracy vs lux](accuracy_vs_lux.png)", ""]
    if "panel.png" in written:
        p = evaluation.panel
        lines += ["## What each pipeline hands its classifier", "",
                  "![panel](panel.png)", "",
                  f"Images: {', '.join('`' + k + '`' for k in p['keys'])}. Linear data are shown with a 2.2 gamma; "
                  "the RAW-input classifier sees the mosaic itself (zeros at unsampled sites).", ""]
    pc = per_class_table(res)
    if len(pc):
        lines += ["## Per-class top-1 (%)", "", markdown_table(pc), ""]
    for r in res:
        if "confusion" in r and len(r["classes"]) <= 20:
            import pandas as pd

            cm = pd.DataFrame(r["confusion"], columns=r["classes"])
            cm.insert(0, "true \\ predicted", r["classes"])
            lines += [f"### Confusion matrix: {r['name']}", "", markdown_table(cm), ""]
    return "\n".join(lines) + "\n"


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if hasattr(x, "item") and callable(x.item):
        return _jsonable(x.item())
    return x
