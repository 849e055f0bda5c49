"""The chart a user prints: printable margins, the page's label, and a fit that survives a
print cut off at the page edge."""

from __future__ import annotations

import json

import numpy as np

from dpcal.chart import build_spec, chart_raster
from dpcal.chart.geometry import pose_mapping
from dpcal.chart.render import render_capture
from dpcal.io.raw import RawImage
from dpcal.physics.optics import PSFField, gaussian_kernel
from dpcal.psf.fit import fit_psf
from dpcal.psf.qa import compare_fields
from dpcal.psf.tiles import node_grid
from tests.conftest import run_cli


def test_make_chart_print_defaults(tmp_path):
    doc = json.loads(run_cli("make-chart", "psf", "--out", str(tmp_path / "a"), "--json").stdout)
    assert min(doc["frame_margins_mm"]) >= 5.0
    assert doc["cell_px"] == 2 and abs(doc["noise_cell_mm"] - 0.169) < 0.001  # twice a 300-DPI dot
    assert len(doc["chart_id"]) == 10 and doc["seed"] == 0
    pdf = (tmp_path / "a" / "chart.pdf").read_bytes()
    assert f"chart_id={doc['chart_id']} seed=0".encode() in pdf
    # configurable; the id changes with what the chart shows
    doc2 = json.loads(run_cli("make-chart", "psf", "--out", str(tmp_path / "b"), "--margin-mm", "12", "--seed", "3",
                              "--json").stdout)
    assert min(doc2["frame_margins_mm"]) >= 12.0 and doc2["chart_id"] != doc["chart_id"]
    text = run_cli("make-chart", "psf", "--out", str(tmp_path / "c"), "--dpi", "600").stdout
    assert "chart id" in text and "100 mm" in text
    assert json.loads((tmp_path / "c" / "chart.json").read_text())["cell_px"] == 4


def test_page_label_names_chart_and_seed():
    from dpcal.chart.make import page_label

    s = build_spec("psf", size_mm=(297, 210), dpi=300, cell_px=2, margin_mm=8, label_mm=12, seed=7)
    what, how = page_label(s)
    assert s.chart_id in what and "seed 7" in what and "0.17 mm" in what
    assert "100 %" in how and "100 mm" in how


def test_fit_survives_a_print_cut_off_at_the_page_edge():
    """A chart laid out to the page edge, printed by a printer that leaves its outer 3 mm
    blank: the black frame and part of the outer squares are missing; the fit still works."""
    W, H, K = 480, 360, 11
    spec = build_spec("psf", size_mm=(62, 46), dpi=300, square=24)
    raster = chart_raster(spec)
    b = int(round(3.0 / 25.4 * 300))
    raster[:b] = raster[-b:] = 1.0
    raster[:, :b] = raster[:, -b:] = 1.0
    xs, ys = node_grid(W, H, 1, 1)
    psf = np.zeros((1, 1, 4, K, K), np.float32)
    psf[0, 0, :] = gaussian_kernel(K, 1.3, 1.0, theta=0.4)
    truth = PSFField(psf, np.stack(np.meshgrid(xs, ys), -1), sensor_size=(W, H))
    m = pose_mapping(spec.size_px, (W, H), fill=0.9, rotate_deg=1.0, tilt_deg=(3, -2))
    cap = render_capture(raster, m, field=truth, iso=200, rng=5, exposure=0.8)
    raw = RawImage(cap.dn, cap.pattern, tuple(cap.black_level), cap.white_level, iso=200, path="cut.dng")
    res = fit_psf([raw], spec, kernel_size=K, grid=(1, 1))
    err = compare_fields(res.field, truth)
    assert np.max(err) < 0.12, np.round(err, 3)
