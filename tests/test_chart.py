"""Charts: layout and spec, files, camera model, rasterisation, registration."""

import json

import numpy as np
import pytest

from dpcal.chart import build_spec, chart_raster, load_chart, load_chart_image, make_chart
from dpcal.chart.geometry import LensMapping, fit_lens_mapping, pose_mapping
from dpcal.chart.locate import locate_chart
from dpcal.chart.render import band_limit, rasterize, render_capture
from dpcal.chart.spec import ChartSpec, noise_bits
from dpcal.errors import BadInputError, FitError
from dpcal.physics.optics import PSFField, gaussian_kernel


def test_noise_bits_reproducible_and_balanced():
    a = noise_bits(7, 0, 300, 200)
    np.testing.assert_array_equal(a, noise_bits(7, 0, 300, 200))
    assert not np.array_equal(a, noise_bits(7, 1, 300, 200))  # independent display frames
    p = a.mean()
    assert abs(p - 0.5) < 4 * np.sqrt(0.25 / a.size)  # Bernoulli(0.5) within 4 standard errors


@pytest.mark.parametrize("kind", ["psf", "gray"])
def test_spec_round_trip_and_layout(kind):
    s = build_spec(kind, size_mm=(150, 100), dpi=200, square=20)
    t = ChartSpec.from_dict(json.loads(json.dumps(s.to_dict())))
    np.testing.assert_array_equal(chart_raster(s), chart_raster(t))
    img = chart_raster(s)
    # Every X-corner has the recorded polarity: lower-right and upper-left squares equal to it.
    for (x, y), pol in zip(s.corners.astype(int), s.corner_polarity):
        assert img[y + 2, x + 2] == pol and img[y - 3, x - 3] == pol
        assert img[y - 3, x + 2] == 1 - pol and img[y + 2, x - 3] == 1 - pol
    # The key block makes the chart differ from its 180-degree rotation.
    assert not np.array_equal(img, img[::-1, ::-1])


def test_spec_validation_errors():
    d = build_spec("psf", size_mm=(150, 100), dpi=200, square=20).to_dict()
    with pytest.raises(BadInputError, match="not a dpcal chart"):
        ChartSpec.from_dict({"kind": "psf"})
    bad = dict(d, schema_version=99)
    with pytest.raises(BadInputError, match="version 99"):
        ChartSpec.from_dict(bad)
    bad = json.loads(json.dumps(d))
    bad["noise"]["cells"][0] += 1
    with pytest.raises(BadInputError, match="does not hold"):
        ChartSpec.from_dict(bad)
    bad = json.loads(json.dumps(d))
    bad["noise"]["sha256"] = ["0" * 64]
    with pytest.raises(BadInputError, match="checksum"):
        chart_raster(ChartSpec.from_dict(bad))
    with pytest.raises(BadInputError, match="too small"):
        build_spec("psf", size_mm=(20, 20), dpi=100, square=40)


def test_make_chart_files(tmp_path):
    s = make_chart("psf", tmp_path / "c", size_mm=(100, 70), dpi=150, square=16)
    names = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert names == ["chart.json", "chart.pdf", "chart.png"]
    spec = load_chart(tmp_path / "c" / "chart.json")
    np.testing.assert_array_equal(load_chart_image(spec), chart_raster(s))
    # The PDF page has the chart's physical size (points = mm / 25.4 * 72).
    pdf = (tmp_path / "c" / "chart.pdf").read_bytes()
    box = [float(v) for v in pdf.split(b"/MediaBox")[1].split(b"[")[1].split(b"]")[0].split()]
    assert box[2] == pytest.approx(100 / 25.4 * 72, abs=0.5) and box[3] == pytest.approx(70 / 25.4 * 72, abs=0.5)
    with pytest.raises(BadInputError, match="`overwrite=True`"):
        make_chart("psf", tmp_path / "c", size_mm=(100, 70), dpi=150, square=16)


def test_display_frames(tmp_path):
    s = make_chart("psf", tmp_path / "d", screen=(640, 400), square=12, n_noise_frames=3)
    roles = [f["role"] for f in s.frames]
    assert roles == ["geometry", "black", "white", "noise", "noise", "noise"]
    assert chart_raster(s, 1).max() == 0 and chart_raster(s, 2).min() == 1
    n0, n1 = chart_raster(s, 3), chart_raster(s, 4)
    x0, y0, x1, y1 = s.noise["rect"]
    assert np.mean(n0[y0:y1, x0:x1] != n1[y0:y1, x0:x1]) == pytest.approx(0.5, abs=0.05)
    # a noise cell spans cell_px = 2 screen pixels
    assert np.all(n0[y0:y1:2, x0:x1] == n0[y0 + 1 : y1 : 2, x0:x1])
    assert len(s.layout["geometry_corners"]) > len(s.corners)


def test_gray_chart_patches():
    s = build_spec("gray", size_mm=(200, 150), dpi=100, square=16, n_patches=12)
    vals = [p["value"] for p in s.patches]
    assert vals == sorted(vals) and vals[0] == 0.0 and vals[-1] == 1.0 and s.patches[-1]["clipped_white"]
    img = chart_raster(s)
    for p in s.patches:
        x0, y0, x1, y1 = p["rect"]
        assert np.all(img[y0:y1, x0:x1] == np.float32(p["value"]))


@pytest.mark.parametrize("dist", [dict(), dict(k1=-0.08, k2=0.02), dict(k1=0.05, p1=0.002, p2=-0.001)])
def test_lens_mapping_inverse(dist):
    m = pose_mapping((800, 600), (1000, 800), fill=0.9, rotate_deg=5, tilt_deg=(10, -8), **dist)
    P = np.random.default_rng(0).random((500, 2)) * [800, 600]
    np.testing.assert_allclose(m.inverse(m.forward(P)), P, atol=1e-6)


def test_fit_lens_mapping_with_noise_and_outliers(rng):
    true = pose_mapping((800, 600), (1000, 800), fill=0.9, rotate_deg=3, tilt_deg=(8, 4), k1=-0.07, k2=0.015)
    P = np.stack(np.meshgrid(np.linspace(0, 800, 15), np.linspace(0, 600, 11)), -1).reshape(-1, 2)
    x = true.forward(P) + 0.03 * rng.standard_normal((len(P), 2))
    x[[5, 50]] += 4.0  # two bad corners
    fit = fit_lens_mapping(P, x, (1000, 800))
    assert not fit.inliers[5] and not fit.inliers[50] and fit.inliers.sum() == len(P) - 2
    assert fit.rms_px == pytest.approx(0.03 * np.sqrt(2), rel=0.2)
    grid = np.random.default_rng(1).random((200, 2)) * [800, 600]
    err = np.linalg.norm(fit.mapping.forward(grid) - true.forward(grid), axis=1)
    assert np.sqrt(np.mean(err**2)) < 0.02 and fit.model_rms_px < 0.02


def test_rasterize_is_pixel_area_average():
    rng = np.random.default_rng(3)
    chart = (rng.random((120, 160)) > 0.5).astype(np.float64)
    # identity placement: a sensor pixel centred on integer (x, y) covers chart [x-0.5+0.5 ...]
    ident = LensMapping(np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]]), (160, 120))
    np.testing.assert_allclose(rasterize(chart, ident, (10, 10, 150, 110)), chart[10:110, 10:150], atol=1e-6)
    # rotated and scaled: compare with brute-force point supersampling (32 x 32 per pixel)
    m = pose_mapping((160, 120), (100, 80), fill=0.8, rotate_deg=4)
    fast = rasterize(chart, m, (30, 25, 60, 50), supersample=3)
    xs = np.arange(30, 60)[None, :, None, None] + (np.arange(32)[None, None, None, :] + 0.5) / 32 - 0.5
    ys = np.arange(25, 50)[:, None, None, None] + (np.arange(32)[None, None, :, None] + 0.5) / 32 - 0.5
    X, Y = np.broadcast_arrays(xs, ys)
    P = m.inverse(np.stack([X, Y], -1))
    brute = chart[P[..., 1].astype(int), P[..., 0].astype(int)].mean(axis=(2, 3))
    assert np.abs(fast - brute).max() < 0.04 and np.abs(fast - brute).mean() < 0.006


def test_rasterize_subpixels():
    rng = np.random.default_rng(4)
    chart = (rng.random((120, 160)) > 0.5).astype(np.float64)
    # a chart pixel images to half a sensor pixel: 2 x 2 sub-pixels are the chart's pixels
    half = LensMapping(np.array([[0.5, 0, -0.5], [0, 0.5, -0.5], [0, 0, 1]]), (80, 60))
    sub = rasterize(chart, half, (5, 5, 75, 55), supersample=2, subpixels=True)
    np.testing.assert_allclose(sub, chart[10:110, 10:150], atol=1e-6)
    np.testing.assert_allclose(sub.reshape(50, 2, 70, 2).mean(axis=(1, 3)),
                               rasterize(chart, half, (5, 5, 75, 55), supersample=2), atol=1e-6)


def test_band_limit_removes_aliases():
    n, s = 64, 2
    x = (np.arange(n * s) + 0.5) / s - 0.5  # sub-pixel centres, pixels
    for f, keep in [(0.25, True), (0.75, False)]:  # below and above the Nyquist frequency (0.5 cycles/px)
        sub = np.tile(np.cos(2 * np.pi * f * x), (n * s, 1))
        mean = sub.reshape(n, s, n, s).mean(axis=(1, 3))  # the plain pixel averages alias 0.75 to 0.25
        assert np.abs(mean).max() > 0.2
        np.testing.assert_allclose(band_limit(sub, s), mean if keep else 0 * mean, atol=1e-5)
    sub = np.random.default_rng(0).random((n * s, n * s))
    sub[:20, :7] = np.nan
    u = band_limit(sub, s)
    assert np.isnan(u[:10, :4]).all() and np.isfinite(u[10:]).all() and np.isfinite(u[:, 4:]).all()


@pytest.fixture(scope="module")
def small_chart():
    return build_spec("psf", size_mm=(62, 46), dpi=300, square=24)


def test_locate_chart_registration(small_chart):
    m = pose_mapping(small_chart.size_px, (800, 600), fill=0.9, rotate_deg=178.0, tilt_deg=(6, -4), k1=-0.06)
    k = gaussian_kernel(9, 1.2)
    lens = PSFField(np.broadcast_to(k, (1, 1, 4, 9, 9)).copy(), np.zeros((1, 1, 2)))
    cap = render_capture(chart_raster(small_chart), m, field=lens, iso=400, rng=5)
    y = (cap.dn.astype(np.float32) - 64) / (1023 - 64)
    loc = locate_chart(y, cap.pattern, small_chart)  # upside down: the key block sets the orientation
    assert loc.rms_px < 0.05
    grid = np.stack(np.meshgrid(np.linspace(150, 600, 9), np.linspace(150, 400, 7)), -1).reshape(-1, 2)
    err = np.linalg.norm(loc.mapping.forward(grid) - m.forward(grid), axis=1)
    assert err.max() < 0.05


@pytest.mark.parametrize(
    "case,msg",
    [("out", "partly out of frame"), ("none", "no chart"), ("other", "no chart matching|corners")],
)
def test_locate_chart_errors(small_chart, case, msg):
    rng = np.random.default_rng(0)
    if case == "none":
        y = 0.3 + 0.1 * rng.random((600, 800)).astype(np.float32)
        spec = small_chart
    else:
        shift = (0.12, 0.0) if case == "out" else (0.0, 0.0)
        m = pose_mapping(small_chart.size_px, (800, 600), fill=0.95, shift=shift)
        cap = render_capture(chart_raster(small_chart), m, iso=100, rng=1)
        y = (cap.dn.astype(np.float32) - 64) / (1023 - 64)
        # another chart: same size, other checker squares
        spec = small_chart if case == "out" else build_spec("psf", size_mm=(62, 46), dpi=300, square=16)
    with pytest.raises((BadInputError, FitError), match=msg):
        locate_chart(y, "BGGR", spec)
