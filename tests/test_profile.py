import copy
import json

import numpy as np
import pytest

from dpcal.cfa import PLANES
from dpcal.errors import BadInputError, BadProfileError
from dpcal.profile import (
    Profile,
    eval_iso_model,
    fit_iso_model,
    leave_one_iso_out,
    list_profiles,
    load_profile,
    new_profile,
    validate_profile,
)

BUNDLED = [
    "nexus6p-rear", "nexus6p-front", "semco", "ov2740", "pixel",
    "eld-sonya7s2", "eld-nikond850", "eld-canoneos5d4", "eld-canoneos70d", "eld-canoneos700d",
    "sidd-ip", "sidd-gp", "sidd-s6", "sidd-n6", "sidd-g4",
]


def test_every_bundled_profile_loads_and_validates():
    ids = {p["id"] for p in list_profiles()}
    assert set(BUNDLED) <= ids
    for pid in BUNDLED:
        p = load_profile(pid)
        assert validate_profile(p.doc) == []
        assert p.doc["provenance"]["citation"]


@pytest.mark.parametrize("lux,alpha,sigma", [(3, 0.1248, 0.3155), (6, 0.06241, 0.1578), (200, 0.0018724, 0.004733)])
def test_reference_light_model(lux, alpha, sigma):
    n = load_profile("nexus6p-rear").noise(lux=lux)
    for plane in PLANES:
        assert n.alpha[plane] == pytest.approx(alpha, rel=5e-4)
        assert n.sigma[plane] == pytest.approx(sigma, rel=5e-4)


def test_lux_table_matches_reference(shared_data):
    import csv

    ids = {"Nexus_6P_rear": "nexus6p-rear", "Nexus_6P_front": "nexus6p-front", "SEMCO": "semco", "OV2740": "ov2740"}
    with open(shared_data / "published_noise" / "lux_table.csv") as f:
        for row in csv.DictReader(f):
            n = load_profile(ids[row["sensor"]]).noise(lux=float(row["lux"]))
            assert n.alpha["R"] == pytest.approx(float(row["alpha"]), rel=1e-4)
            assert n.sigma["Gb"] == pytest.approx(float(row["sigma"]), rel=1e-4)
            assert n.iso == pytest.approx(float(row["iso_equiv"]), rel=1e-4)


def test_bundled_files_match_generator(shared_data):
    from dpcal.profile.published import build_all

    for p in build_all(shared_data / "published_noise"):
        bundled = load_profile(p.id).doc
        for key in ("sensor", "noise", "light"):
            assert json.loads(json.dumps(p.doc[key])) == bundled[key], (p.id, key)


def test_sidd_and_eld_conversion(shared_data):
    # SIDD: var = beta1 x + beta2  ->  alpha = beta1, sigma = sqrt(beta2)
    n = load_profile("sidd-s6").noise(iso=800, source="table")
    assert n.alpha["R"] == pytest.approx(0.003696)
    assert n.sigma["B"] == pytest.approx(np.sqrt(0.000002))
    # ELD: K at ISO 100 is Kmin, alpha = K / (white - black)
    eld = json.loads((shared_data / "published_noise/eld_camera_params/eld_camera_params.json").read_text())
    kmin = eld["cameras"]["SonyA7S2"]["Kmin"]
    n = load_profile("eld-sonya7s2").noise(iso=100, source="table")
    assert n.alpha["Gr"] == pytest.approx(kmin / (16383 - 512))


@pytest.mark.parametrize(
    "mutate,field",
    [
        (lambda d: d.pop("sensor"), "sensor: missing"),
        (lambda d: d["sensor"].update(cfa_pattern="RGBW"), "sensor.cfa_pattern"),
        (lambda d: d["sensor"].update(black_level=[1, 2, 3]), "sensor.black_level"),
        (lambda d: d["noise"]["table"][0]["alpha"].update(R=-1e-3), "noise.table[0].alpha.R: must be >= 0"),
        (lambda d: d["noise"]["table"][0]["sigma"].update(B="big"), "noise.table[0].sigma.B: must be a finite number"),
        (lambda d: d["noise"]["table"][0]["alpha"].pop("Gb"), "noise.table[0].alpha.Gb: missing"),
        (lambda d: d["noise"]["iso_model"].update(kind="cubic"), "noise.iso_model.kind"),
        (lambda d: d["noise"]["iso_model"]["params"]["R"].pop("a1"), "noise.iso_model.params.R.a1: missing"),
        (lambda d: d.update(schema_version=99), "schema_version: 99 is not supported"),
        (lambda d: d["light"].update(lux_per_light_level=0), "light.lux_per_light_level: must be > 0"),
    ],
)
def test_validation_names_the_field(mutate, field):
    doc = copy.deepcopy(load_profile("nexus6p-rear").doc)
    mutate(doc)
    errors = validate_profile(doc)
    assert any(field in e for e in errors), errors
    with pytest.raises(BadProfileError, match="invalid profile"):
        Profile(doc)


def test_unknown_profile_lists_known():
    with pytest.raises(BadProfileError, match="known: .*nexus6p-rear"):
        load_profile("no-such-camera")


def test_save_load_round_trip(tmp_path):
    p = load_profile("eld-nikond850")
    p.save(tmp_path / "x.json")
    q = load_profile(tmp_path / "x.json")
    assert q.doc == p.doc
    assert q.noise(iso=1234).alpha == p.noise(iso=1234).alpha


def test_profile_path_env(tmp_path, monkeypatch):
    doc = copy.deepcopy(load_profile("semco").doc)
    doc["id"] = "my-cam"
    (tmp_path / "my-cam.json").write_text(json.dumps(doc))
    monkeypatch.setenv("DPCAL_PROFILE_PATH", str(tmp_path))
    assert load_profile("my-cam").id == "my-cam"
    assert "my-cam" in {p["id"] for p in list_profiles()}


def test_cts_model_recovers_known_parameters():
    iso = np.array([100, 200, 400, 800, 1600, 3200.0])
    A, B, C, D = 2e-6, 1e-5, 3e-12, 4e-7
    alpha = A * iso + B
    sigma = np.sqrt(C * iso**2 + D)
    p = fit_iso_model("cts", iso, alpha, sigma)
    assert p["A"] == pytest.approx(A, rel=1e-6) and p["B"] == pytest.approx(B, rel=1e-4)
    assert p["C"] == pytest.approx(C, rel=1e-6) and p["D"] == pytest.approx(D, rel=1e-4)
    a, s = eval_iso_model("cts", p, 1000.0)
    assert a == pytest.approx(A * 1000 + B) and s == pytest.approx(np.sqrt(C * 1e6 + D))


def test_leave_one_iso_out_and_new_profile():
    iso = [100.0, 200.0, 400.0, 800.0]
    table = [{"iso": i, "alpha": {p: 1e-6 * i for p in PLANES}, "sigma": {p: np.sqrt(1e-12 * i**2 + 1e-6) for p in PLANES}} for i in iso]
    rows = leave_one_iso_out("cts", table)
    assert len(rows) == 16
    assert max(abs(r["alpha_rel_err"]) for r in rows) < 1e-9
    prof = new_profile("t", "m", "x", pattern="RGGB", black_level=[0] * 4, white_level=1023, table=table)
    assert prof.noise(iso=300).alpha["R"] == pytest.approx(3e-4)


def test_noise_bad_arguments():
    p = load_profile("nexus6p-rear")
    with pytest.raises(BadInputError, match="lux must be a positive"):
        p.noise(lux=0)
    with pytest.raises(BadInputError, match="exactly one"):
        p.noise()


def test_out_of_range_warning_from_library():
    import warnings

    from dpcal.profile import OutOfRangeWarning

    p = load_profile("eld-nikond850")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p.noise(iso=6400 * 1.25)  # inside the tolerance
        p.noise(iso=100 / 1.25)
        load_profile("nexus6p-rear").noise(lux=0.1)
    with pytest.warns(OutOfRangeWarning, match="measured at ISO 100-6400; ISO up to 66667"):
        p.noise(lux=3)
    with pytest.warns(OutOfRangeWarning, match="ISO down to 10"):
        p.noise(iso=10)
