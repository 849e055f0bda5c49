"""Accuracy check of ``dpcal fit-psf`` on captures from a renderer that shares nothing with dpcal's.

dpcal's own renderer (``render_capture``) integrates the chart exactly over each pixel and uses
dpcal's camera model, so a fit on its captures can hide shared assumptions. This script renders
with its own choices instead: its own homography (rotation, perspective) and radial distortion
about the sensor centre, the chart looked up at the nearest chart pixel, quadratic vignetting, a
truth field on its own grid (``--truth-grid``, spanning the whole sensor) of astigmatic Gaussians
(sigma 0.8 px at the centre to 3.2 px in the corners; ``astigmatic``: 2.4 x 1.3 px, colour
scales closer together) or zero-centroid comet-shaped PSFs, GRBG (or ``--pattern``),
Poisson-Gaussian noise and a 12-bit DNG. Two ways to form the image:

* default: the chart point-sampled ``--points`` x ``--points`` times per pixel (an approximation
  of the pixel integral whose error is 28 % of the chart's contrast at 3x3, 9 % at 8x8), blurred
  at pixel resolution with the PSFs sampled at pixel centres (``apply_psf_field``). That is
  dpcal's own discretisation (its chart model, its simulator): the capture is exactly a dpcal
  kernel acting on pixel averages.
* ``--supersample S``: physically faithful, as a sensor forms the image: the scene at S x the
  sensor resolution (``--points`` per fine pixel, default 8 / S), blurred there with the
  continuous PSFs sampled on that fine grid, then averaged over each sensor pixel. It shares no
  discretisation with dpcal. Rendered in tiles of 512 px; at 12 MP and S = 4 it costs about as
  much CPU as the default 8x8 points (about 4 min); use ``--size`` for a quicker look. (The fine
  pixels themselves add 1/(12 S^2) px^2 of blur variance, 0.8 % of sigma 0.8 px's at S = 4.)

Then it runs the CLI and prints the registration RMS, the time, and the kernel relative L2 error
at the fitted nodes (median, worst, per plane) against the truth there in three conventions
(``docs/psf.md``, "Kernel convention"): sampled at pixel centres (dpcal's), band-limited to the
Nyquist frequency and sampled (what a fit can determine; the same as sampled from sigma ~1.2 px
on), and integrated over the pixel (the system PSF; the fit as it is, and converted with
``PSFField.with_pixel_aperture``)::

    python benchmarks/check_psf_independent.py                      # 4000x3000, 31 px, 8x6 (~4 min)
    python benchmarks/check_psf_independent.py --shape comet --points 4
    python benchmarks/check_psf_independent.py --shape astigmatic --pattern RGGB --kernel-size 21
    python benchmarks/check_psf_independent.py --shape astigmatic --pattern RGGB --kernel-size 21 --supersample 4
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


def chart_sampler(chart: np.ndarray, W: int, H: int, rotate: float, persp: float, k1: float):
    """The chart's value at sensor points ``(x, y)``: its own pose, radial distortion, nearest chart pixel."""
    Hc, Wc = chart.shape
    a, sc = np.deg2rad(rotate), 0.9 * W / Wc
    Hm = np.array([[sc * np.cos(a), -sc * np.sin(a), 0], [sc * np.sin(a), sc * np.cos(a), 0],
                   [persp * 2e-6 / sc, -persp * 1.5e-6 / sc, 1.0]])
    p = Hm @ np.array([Wc / 2, Hc / 2, 1.0])
    Hm[0, 2] += (W - 1) / 2 - p[0] / p[2]
    Hm[1, 2] += (H - 1) / 2 - p[1] / p[2]
    Hinv = np.linalg.inv(Hm)
    cx, cy, rn = (W - 1) / 2, (H - 1) / 2, 0.5 * np.hypot(W, H)

    def sample(xd: np.ndarray, yd: np.ndarray) -> np.ndarray:
        xu, yu = xd.copy(), yd.copy()
        for _ in range(8):  # undistort: x_d = c + (x_u - c) (1 + k1 r_u^2)
            f = 1 + k1 * ((xu - cx) ** 2 + (yu - cy) ** 2) / rn**2
            xu, yu = cx + (xd - cx) / f, cy + (yd - cy) / f
        q = Hinv @ np.stack([xu.ravel(), yu.ravel(), np.ones(xu.size)])
        iu = np.floor(q[0] / q[2]).astype(int).reshape(xd.shape)
        iv = np.floor(q[1] / q[2]).astype(int).reshape(xd.shape)
        inside = (iu >= 0) & (iu < Wc) & (iv >= 0) & (iv < Hc)
        val = np.full(xd.shape, 0.25)
        val[inside] = chart[iv[inside], iu[inside]]
        return val

    return sample


def shading(x: np.ndarray, y: np.ndarray, W: int, H: int) -> np.ndarray:
    """Exposure times quadratic vignetting."""
    return 0.8 * (1 - 0.25 * (((x - (W - 1) / 2) ** 2 + (y - (H - 1) / 2) ** 2) / (0.25 * (W * W + H * H))))


def render(sample, W: int, H: int, points: int) -> np.ndarray:
    """Chart reflectance seen by each pixel: the mean of ``points`` x ``points`` point samples."""
    img = np.zeros((H, W))
    for oy in range(points):
        for ox in range(points):
            xd, yd = np.meshgrid(np.arange(W) + (ox + 0.5) / points - 0.5, np.arange(H) + (oy + 0.5) / points - 0.5)
            img += sample(xd, yd)
    return img / points**2


def render_supersampled(sample, W: int, H: int, S: int, points: int, fine: "PSFField", colour: np.ndarray,
                        tile: int = 512) -> np.ndarray:
    """Clean CFA-plane images ``(4, H, W)`` of a physically faithful capture, tile by tile.

    The scene at ``S`` x the sensor resolution (the chart's mean over ``points`` x ``points``
    point samples per fine pixel, shading), blurred there with ``fine`` (the continuous PSFs
    sampled on the fine grid), then averaged over each sensor pixel's ``S`` x ``S`` fine pixels:
    the pixel aperture is applied once, after the optics, as a sensor does.
    """
    from dpcal.physics.optics import apply_psf_field

    m = -(-(fine.kernel_size // 2) // S) + 1  # margin in sensor px: the fine kernel's radius and one more
    # planes with identical kernels are blurred once (Gr and Gb of the astigmatic truth)
    uniq = {}
    for c in range(len(fine.planes)):
        uniq.setdefault(fine.psf[:, :, c].tobytes(), c)
    first = list(uniq.values())
    src = [first.index(uniq[fine.psf[:, :, c].tobytes()]) for c in range(len(fine.planes))]
    kern = fine.psf[:, :, first]
    off = ((np.arange(points) + 0.5) / points - 0.5) / S
    out = np.zeros((len(fine.planes), H, W), np.float32)
    for y0 in range(0, H, tile):
        for x0 in range(0, W, tile):
            y1, x1 = min(H, y0 + tile), min(W, x0 + tile)
            fx = x0 - m + (np.arange((x1 - x0 + 2 * m) * S) + 0.5) / S - 0.5  # fine pixel centres, sensor px
            fy = y0 - m + (np.arange((y1 - y0 + 2 * m) * S) + 0.5) / S - 0.5
            XX, YY = np.meshgrid(fx, fy)
            val = sum(sample(XX + ox, YY + oy) for oy in off for ox in off) / points**2
            scene = ((0.04 + 0.88 * val) * shading(XX, YY, W, H)).astype(np.float32)
            node = fine.node_xy - np.array([(x0 - m) * S, (y0 - m) * S], float)  # tile-local fine pixels
            blurred = apply_psf_field(np.broadcast_to(scene, (len(first),) + scene.shape).copy(),
                                      kernels=kern, node_xy=node, padding="replicate")
            crop = blurred[:, m * S : (m + y1 - y0) * S, m * S : (m + x1 - x0) * S]
            box = crop.reshape(len(first), y1 - y0, S, x1 - x0, S).mean(axis=(2, 4))
            out[:, y0:y1, x0:x1] = box[src] * colour[:, None, None]
    return out


def truth_field(W: int, H: int, K: int, tgx: int, tgy: int, shape: str, *, kind: str = "sampled", fine: int = 1):
    """The true PSF field on its own grid.

    ``kind`` says what a kernel value is: ``sampled``, the continuous PSF at the pixel centre
    (dpcal's convention); ``band-limited``, the PSF low-passed at the sensor's Nyquist
    frequency (ideal filter) at the pixel centre, its ringing (negative below sigma ~1 px)
    clipped: what a fit can determine; ``integrated``, the PSF integrated over the pixel (the
    system PSF). The last two are computed from 16 x 16 samples per pixel. With ``fine`` > 1
    (``sampled`` only) the PSF is sampled on a grid ``fine`` times finer, node coordinates in
    fine pixels, for :func:`render_supersampled`.
    """
    from dpcal.physics.optics import PSFField, gaussian_kernel

    if kind not in ("sampled", "band-limited", "integrated"):
        raise ValueError(f"unknown kind {kind!r}")
    n = fine if kind == "sampled" else 16
    size = K * n + 1 - (K * n) % 2 if kind == "sampled" else K * n
    # kind != sampled: pixel m (offset from the kernel centre) weighs the sub-sample at offset t
    t = (np.arange(K * n) - (K * n - 1) / 2) / n
    m = np.arange(K)[:, None] - (K - 1) / 2
    A = np.sinc(m - t[None, :]) if kind == "band-limited" else (np.abs(m - t[None, :]) < 0.5).astype(float)
    tx, ty = np.linspace(0, W - 1, tgx), np.linspace(0, H - 1, tgy)
    cx, cy, rn = (W - 1) / 2, (H - 1) / 2, 0.5 * np.hypot(W, H)
    psf = np.zeros((tgy, tgx, 4, size if kind == "sampled" else K, size if kind == "sampled" else K), np.float32)
    for j, y in enumerate(ty):
        for i, x in enumerate(tx):
            r, th = np.hypot(x - cx, y - cy) / rn, np.arctan2(y - cy, x - cx)
            e = np.array([np.cos(th), np.sin(th)])
            scales = (1.15, 1.0, 1.0, 1.3) if shape == "astigmatic" else (1.2, 1.0, 1.05, 1.35)
            for c, f in enumerate(scales):
                s1, s2 = (0.8 + 1.6 * r**2) * f * n, (0.8 + 0.5 * r**2) * f * n
                if shape == "comet":  # core inward, faint wide tail outward, centroid zero
                    d = 3.0 * r * n
                    k = (0.75 * gaussian_kernel(size, s1, s2, theta=th, shift=tuple(-d / 3 * e))
                         + 0.25 * gaussian_kernel(size, 1.5 * s1, 1.5 * s2, theta=th, shift=tuple(d * e)))
                else:
                    k = gaussian_kernel(size, s1, s2, theta=th)
                if kind != "sampled":
                    k = np.maximum(A @ k.astype(np.float64) @ A.T, 0)  # kernels are non-negative
                psf[j, i, c] = k / k.sum()
    node = np.stack(np.meshgrid(tx, ty), -1)
    return PSFField(psf, (node + 0.5) * fine - 0.5, sensor_size=(W * fine, H * fine))


def at_nodes(field, node_xy: np.ndarray):
    """``field`` evaluated at other nodes (:meth:`PSFField.kernel_at`)."""
    from dpcal.physics.optics import PSFField

    psf = [[[field.kernel_at(x, y, p) for p in field.planes] for x, y in row] for row in node_xy]
    return PSFField(np.array(psf), node_xy, field.planes, field.sensor_size)


def summary(err: np.ndarray) -> str:
    """Median and worst of ``err[gy, gx, plane]``, where the worst is, and the median per plane."""
    from dpcal.cfa import PLANES

    j, i, c = np.unravel_index(np.argmax(err), err.shape)
    per = ", ".join(f"{p} {100 * np.median(err[..., k]):.2f}" for k, p in enumerate(PLANES))
    return (f"median {100 * np.median(err):.2f} %  worst {100 * err.max():.2f} % (node {j},{i} {PLANES[c]})  "
            f"per plane {per} %")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, nargs=2, default=(4000, 3000), metavar=("W", "H"))
    ap.add_argument("--kernel-size", type=int, default=31)
    ap.add_argument("--grid", type=int, nargs=2, default=(8, 6))
    ap.add_argument("--truth-grid", type=int, nargs=2, default=(16, 12))
    ap.add_argument("--points", type=int, default=None,
                    help="point samples per pixel and axis (per fine pixel with --supersample; default 8, "
                         "with --supersample S: 8 / S rounded up)")
    ap.add_argument("--supersample", type=int, default=1, metavar="S",
                    help="physically faithful rendering: the scene at S x the resolution, blurred there with the "
                         "continuous PSFs, then averaged over each sensor pixel (default 1: blur at pixel resolution "
                         "with the PSFs sampled at pixel centres, dpcal's own discretisation)")
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

    from dpcal.cfa import plane_map
    from dpcal.chart import load_chart
    from dpcal.chart.spec import chart_raster
    from dpcal.io.dng import write_dng
    from dpcal.physics.optics import PSFField, apply_psf_field
    from dpcal.psf.qa import compare_fields

    W, H = a.size
    K, S = a.kernel_size, a.supersample
    points = a.points or -(-8 // S)
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
    sample = chart_sampler(chart_raster(spec).astype(np.float64), W, H, a.rotate, a.perspective, a.k1)
    truth = truth_field(W, H, K, *a.truth_grid, a.shape)
    colour = np.array([{"R": 0.55, "B": 0.7}.get(p, 1.0) for p in truth.planes])
    if S > 1:
        fine = truth_field(W, H, K, *a.truth_grid, a.shape, fine=S)
        planes = render_supersampled(sample, W, H, S, points, fine, colour)
    else:
        XX, YY = np.meshgrid(np.arange(W), np.arange(H))
        scene = (0.04 + 0.88 * render(sample, W, H, points)) * shading(XX, YY, W, H)
        planes = apply_psf_field(np.broadcast_to(scene, (4, H, W)).copy(), truth) * colour[:, None, None]
    clean = np.take_along_axis(planes, plane_map(a.pattern, H, W)[None], 0)[0].astype(np.float64)
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
    band = truth_field(W, H, K, *a.truth_grid, a.shape, kind="band-limited")
    integrated = truth_field(W, H, K, *a.truth_grid, a.shape, kind="integrated")
    sampling = f"supersampled {S}x, {points}x{points} points per fine pixel" if S > 1 else f"{points}x{points} points"
    print(f"{W}x{H} K={K} grid {a.grid[0]}x{a.grid[1]} truth grid {a.truth_grid[0]}x{a.truth_grid[1]} {a.shape} "
          f"{a.pattern} {sampling} {'no noise' if a.noise_free else f'alpha {a.alpha:g} sigma {a.sigma:g}'}: "
          f"registration RMS {doc['registration_rms_px']:.3f} px  fit-psf {dt:.1f} s\n"
          f"kernel rel. L2 at the fitted nodes, against the truth\n"
          f"  sampled at pixel centres (dpcal's convention):    {summary(compare_fields(est, truth))}\n"
          f"  band-limited, sampled (what a fit can determine): {summary(compare_fields(est, band))}\n"
          f"  integrated over the pixel (system PSF):           {summary(compare_fields(est, integrated))}\n"
          f"  the same, the fit converted (with_pixel_aperture): "
          f"{summary(compare_fields(est, integrated, 'integrated'))}\n"
          f"the sampled truth against the integrated one:       "
          f"{summary(compare_fields(at_nodes(truth, est.node_xy), integrated))}")


if __name__ == "__main__":
    main()
