"""FITS mosaics and photon-transfer pairs as users have them (real D7000 frames, manifest groups)."""

from __future__ import annotations

import csv
import json
from fractions import Fraction

import numpy as np
import pytest

from dpcal.errors import BadInputError
from dpcal.io.raw import read_exif, read_raw
from dpcal.noise.pairstats import pair_stats, stack_pair_table
from tests.conftest import run_cli

D7000 = "raw/d7000_iso100_flatfield"
# The author's channel names; the crops' CFA is GBRG.
CHANNELS = {"Red": "R", "Green R": "Gr", "Green B": "Gb", "Blue": "B"}


def _write_fits(path, data, **header):
    from astropy.io import fits

    hdu = fits.PrimaryHDU(data)
    for k, v in header.items():
        hdu.header[k] = v
    hdu.writeto(path)


def test_fits_reader_levels_pattern_and_metadata(tmp_path):
    data = np.arange(48, dtype=np.int16).reshape(6, 8) + 100
    _write_fits(tmp_path / "a.fits", data, EXPTIME=0.004, ISOSPEED=200, BAYERPAT="RGGB")
    r = read_raw(tmp_path / "a.fits", bits=14)
    assert r.pattern == "RGGB" and r.white_level == 16383 and r.iso == 200 and r.exposure_time == 0.004
    np.testing.assert_array_equal(r.dn, data)
    assert read_exif(tmp_path / "a.fits")["exposure_time"] == 0.004
    # big-endian unsigned 16-bit (BZERO 32768) comes back as plain uint16 values
    u = np.array([[0, 40000], [65535, 7]], dtype=np.uint16)
    _write_fits(tmp_path / "u.fit", u)
    r = read_raw(tmp_path / "u.fit", pattern="GBRG")
    np.testing.assert_array_equal(r.dn, u)
    assert r.white_level == 65535
    with pytest.raises(BadInputError, match="BAYERPAT.*--pattern"):
        read_raw(tmp_path / "u.fit")


def test_pair_stats_table_counts_every_pair(rng):
    frames = [np.full((8, 8), 50.0) + rng.normal(0, 2, (8, 8)) for _ in range(4)]
    rows = stack_pair_table(frames, ["a", "b", "c", "d"], "RGGB")
    assert len(rows) == 6 * 4
    m, v = pair_stats(frames[0], frames[1], "RGGB")["R"]
    A, B = frames[0][::2, ::2], frames[1][::2, ::2]
    assert v == pytest.approx(np.var(A - B, ddof=1) / 2, rel=1e-12)


def _d7000_manifest(folder, out):
    """file,iso,kind,exposure,group from the author's condition table (aperture in the group)."""
    cond = {r["cond"]: r for r in csv.DictReader(open(folder / "photo_cond.csv"))}
    crop_cond = {}
    for r in csv.DictReader(open(folder / "var.csv")):
        crop_cond[r["pict1"]] = crop_cond[r["pict2"]] = r["cond"]
    with open(out, "w") as f:
        f.write("file,iso,kind,exposure,group\n")
        for name, c in sorted(crop_cond.items()):
            pc = cond[c]
            t = float(Fraction(pc["shutter.speed"]))
            f.write(f"{folder / name},{pc['ISO']},flat,{t:.6g},{pc['shutter.speed']} f/{pc['aperture']}\n")
    return len(crop_cond)


def test_d7000_pairs_reproduce_the_authors_table(shared_data, tmp_path):
    """fit-noise --method pairs on the real FITS crops: every per-pair mean and variance of the
    author's var.csv, exactly (no crop, no dark subtraction, n-1 normalisation)."""
    folder = shared_data / D7000
    n = _d7000_manifest(folder, tmp_path / "m.csv")
    assert n == 245
    r = run_cli("fit-noise", "--method", "pairs", "--manifest", str(tmp_path / "m.csv"), "--pattern", "GBRG",
                "--bits", "14", "--json")
    rep = json.loads(r.stdout)
    ours = {}
    for cap in rep["captures"]:
        for row in cap["pair_stats"]:
            ours[(frozenset((row["file_a"], row["file_b"])), row["plane"])] = (row["mean"], row["var"])
    theirs = list(csv.DictReader(open(folder / "var.csv")))
    assert len(theirs) == 2440 == len(ours)
    for t in theirs:
        m, v = ours[(frozenset((t["pict1"], t["pict2"])), CHANNELS[t["channel"]])]
        assert m == pytest.approx(float(t["mean"]), rel=1e-12, abs=1e-9)
        assert v == pytest.approx(float(t["var"]), rel=1e-9)
    # The fit: K = alpha * 16383 DN/e-, near the author's 0.38 (green) and 0.43 (red, blue).
    K = {f["plane"]: f["alpha"] * 16383 for f in rep["fits"]}
    assert 0.34 < K["Gr"] < 0.44 and 0.34 < K["Gb"] < 0.44
    assert 0.39 < K["R"] < 0.5 and 0.39 < K["B"] < 0.5
