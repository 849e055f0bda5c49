"""fit-noise on captures that break its model: right answers, or findings that say why not."""

from __future__ import annotations

import numpy as np
import pytest

from dpcal.errors import FitError
from dpcal.workflows.fit_noise import run_fit_noise
from dpcal.testing.captures import gray_chart, synthetic_capture

H, W = 544, 816
ALPHA = {"R": 2.4e-4, "Gr": 1.5e-4, "Gb": 1.5e-4, "B": 3.0e-4}
SIGMA = {"R": 1.1e-3, "Gr": 8.0e-4, "Gb": 8.0e-4, "B": 1.3e-3}


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("DPCAL_QUIET", "1")


def _chart(tmp_path, name, clean, seed=0, black=64.0):
    dn = synthetic_capture(clean, "RGGB", ALPHA, SIGMA, black_level=black, white_level=4095, rng=seed)
    p = tmp_path / f"{name}.npy"
    np.save(p, dn.astype(np.uint16))
    return p


def _clean(rng=None, prnu=0.0):
    clean, _ = gray_chart(H, W, np.linspace(0.03, 0.92, 24), background=0.1)
    if prnu:
        clean = clean * (1 + prnu * rng.standard_normal(clean.shape))
    return clean


def _honest(rep, truth, z=3.0):
    """Each plane either covers the truth within z std or carries a finding."""
    flagged = {w["plane"] for w in rep.get("warnings", [])}
    for f in rep["fits"]:
        pull = (f["alpha"] - truth[f["plane"]]) / f["alpha_std"]
        assert abs(pull) < z or f["plane"] in flagged or None in flagged, (f["plane"], f["alpha"], pull)


def test_prnu_chart_models_the_term(tmp_path, rng):
    p = _chart(tmp_path, "prnu", _clean(rng, 0.01))
    rep = run_fit_noise([str(p)], iso=100, raw_kw={"pattern": "RGGB", "bits": 12, "black_level": 64})
    for f in rep["fits"]:
        assert f["prnu_modelled"], f["plane"]
        assert abs(f["prnu"] - 0.01) < 0.003
        assert abs(f["alpha"] / ALPHA[f["plane"]] - 1) < 0.05
    _honest(rep, ALPHA)
    assert "chart (24 patches used" in rep["summary"][0]["scene"]
    # Without the term: the line bends, and the checks say so.
    off = run_fit_noise([str(p)], iso=100, prnu="off", raw_kw={"pattern": "RGGB", "bits": 12, "black_level": 64})
    codes = {w["code"] for w in off["warnings"]}
    assert codes & {"prnu_unmodelled", "residual_trend"}
    assert all(f["alpha"] > ALPHA[f["plane"]] for f in off["fits"])  # the bend lifts alpha


def test_unknown_pedestal_is_reported_with_a_hint(tmp_path):
    p = _chart(tmp_path, "ped", _clean())
    # The data's black level is 64 DN; the fitter is told 0 (a headerless file's default).
    rep = run_fit_noise([str(p)], iso=100, raw_kw={"pattern": "RGGB", "bits": 12})
    codes = [w["code"] for w in rep["warnings"]]
    assert "black_unknown" in codes
    ped = [w for w in rep["warnings"] if w["code"] == "negative_read_variance"]
    assert ped, codes
    for w in ped:
        assert 20 < w["pedestal_min_dn"] <= 70 and "--black" in w["message"]
    truth = {k: v * (4095 - 64) / 4095 for k, v in ALPHA.items()}  # the fit's units run from 0
    _honest(rep, truth)
    with pytest.raises(FitError, match="refused .--strict."):
        run_fit_noise([str(p)], iso=100, strict=True, raw_kw={"pattern": "RGGB", "bits": 12})


def test_dominant_textured_wall_does_not_outweigh_the_patches(tmp_path, rng):
    from scipy.ndimage import gaussian_filter

    small, _ = gray_chart(H // 2, W, np.linspace(0.03, 0.92, 24), background=0.1)
    g = gaussian_filter(rng.standard_normal((H - H // 2, W)), 1.5)
    wall = 0.85 * (1 + 0.03 * g / g.std())
    p = _chart(tmp_path, "wall", np.vstack([small, wall]))
    rep = run_fit_noise([str(p)], iso=100, raw_kw={"pattern": "RGGB", "bits": 12, "black_level": 64})
    assert "background regions ignored" in rep["summary"][0]["scene"]
    for f in rep["fits"]:
        assert abs(f["alpha"] / ALPHA[f["plane"]] - 1) < 0.06
    _honest(rep, ALPHA)


def test_bernoulli_noise_chart_as_gray_capture(tmp_path, rng):
    """A PSF chart's blurred binary noise is texture, not flat: no confident wrong answer."""
    from scipy.ndimage import gaussian_filter

    cells = rng.integers(0, 2, (H, W)).astype(float)
    clean = 0.1 + 0.7 * gaussian_filter(cells, 0.8)
    yy, xx = np.mgrid[0:H, 0:W]
    clean *= 1 - 0.3 * (((yy - H / 2) / H) ** 2 + ((xx - W / 2) / W) ** 2)
    p = _chart(tmp_path, "bern", clean)
    try:
        rep = run_fit_noise([str(p)], iso=100, raw_kw={"pattern": "RGGB", "bits": 12, "black_level": 64})
    except FitError as e:  # a refusal with a reason is an honest outcome
        assert "texture" in str(e) or "level" in str(e)
        return
    _honest(rep, ALPHA)


def test_colorchecker_within_independent_estimate(shared_data):
    """The real ColorChecker: per plane near the variance of a high-pass residual on the six
    gray patches (line + PRNU term), the patches found and used, the unknown black level named."""
    raw = shared_data / "raw" / "infiniteisp_colorchecker_1920x1080_bggr.raw"
    rep = run_fit_noise([str(raw)], iso=100, raw_kw={"pattern": "BGGR", "bits": 12, "width": 1920, "height": 1080})
    dn = np.fromfile(raw, dtype="<u2").reshape(1080, 1920).astype(np.float64)
    centres = [(292, 426), (358, 430), (427, 432), (499, 434), (570, 434), (640, 435)]
    offsets = {"R": (1, 1), "Gr": (1, 0), "Gb": (0, 1), "B": (0, 0)}
    fits = {f["plane"]: f for f in rep["fits"]}
    for name, (r, c) in offsets.items():
        plane = dn[r::2, c::2]
        m, v = [], []
        for x, y in centres:
            w = plane[y - 22 : y + 22, x - 22 : x + 22]
            res = w[1:-1, 1:-1] - (w[:-2, 1:-1] + w[2:, 1:-1] + w[1:-1, :-2] + w[1:-1, 2:]) / 4
            m.append(w.mean())
            v.append(res.var() / 1.25)
        m, v = np.array(m), np.array(v)
        X = np.stack([m, np.ones_like(m), m * m], 1) / v[:, None]
        a = np.linalg.lstsq(X, np.ones_like(m), rcond=None)[0][0] / 4092
        f = fits[name]
        assert f["prnu_modelled"] and 0.008 < f["prnu"] < 0.016
        assert abs(f["alpha"] / a - 1) < (0.2 if name == "Gb" else 0.1), (name, f["alpha"], a)
    assert "chart (" in rep["summary"][0]["scene"] and "patches used" in rep["summary"][0]["scene"]
    assert any(w["code"] == "black_unknown" for w in rep["warnings"])


def test_blackmagic_natural_photo_findings(shared_data):
    """A natural photo: the checks flag what the error bars alone would hide."""
    rep = run_fit_noise([str(shared_data / "raw" / "imageio_Blackmagic.dng")], iso=100)
    codes = {w["code"] for w in rep["warnings"]}
    assert "green_mismatch" in codes
    assert "natural scene" in rep["summary"][0]["scene"]
    gr, gb = (next(f for f in rep["fits"] if f["plane"] == p) for p in ("Gr", "Gb"))
    # widened until the two greens agree within 2 combined std
    assert abs(gr["alpha"] - gb["alpha"]) <= 2.0001 * np.hypot(gr["alpha_std"], gb["alpha_std"])
