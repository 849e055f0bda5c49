"""Plots of a PSF field: kernel mosaics per plane and the MTF50 map across the field."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from dpcal.io.atomic import atomic_path
from dpcal.psf.estimate import mtf50
from dpcal.physics.optics import PSFField


def plot_psf_mosaic(field: PSFField, plane: str, path: str | os.PathLike, gamma: float = 0.5) -> None:
    """All node kernels of one plane on the grid, each scaled to its own peak (``gamma`` shows tails)."""
    c = field.plane_index(plane)
    gy, gx = field.psf.shape[:2]
    k = field.kernel_size
    mos = np.zeros((gy * (k + 1) - 1, gx * (k + 1) - 1))
    for j in range(gy):
        for i in range(gx):
            kern = field.psf[j, i, c].astype(float)
            mos[j * (k + 1) : j * (k + 1) + k, i * (k + 1) : i * (k + 1) + k] = (kern / max(kern.max(), 1e-12)) ** gamma
    fig = Figure(figsize=(1.0 + gx * 1.1, 0.8 + gy * 1.1))
    ax = fig.subplots()
    ax.imshow(mos, cmap="magma", interpolation="nearest")
    ax.set_xticks([(i + 0.5) * (k + 1) - 1 for i in range(gx)], [f"{x:.0f}" for x in field.grid_x], fontsize=6)
    ax.set_yticks([(j + 0.5) * (k + 1) - 1 for j in range(gy)], [f"{y:.0f}" for y in field.grid_y], fontsize=6)
    ax.set_title(f"PSF field, plane {plane} ({k}x{k} kernels, each to its peak, gamma {gamma:g})", fontsize=8)
    _save(fig, path)


def plot_mtf50_map(field: PSFField, path: str | os.PathLike) -> None:
    """MTF50 (cycles/pixel, radial average) at every node, one panel per plane."""
    gy, gx = field.psf.shape[:2]
    vals = np.array([[[mtf50(field.psf[j, i, c])["radial"] for i in range(gx)] for j in range(gy)]
                     for c in range(len(field.planes))])
    fig = Figure(figsize=(3.2 * len(field.planes), 2.8))
    axes = fig.subplots(1, len(field.planes), squeeze=False)
    vmin, vmax = float(vals.min()), float(vals.max())
    for c, ax in enumerate(axes[0]):
        im = ax.imshow(vals[c], cmap="viridis", vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(f"MTF50 {field.planes[c]}", fontsize=8)
        for j in range(gy):
            for i in range(gx):
                ax.text(i, j, f"{vals[c, j, i]:.2f}", ha="center", va="center", fontsize=5, color="w")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="cycles / pixel")
    _save(fig, path)


def write_plots(field: PSFField, out_dir: str | os.PathLike) -> list[str]:
    """PSF mosaic per plane and the MTF50 map into ``out_dir``; returns the files written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for p in field.planes:
        f = out / f"psf_mosaic_{p}.png"
        plot_psf_mosaic(field, p, f)
        files.append(str(f))
    f = out / "mtf50_map.png"
    plot_mtf50_map(field, f)
    files.append(str(f))
    return files


def _save(fig, path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=150, bbox_inches="tight")
