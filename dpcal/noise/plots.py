"""Figures of a noise calibration (matplotlib ``Figure`` objects, no pyplot state; written atomically).

* :func:`plot_fits`: per ISO, one panel per plane with the level sets' std against their mean
  and the fitted curves, clipped (what the data follow) and unclipped ``sqrt(alpha y + b)``:
  the figure of Foi et al. 2008/2009. Points are shaded by their inlier weight.
* :func:`plot_iso_model`: alpha and sigma against ISO per plane, with error bars and the ISO
  model of the profile.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from dpcal.io.atomic import atomic_path
from dpcal.physics.clipped import clipped_curve
from dpcal.profile.model import eval_iso_model


def _save(fig, path: Path) -> str:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return str(path)


def plot_fits(fits_by_iso: dict, out_dir: str | os.PathLike) -> list[str]:
    """One PNG per ISO (``noise_iso<ISO>.png``) with the std-vs-mean figure of every plane."""
    out = []
    for iso, fits in fits_by_iso.items():
        names = list(fits)
        ncol = 2 if len(names) > 1 else 1
        nrow = int(np.ceil(len(names) / ncol))
        fig = Figure(figsize=(5.2 * ncol, 3.8 * nrow))
        axes = fig.subplots(nrow, ncol, squeeze=False)
        for ax, name in zip(axes.ravel(), names):
            f = fits[name]
            s = f.sets
            w = np.clip(f.weights, 0, 1)
            ax.scatter(s.level, s.std, s=6, c=w, cmap="viridis", vmin=0, vmax=1, linewidths=0,
                       label=f"level sets ({len(s)}; colour: inlier weight)")
            lo = float(np.min(s.lo)) if len(s) else 0.0
            hi = float(np.max(s.hi)) if len(s) else 1.0
            t = np.linspace(lo - 0.02 * (hi - lo), hi + 0.02 * (hi - lo), 400)
            y = np.linspace(lo, hi, 400)
            ax.plot(y, np.sqrt(np.maximum(f.alpha * y + f.b, 0)), "k--", lw=1, label="unclipped  sqrt(alpha y + b)")
            if f.method != "pairs":
                E, sd = clipped_curve(t, f.alpha, f.b, lo, hi)
                ax.plot(E, sd, "r-", lw=1.2, label="clipped model")
            ax.set_title(f"{name}: alpha {f.alpha:.4g} ± {f.alpha_std:.2g}, sigma {f.sigma:.4g} ± {f.sigma_std:.2g}",
                         fontsize=9)
            ax.set_xlabel("mean (normalised)")
            ax.set_ylabel("std")
            ax.set_xlim(lo - 0.02, hi + 0.02)
            top = np.nanpercentile(s.std, 99) if len(s) else 1.0
            ax.set_ylim(0, 1.3 * max(top, float(np.sqrt(max(f.alpha * hi + f.b, 0)))))
            ax.legend(fontsize=7, loc="upper left")
        for ax in axes.ravel()[len(names):]:
            ax.axis("off")
        label = "unknown ISO" if iso is None else f"ISO {iso:g}"
        fig.suptitle(f"Noise fit, {label} ({fits[names[0]].method})", fontsize=11)
        fig.tight_layout()
        name = "noise_iso_unknown.png" if iso is None else f"noise_iso{iso:g}.png"
        out.append(_save(fig, Path(out_dir) / name))
    return out


def plot_iso_model(rows: list[dict], model: dict, out_dir: str | os.PathLike) -> str:
    """``noise_iso_model.png``: alpha and sigma against ISO per plane, with the ISO model."""
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    isos = np.array([r["iso"] for r in rows], float)
    grid = np.geomspace(isos.min() / 1.5, isos.max() * 1.5, 100)
    colors = {"R": "tab:red", "Gr": "tab:green", "Gb": "tab:olive", "B": "tab:blue"}
    for plane, col in colors.items():
        a = np.array([r["alpha"][plane] for r in rows])
        s = np.array([r["sigma"][plane] for r in rows])
        ea = np.array([r.get("alpha_std", {}).get(plane, 0.0) for r in rows])
        es = np.array([r.get("sigma_std", {}).get(plane, 0.0) for r in rows])
        ma, ms = eval_iso_model(model["kind"], model["params"][plane], grid)
        axes[0].errorbar(isos, a, yerr=ea, fmt="o", color=col, ms=4, label=plane)
        axes[0].plot(grid, ma, "-", color=col, lw=1)
        axes[1].errorbar(isos, s, yerr=es, fmt="o", color=col, ms=4, label=plane)
        axes[1].plot(grid, ms, "-", color=col, lw=1)
    for ax, name in zip(axes, ("alpha", "sigma")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("ISO")
        ax.set_ylabel(f"{name} (normalised)")
        ax.legend(fontsize=8)
    loo = model.get("loo_alpha_rel_err_rms")
    extra = f"; leave-one-ISO-out rms error alpha {loo:.1%}, sigma {model['loo_sigma_rel_err_rms']:.1%}" if loo is not None else ""
    fig.suptitle(f"ISO model ({model['kind']}){extra}", fontsize=10)
    fig.tight_layout()
    return _save(fig, Path(out_dir) / "noise_iso_model.png")
