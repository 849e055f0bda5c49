"""make-chart, render-chart and fit-psf through the CLI: exit codes, --json, outputs, errors."""

import json
import shutil

import numpy as np
import pytest

from tests.conftest import ROOT, run_cli


def test_make_chart_cli(tmp_path):
    doc = json.loads(run_cli("make-chart", "psf", "--out", str(tmp_path / "p"), "--size-mm", "120", "90", "--dpi",
                             "150", "--square", "16", "--json").stdout)
    assert doc["kind"] == "psf" and doc["medium"] == "print" and doc["frames"] == ["chart.png"]
    assert doc["noise_cell_mm"] == pytest.approx(2 * 25.4 / 150)  # at least two printer dots per cell
    assert min(doc["frame_margins_mm"]) >= 8.0
    assert (tmp_path / "p" / "chart.json").is_file() and (tmp_path / "p" / "chart.pdf").is_file()
    r = run_cli("make-chart", "psf", "--out", str(tmp_path / "p"), "--size-mm", "120", "90", check=1)
    assert "--overwrite" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("make-chart", "psf", "--out", str(tmp_path / "s"), "--size-mm", "100", "70", "--dpi", "150", check=1)
    assert "--margin-mm" in r.stderr
    doc = json.loads(run_cli("make-chart", "gray", "--out", str(tmp_path / "g"), "--screen", "800", "600",
                             "--square", "12", "--json").stdout)
    assert doc["medium"] == "display" and doc["patches"][-1]["value"] == 1.0
    doc = json.loads(run_cli("make-chart", "psf", "--out", str(tmp_path / "d"), "--screen", "640", "400",
                             "--square", "12", "--frames", "2", "--json").stdout)
    assert len(doc["frames"]) == 5
    r = run_cli("make-chart", "psf", "--out", str(tmp_path / "x"), "--screen", "640", "400", "--size-mm", "1", "1",
                check=2)
    assert "not both" in r.stderr


def test_ready_made_charts_are_valid():
    from dpcal.chart import chart_raster, load_chart, load_chart_image

    dirs = sorted(d for d in (ROOT / "charts").iterdir() if (d / "chart.json").is_file())
    assert dirs
    for d in dirs:
        spec = load_chart(d / "chart.json")
        for i in range(len(spec.frames)):
            # load_chart_image raises when a committed image differs from its spec by > 1e-3
            img = load_chart_image(spec, i)
            assert img.shape == chart_raster(spec, i).shape and 0 <= img.min() and img.max() <= 1


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    d = tmp_path_factory.mktemp("psfcli")
    # rendered, not printed: laid out to the edge, 1-dot cells
    run_cli("make-chart", "psf", "--out", str(d / "chart"), "--size-mm", "62", "46", "--square", "24", "--no-pdf",
            "--cell-px", "1", "--margin-mm", "0")
    doc = json.loads(run_cli("render-chart", "--chart", str(d / "chart" / "chart.json"), "-o", str(d / "cap.dng"),
                             "--size", "800", "600", "--gaussian", "1.3", "--iso", "200", "--fill", "0.9",
                             "--rotate", "1", "--tilt", "4", "-3", "--k1", "-0.04", "--json").stdout)
    assert doc["files"] == [str(d / "cap.dng")]
    return d


def test_fit_psf_cli(rendered, tmp_path):
    d = rendered
    prof = tmp_path / "cam.json"
    shutil.copy(ROOT / "profiles" / "nexus6p-rear.json", prof)
    out = tmp_path / "field.npz"
    doc = json.loads(run_cli("fit-psf", str(d / "cap.dng"), "--chart", str(d / "chart" / "chart.json"), "-o", str(out),
                             "--kernel-size", "15", "--grid", "2", "2", "--plots", str(tmp_path / "plots"),
                             "--attach", str(prof), "--json").stdout)
    assert doc["registration_rms_px"] < 0.05
    assert len(doc["tiles"]) == 2 * 2 * 4 and {"mtf50", "centroid_px", "reduced_chi2"} <= set(doc["tiles"][0])
    with np.load(out) as z:
        assert z["psf"].shape == (2, 2, 4, 15, 15) and z["psf"].dtype == np.float32
        assert z["node_xy"].shape == (2, 2, 2) and list(z["planes"]) == ["R", "Gr", "Gb", "B"]
        np.testing.assert_allclose(z["psf"].sum(axis=(-1, -2)), 1, atol=1e-5)
        from dpcal.psf.estimate import relative_l2
        from dpcal.physics.optics import gaussian_kernel

        assert np.median(relative_l2(z["psf"], gaussian_kernel(15, 1.3))) < 0.06
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "mtf50_map.png", "psf_mosaic_B.png", "psf_mosaic_Gb.png", "psf_mosaic_Gr.png", "psf_mosaic_R.png"]
    assert json.loads(prof.read_text())["psf"] == {"file": "field.npz"}
    shown = json.loads(run_cli("profile", "show", str(prof), "--json").stdout)
    assert shown["psf"]["file"] == "field.npz"
    r = run_cli("fit-psf", str(d / "cap.dng"), "--chart", str(d / "chart" / "chart.json"), "-o", str(out), check=1)
    assert "--overwrite" in r.stderr


def test_fit_psf_cli_bad_input(rendered, tmp_path):
    d = rendered
    blank = tmp_path / "blank.npy"
    np.save(blank, np.full((600, 800), 300, np.uint16))
    out = tmp_path / "f.npz"
    r = run_cli("fit-psf", str(blank), "--pattern", "RGGB", "--bits", "10", "--chart", str(d / "chart" / "chart.json"),
                "-o", str(out), check=1)
    assert "no chart" in r.stderr and "Traceback" not in r.stderr
    assert len([line for line in r.stderr.splitlines() if line.startswith("dpcal: error")]) == 1
    assert not out.exists() and not list(tmp_path.glob(".f.*"))
    r = run_cli("fit-psf", str(d / "cap.dng"), "--chart", str(tmp_path / "nope.json"), "-o", str(out), check=1)
    assert "no such chart spec" in r.stderr and not out.exists()
