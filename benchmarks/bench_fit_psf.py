"""Benchmark: PSF field estimation on a 12-megapixel synthetic capture (speed and accuracy).

Renders (once, cached in --tmpdir) a 4000 x 3000 capture of the A4 PSF chart through a known,
smoothly varying PSF field (8 x 6 nodes, 31 x 31 kernels; astigmatic Gaussians up to about
15 px wide in the corners, widths and orientations varying over the field, lateral colour: R
and B shifted in opposite directions), a realistic pose (rotation, tilt, barrel distortion),
cos^4 vignetting, white balance and Poisson-Gaussian noise of the nexus6p-rear profile at the
given ISO. Then fits it twice in the same process:

* ``baseline``: independent tiles with the first-order (gradient) Tikhonov prior of
  docs/method.md section 3 as written, no field model;
* ``dpcal``: the default fit (Laplacian prior, field model consistent with the bilinear
  product convolution, smoothing across the grid).

Prints the wall time of each, their ratio, registration RMS and the relative L2 kernel error
(median and worst node over all planes). Usage::

    python benchmarks/bench_fit_psf.py --iso 100 --iso 800 [--tmpdir /tmp/dpcal-bench] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

W, H, GX, GY, K = 4000, 3000, 8, 6, 31


def truth_field():
    from dpcal.physics.optics import PSFField, gaussian_kernel
    from dpcal.psf.tiles import node_grid

    xs, ys = node_grid(W, H, GX, GY)
    psf = np.zeros((GY, GX, 4, K, K), np.float32)
    R = 0.5 * np.hypot(W, H)
    for j, y in enumerate(ys):
        for i, x in enumerate(xs):
            dx, dy = x - (W - 1) / 2, y - (H - 1) / 2
            r, th = np.hypot(dx, dy) / R, np.arctan2(dy, dx)
            for c, f in enumerate((1.1, 1.0, 1.0, 1.2)):
                s_rad = (0.9 + 1.6 * r**2) * f  # sagittal/tangential blur grow off axis
                s_tan = (0.9 + 0.8 * r**2) * f
                sh = {0: 0.3 * r, 3: -0.3 * r}.get(c, 0.0)  # lateral colour
                psf[j, i, c] = gaussian_kernel(K, s_rad, s_tan, theta=th, shift=(sh * np.cos(th), sh * np.sin(th)))
    return PSFField(psf, np.stack(np.meshgrid(xs, ys), -1), sensor_size=(W, H))


def make_capture(tmp: Path, iso: float):
    from dpcal.chart import chart_raster, make_chart, load_chart
    from dpcal.chart.geometry import pose_mapping
    from dpcal.chart.render import render_capture, write_capture

    chart_dir = tmp / "chart"
    if not (chart_dir / "chart.json").exists():
        make_chart("psf", chart_dir, size_mm=(297, 210), dpi=300, pdf=False)
    spec = load_chart(chart_dir / "chart.json")
    field = truth_field()
    dng = tmp / f"capture_iso{iso:g}.dng"
    if not dng.exists():
        t = time.time()
        m = pose_mapping(spec.size_px, (W, H), fill=0.88, rotate_deg=1.5, tilt_deg=(5, -4), k1=-0.05, k2=0.01)
        cap = render_capture(chart_raster(spec), m, field=field, iso=iso, rng=int(iso), supersample=2)
        write_capture(dng, cap)
        print(f"rendered {dng} in {time.time() - t:.0f} s", file=sys.stderr)
    return spec, field, dng


def run(spec, field, dng, **kw):
    from dpcal.io.raw import read_raw
    from dpcal.psf.fit import fit_psf
    from dpcal.psf.qa import compare_fields

    t = time.time()
    res = fit_psf([read_raw(dng)], spec, kernel_size=K, grid=(GX, GY), **kw)
    dt = time.time() - t
    err = compare_fields(res.field, field)  # truth evaluated at the fitted field's nodes
    return {"seconds": dt, "registration_rms_px": res.summary["registration_rms_px"],
            "median_rel_l2": float(np.median(err)), "worst_rel_l2": float(err.max()),
            "median_rel_l2_per_plane": [float(v) for v in np.median(err.reshape(-1, 4), axis=0)],
            "worst_node": [int(v) for v in np.unravel_index(np.argmax(err), err.shape)],
            "node_region": res.summary["node_region"]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iso", type=float, action="append", help="ISO(s) to test (default 100 and 800)")
    ap.add_argument("--tmpdir", default=os.environ.get("TMPDIR", "/tmp") + "/dpcal-bench-psf")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    tmp = Path(a.tmpdir)
    tmp.mkdir(parents=True, exist_ok=True)
    out = []
    for iso in a.iso or [100.0, 800.0]:
        spec, field, dng = make_capture(tmp, iso)
        row = {"iso": iso, "size": [W, H], "grid": [GX, GY], "kernel_size": K}
        if not a.no_baseline:
            row["baseline"] = run(spec, field, dng, prior="gradient", field_iterations=0, smooth=False,
                                  pool_green=False)
        row["dpcal"] = run(spec, field, dng)
        if "baseline" in row:
            row["time_ratio_dpcal_over_baseline"] = row["dpcal"]["seconds"] / row["baseline"]["seconds"]
        out.append(row)
        if not a.json:
            for name in ("baseline", "dpcal"):
                if name in row:
                    r = row[name]
                    print(f"ISO {iso:5g} {name:8s}: {r['seconds']:6.1f} s  registration RMS {r['registration_rms_px']:.3f} px  "
                          f"kernel rel. L2 median {100 * r['median_rel_l2']:.2f} %  worst {100 * r['worst_rel_l2']:.2f} %")
            if "time_ratio_dpcal_over_baseline" in row:
                print(f"ISO {iso:5g} time ratio dpcal / baseline: {row['time_ratio_dpcal_over_baseline']:.2f}")
    if a.json:
        print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
