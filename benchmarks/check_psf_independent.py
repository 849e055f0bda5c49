"""Accuracy check of ``dpcal fit-psf`` on captures from a renderer that shares nothing with dpcal's.

dpcal's own renderer (``render_capture``) integrates the chart exactly over each pixel and uses
dpcal's camera model, so a fit on its captures can hide shared assumptions. This script renders
with its own choices instead: the chart raster point-sampled ``--points`` x ``--points`` times per
pixel (nearest chart pixel; an approximation of the pixel integral whose error is 28 % of the
chart's contrast at 3x3, 9 % at 8x8), its own homography (rotation, perspective) and radial
distortion about the sensor centre, quadratic vignetting, a truth field on its own grid
(``--truth-grid``, spanning the whole sensor) of astigmatic Gaussians (sigma 0.8 px at the centre
to 3.2 px in the corners; ``astigmatic``: 2.4 x 1.3 px, colour scales closer together) or
zero-centroid comet-shaped PSFs, GRBG (or ``--pattern``), Poisson-Gaussian noise and a
12-bit DNG. Then it runs the CLI and prints the kernel relative L2 error at the fitted nodes
against the truth there (median, worst), the registration RMS and the time::

    python benchmarks/check_psf_independent.py                      # 4000x3000, 31 px, 8x6 (~4 min)
    python benchmarks/check_psf_independent.py --shape comet --points 4
    python benchmarks/check_psf_independent.py --shape astigmatic --pattern RGGB --kernel-size 21
    python benchmarks/check_psf_independent.py --size 2400 1600 --kernel-size 15 --grid 6 4 \\
        --truth-grid 6 4 --alpha 4e-4 --sigma 1e-3 --rotate -4
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def render(chart: np.ndarray, W: int, H: int, points: int, rotate: float, persp: float, k1: float) -> np.ndarray:
    """Chart reflectance seen by each pixel (point-sampled), its own pose and distortion."""
    Hc, Wc = chart.shape
    a, sc = np.deg2rad(rotate), 0.9 * W / Wc
    Hm = np.array([[sc * np.cos(a), -sc * np.sin(a), 0], [sc * np.sin(a), sc * np.cos(a), 0],
                   [persp * 2e-6 / sc, -persp * 1.5e-6 / sc, 1.0]])
    p = Hm @ np.array([Wc / 2, Hc / 2, 1.0])
    Hm[0, 2] += (W - 1) / 2 - p[0] / p[2]
    Hm[1, 2] += (H - 1) / 2 - p[1] / p[2]
    Hinv = np.linalg.inv(Hm)
    cx, cy, rn = (W - 1) / 2, (H - 1) / 2, 0.5 * np.hypot(W, H)
    img = np.zeros((H, W))
    for oy in range(points):
        for ox in range(points):
            xd, yd = np.meshgrid(np.arange(W) + (ox + 0.5) / points - 0.5, np.arange(H) + (oy + 0.5) / points - 0.5)
            xu, yu = xd.copy(), yd.copy()
            for _ in range(8):  # undistort: x_d = c + (x_u - c) (1 + k1 r_u^2)
                f = 1 + k1 * ((xu - cx) ** 2 + (yu - cy) ** 2) / rn**2
                xu, yu = cx + (xd - cx) / f, cy + (yd - cy) / f
            q = Hinv @ np.stack([xu.ravel(), yu.ravel(), np.ones(xu.size)])
            iu = np.floor(q[0] / q[2]).astype(int).reshape(H, W)
            iv = np.floor(q[1] / q[2]).astype(int).reshape(H, W)
            inside = (iu >= 0) & (iu < Wc) & (iv >= 0) & (iv < Hc)
            val = np.full((H, W), 0.25)
            val[inside] = chart[iv[inside], iu[inside]]
            img += val
    return img / points**2


def truth_field(W: int, H: int, K: int, tgx: int, tgy: int, shape: str):
    from dpcal.physics.optics import PSFField, gaussian_kernel

    tx, ty = np.linspace(0, W - 1, tgx), np.linspace(0, H - 1, tgy)
    cx, cy, rn = (W - 1) / 2, (H - 1) / 2, 0.5 * np.hypot(W, H)
    psf = np.zeros((tgy, tgx, 4, K, K), np.float32)
    for j, y in enumerate(ty):
        for i, x in enumerate(tx):
            r, th = np.hypot(x - cx, y - cy) / rn, np.arctan2(y - cy, x - cx)
            e = np.array([np.cos(th), np.sin(th)])
            scales = (1.15, 1.0, 1.0, 1.3) if shape == "astigmatic" else (1.2, 1.0, 1.05, 1.35)
            for c, f in enumerate(scales):
                s1, s2 = (0.8 + 1.6 * r**2) * f, (0.8 + 0.5 * r**2) * f
                if shape == "comet":  # core inward, faint wide tail outward, centroid zero
                    d = 3.0 * r
                    psf[j, i, c] = (0.75 * gaussian_kernel(K, s1, s2, theta=th, shift=tuple(-d / 3 * e))
                                    + 0.25 * gaussian_kernel(K, 1.5 * s1, 1.5 * s2, theta=th, shift=tuple(d * e)))
                else:
                    psf[j, i, c] = gaussian_kernel(K, s1, s2, theta=th)
    return PSFField(psf, np.stack(np.meshgrid(tx, ty), -1), sensor_size=(W, H))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, nargs=2, default=(4000, 3000), metavar=("W", "H"))
    ap.add_argument("--kernel-size", type=int, default=31)
    ap.add_argument("--grid", type=int, nargs=2, default=(8, 6))
    ap.add_argument("--truth-grid", type=int, nargs=2, default=(16, 12))
    ap.add_argument("--points", type=int, default=8, help="point samples per pixel and axis")
    ap.add_argument("--shape", choices=["gauss", "comet", "astigmatic"], default="gauss",
                    help="astigmatic: long axis radial, sigma 0.8 px at the centre to 2.4 x 1.3 px at the corners, "
                         "per-colour scale G 1.0, R 1.15, B 1.3")
    ap.add_argument("--pattern", default="GRBG", help="CFA pattern of the capture")
    ap.add_argument("--alpha", type=float, default=8e-4, help="Poisson scale (relative to white)")
    ap.add_argument("--sigma", type=float, default=2e-3, help="read noise (relative to white)")
    ap.add_argument("--noise-free", action="store_true")
    ap.add_argument("--rotate", type=float, default=2.5)
    ap.add_argument("--perspective", type=float, default=1.0)
    ap.add_argument("--k1", type=float, default=-0.04)
    ap.add_argument("--tmpdir", default=None)
    a = ap.parse_args(argv)

    import torch

    from dpcal.cfa import PLANES, plane_map
    from dpcal.chart import load_chart
    from dpcal.chart.spec import chart_raster
    from dpcal.io.dng import write_dng
    from dpcal.physics.optics import PSFField, blur_rgb_to_planes

    W, H = a.size
    K = a.kernel_size
    tmp = Path(a.tmpdir or tempfile.mkdtemp(prefix="dpcal-check-psf-"))
    tmp.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    # a chart whose cells image to ~0.8 sensor px
    subprocess.run([py, "-m", "dpcal", "make-chart", "psf", "--out", str(tmp / "chart"), "--size-mm",
                    f"{W * 0.112:.1f}", f"{H * 0.112:.1f}", "--dpi", "254", "--cell-px", "1", "--margin-mm", "0",
                    "--no-pdf", "--overwrite"],
                   check=True, capture_output=True, cwd=ROOT)
    spec = load_chart(tmp / "chart" / "chart.json")
    t = time.time()
    refl = 0.04 + 0.88 * render(chart_raster(spec).astype(np.float64), W, H, a.points, a.rotate, a.perspective, a.k1)
    XX, YY = np.meshgrid(np.arange(W), np.arange(H))
    scene = 0.8 * refl * (1 - 0.25 * (((XX - (W - 1) / 2) ** 2 + (YY - (H - 1) / 2) ** 2) / (0.25 * (W * W + H * H))))
    truth = truth_field(W, H, K, *a.truth_grid, a.shape)
    rgb = torch.from_numpy(scene[None, None] * np.array([0.55, 1.0, 0.7])[None, :, None, None])
    planes = blur_rgb_to_planes(rgb, truth).numpy()[0]
    clean = np.take_along_axis(planes, plane_map(a.pattern, H, W)[None], 0)[0]
    rng = np.random.default_rng(2024)
    if a.noise_free:
        y = clean
    else:
        y = a.alpha * rng.poisson(np.maximum(clean, 0) / a.alpha) + a.sigma * rng.standard_normal(clean.shape)
    dn = np.round(np.clip(y, 0, 1) * (4095 - 64) + 64).astype(np.uint16)
    write_dng(tmp / "cap.dng", dn, a.pattern, black_level=64, white_level=4095, iso=400)
    print(f"rendered {tmp / 'cap.dng'} in {time.time() - t:.0f} s", file=sys.stderr)

    t = time.time()
    r = subprocess.run([py, "-m", "dpcal", "fit-psf", str(tmp / "cap.dng"), "--chart", str(tmp / "chart" / "chart.json"),
                        "--kernel-size", str(K), "--grid", *map(str, a.grid), "-o", str(tmp / "field.npz"),
                        "--json", "--overwrite"], capture_output=True, text=True, cwd=ROOT)
    dt = time.time() - t
    if r.returncode:
        sys.exit(f"fit-psf failed: {r.stderr.strip()}")
    doc = json.loads(r.stdout)
    est = PSFField.load(tmp / "field.npz")
    err = np.array([[[np.linalg.norm(est.psf[j, i, c] - (kt := truth.kernel_at(*est.node_xy[j, i], p))) / np.linalg.norm(kt)
                      for c, p in enumerate(PLANES)] for i in range(est.psf.shape[1])] for j in range(est.psf.shape[0])])
    print(f"{W}x{H} K={K} grid {a.grid[0]}x{a.grid[1]} truth grid {a.truth_grid[0]}x{a.truth_grid[1]} "
          f"{a.shape} {a.points}x{a.points} points {'no noise' if a.noise_free else f'alpha {a.alpha:g} sigma {a.sigma:g}'}: "
          f"kernel rel. L2 median {100 * np.median(err):.2f} %  worst {100 * err.max():.2f} %  "
          f"registration RMS {doc['registration_rms_px']:.3f} px  fit-psf {dt:.1f} s")


if __name__ == "__main__":
    main()
