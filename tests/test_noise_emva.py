"""EMVA 1288 data-sheet figures, Windows descriptors, warnings, monochrome profiles."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from dpcal.errors import BadInputError
from dpcal.noise.emva import emva1288_metrics, linearity
from dpcal.noise.pairs import fit_emva, read_emva_descriptor
from tests.conftest import ROOT
from tests.test_noise_pairs import _write_emva_set


def test_windows_descriptor_and_metrics_against_truth(tmp_path):
    """Backslash paths are read; the figures match the simulated camera: QE 60 %, PRNU 1 %,
    DSNU 1.5 DN, dark noise 2.5 DN (+ quantisation), a linear sensor."""
    path = _write_emva_set(tmp_path, windows=True, spatial=16, dsnu_dn=1.5)
    assert "i images\\b_000_0.png" in path.read_text()
    r = fit_emva(path)
    m = r["emva1288"]
    assert abs(r["K"] / 0.25 - 1) < 0.01
    assert abs(m["QE"] / 60.0 - 1) < 0.01
    assert abs(m["PRNU1288"] / 1.0 - 1) < 0.1
    assert abs(m["DSNU1288_DN"] / 1.5 - 1) < 0.1 and abs(m["DSNU1288"] - m["DSNU1288_DN"] / r["K"]) < 1e-12
    assert abs(m["sigma_d"] - 2.5 / 0.25) / 10.0 < 0.05
    assert abs(m["LE_min"]) < 1.0 and abs(m["LE_max"]) < 1.0
    # no saturation in this series: the highest step is the saturation point
    assert m["u_p_sat"] == 6000.0 and abs(m["u_e_sat"] / 3600 - 1) < 0.01
    assert abs(m["SNR_max_dB"] - 20 * np.log10(np.sqrt(m["u_e_sat"]))) < 1e-9
    assert m["notes"] == []


def test_descriptor_still_missing_names_folder(tmp_path):
    path = _write_emva_set(tmp_path, steps=3, windows=True)
    (tmp_path / "images" / "b_001_1.png").unlink()
    with pytest.raises(BadInputError, match=r"1 of 12 image.*b_001_1.png.*relative to the descriptor"):
        read_emva_descriptor(path)


def test_metrics_undetermined_are_nan_with_a_note_and_no_warning():
    up = np.linspace(100, 2000, 10)
    with np.errstate(all="raise"):
        m = emva1288_metrics(np.zeros(10), up, np.zeros(10), K=0.3, sigma_y_dark=0.2, sat_index=9, sens_max_index=6,
                             spatial_dark={"mean": 10.0, "s2": -0.01, "L": 8},
                             spatial_bright={"mean": 10.0, "s2": -0.02, "L": 8})
    assert np.isnan(m["QE"]) and np.isnan(m["sigma_d"]) and np.isnan(m["DSNU1288"]) and np.isnan(m["PRNU1288"])
    assert len(m["notes"]) == 4
    assert np.isnan(linearity(up, up, 0)["LE_min"])


def test_emva_cli_no_warning_and_monochrome_profile(tmp_path):
    """`--emva` under `python -W error` (any NumPy RuntimeWarning fails), text report with the
    EMVA figures, and a profile that says monochrome and carries the dark offset."""
    import subprocess

    path = _write_emva_set(tmp_path, steps=8, windows=True, spatial=4)
    out = tmp_path / "cam.json"
    r = subprocess.run([sys.executable, "-W", "error", "-m", "dpcal", "fit-noise", "--emva", str(path), "--iso", "100",
                        "-o", str(out), "--plots", str(tmp_path / "figs")], capture_output=True, text=True, cwd=ROOT,
                       env={"DPCAL_QUIET": "1", "PATH": "/usr/bin:/bin", "MPLBACKEND": "Agg"})
    assert r.returncode == 0, r.stderr
    assert "Warning" not in r.stderr
    import re

    qe = float(re.search(r"QE ([0-9.]+) %", r.stdout).group(1))
    assert abs(qe - 60) < 1.5 and "PRNU" in r.stdout and "dynamic range" in r.stdout
    doc = json.loads(out.read_text())
    assert doc["sensor"]["monochrome"] is True
    assert all(abs(b - 12.0) < 0.05 for b in doc["sensor"]["black_level"])


def test_emva_reference_figures(shared_data):
    """The real CCD set: every data-sheet figure as the reference implementation computes it."""
    folder = shared_data / "emva1288_ccd12"
    ref = json.loads((folder / "emva1288_reference_results.json").read_text())
    m = fit_emva(folder / "EMVA1288_Data.txt")["emva1288"]
    for k in ("R", "QE", "u_p_sat", "u_e_sat", "SNR_max_dB", "DR_dB", "u_p_min", "DSNU1288", "DSNU1288_DN",
              "PRNU1288", "sigma_d"):
        assert m[k] == pytest.approx(ref[k], rel=1e-4), k
    for k in ("LE_min", "LE_max"):
        assert m[k] == pytest.approx(ref[k], abs=1e-6), k
