"""fit-noise on a real ColorChecker capture against an estimator that shares nothing with it.

The capture (``../shared/data/raw/infiniteisp_colorchecker_1920x1080_bggr.raw``: 1920x1080
BGGR, 10-bit data on a 12-bit scale, black level undocumented, a light booth around the
chart) holds a ColorChecker Classic whose bottom row is six gray patches. The independent
estimate per CFA plane, written from the definition:

* the six gray patches are located on a half-resolution preview and their edges (their
  centres, in plane pixels, are below; the patches are 54-62 pixels wide, each window is
  44x44 plane pixels inside the patch);
* the noise variance of a window is that of a high-pass residual, the pixel minus the mean
  of its four neighbours, divided by 1.25 (that residual's variance for white noise);
  smooth shading and print structure wider than a pixel cancel; residuals beyond 5 std (hot
  pixels, dust) are dropped;
* the six (mean, variance) points are fitted with ``var = a m + b`` (a line) and with
  ``var = a m + b + c m^2`` (a line plus a signal-proportional PRNU/texture term), by least
  squares weighted with ``1/var``; alpha = a / 4092 (white, as fit-noise detects it).

Printed beside it: dpcal fit-noise with ``--prnu auto`` (default) and ``--prnu off``. Run
from the repository root::

    python benchmarks/check_noise_independent.py
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RAW = ROOT.parent / "shared" / "data" / "raw" / "infiniteisp_colorchecker_1920x1080_bggr.raw"
WHITE = 4092.0
#: BGGR: plane offsets (row, column) in the mosaic
OFFSETS = {"R": (1, 1), "Gr": (1, 0), "Gb": (0, 1), "B": (0, 0)}
#: gray patches (white ... black), centres (x, y) in plane pixels: located on a preview and
#: refined from the patch edges (intensity steps along rows and columns; the row is tilted)
GRAY_CENTRES = [(292, 426), (358, 430), (427, 432), (499, 434), (570, 434), (640, 435)]
HALF = 22
#: the 18 colour patches above them (rows 1-3), centres from the preview; smaller windows
COLOUR_CENTRES = [(x, y + 2 * k) for y in (220, 291, 361) for k, (x, _) in enumerate(GRAY_CENTRES)]
HALF_COLOUR = 18


def highpass_points(plane: np.ndarray, centres=GRAY_CENTRES, half: int = HALF) -> np.ndarray:
    pts = []
    for x, y in centres:
        w = plane[y - half : y + half, x - half : x + half]
        r = (w[1:-1, 1:-1] - (w[:-2, 1:-1] + w[2:, 1:-1] + w[1:-1, :-2] + w[1:-1, 2:]) / 4.0).ravel()
        for _ in range(3):  # hot pixels and dust: drop residuals beyond 5 std
            r = r[np.abs(r - r.mean()) <= 5.0 * r.std()]
        pts.append((w.mean(), r.var() / 1.25))
    return np.array(pts)


def wls(m: np.ndarray, v: np.ndarray, quad: bool) -> tuple[np.ndarray, np.ndarray]:
    X = np.stack([m, np.ones_like(m)] + ([m * m] if quad else []), 1)
    w = 1.0 / v
    A = X * w[:, None]
    coef = np.linalg.lstsq(A, v * w, rcond=None)[0]
    r = (v - X @ coef) * w
    s2 = np.sum(r**2) / max(len(m) - X.shape[1], 1)
    cov = np.linalg.inv(A.T @ A) * s2
    return coef, np.sqrt(np.diag(cov))


def dpcal_fit(prnu: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "dpcal", "fit-noise", str(RAW), "--width", "1920", "--height", "1080", "--bits", "12",
         "--pattern", "BGGR", "--iso", "100", "--prnu", prnu, "--json"],
        capture_output=True, text=True, cwd=ROOT, env={"DPCAL_QUIET": "1", "PATH": "/usr/bin:/bin"}, check=True)
    return {f["plane"]: f for f in json.loads(out.stdout)["fits"]}


def main() -> None:
    if not RAW.is_file():
        sys.exit(f"{RAW} not found (the real-data folder ../shared/data)")
    dn = np.fromfile(RAW, dtype="<u2").reshape(1080, 1920).astype(np.float64)
    auto, off = dpcal_fit("auto"), dpcal_fit("off")
    gray = {name: highpass_points(dn[r::2, c::2]) for name, (r, c) in OFFSETS.items()}
    print("plane | independent, 6 gray: line | 6 gray: line + c m^2 (PRNU %) | all 24: line + c m^2 | "
          "dpcal --prnu auto (PRNU %) | ratio to 6 gray (+c) | dpcal --prnu off | ratio to 6 gray (line)")
    for name, (r, c) in OFFSETS.items():
        pts = gray[name]
        allp = np.vstack([pts, highpass_points(dn[r::2, c::2], COLOUR_CENTRES, HALF_COLOUR)])
        (a1, b1), (sa1, _) = wls(pts[:, 0], pts[:, 1], False)
        (a2, b2, c2), (sa2, _, _) = wls(pts[:, 0], pts[:, 1], True)
        (a3, _, c3), (sa3, _, _) = wls(allp[:, 0], allp[:, 1], True)
        fa, fo = auto[name], off[name]
        pr = f"{fa['prnu']:.2%}" if fa.get("prnu_modelled") else "not modelled"
        print(f"{name} | {a1 / WHITE:.3e} ± {sa1 / WHITE:.1e} | {a2 / WHITE:.3e} ± {sa2 / WHITE:.1e} "
              f"({np.sqrt(max(c2, 0)):.2%}) | {a3 / WHITE:.3e} ± {sa3 / WHITE:.1e} ({np.sqrt(max(c3, 0)):.2%}) | "
              f"{fa['alpha']:.3e} ± {fa['alpha_std']:.1e} ({pr}) | "
              f"{fa['alpha'] / (a2 / WHITE):.3f} | {fo['alpha']:.3e} ± {fo['alpha_std']:.1e} | {fo['alpha'] / (a1 / WHITE):.3f}")
    # The greens are the same pixel design behind the same gain: their alphas should nearly agree.
    # Their variance per unit mean, patch by patch, compares them without a three-parameter fit.
    gr, gb = gray["Gr"], gray["Gb"]
    ratio = (gb[:, 1] / gb[:, 0]) / (gr[:, 1] / gr[:, 0])
    bright = ratio[:-1]  # the black patch's variance is mostly read noise, not alpha
    print(f"Gb/Gr variance per unit mean, patch by patch (white ... black): {np.round(ratio, 3).tolist()}; "
          f"five brighter patches {bright.mean():.3f} ± {bright.std(ddof=1) / np.sqrt(bright.size):.3f}; "
          f"dpcal alpha Gb/Gr {auto['Gb']['alpha'] / auto['Gr']['alpha']:.3f}")
    print("gray patch means (DN) and high-pass variances (DN^2) per plane:")
    for name, pts in gray.items():
        print(f"  {name}: " + ", ".join(f"{m:.0f}: {v:.0f}" for m, v in pts))


if __name__ == "__main__":
    main()
