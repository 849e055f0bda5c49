import json
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT, run_cli


def test_help_is_light():
    code = (
        "import sys\n"
        "from dpcal.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'rawpy', 'cv2', 'matplotlib', 'scipy', 'pandas') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert "HEAVY []" in r.stdout, r.stdout + r.stderr


def test_version():
    from dpcal import __version__

    r = run_cli("--version")
    assert r.stdout.split()[-1] == __version__ and __version__[0].isdigit()


def test_profile_list_and_show_json():
    rows = json.loads(run_cli("profile", "list", "--json").stdout)
    assert {"id", "maker", "model"} <= set(rows[0])
    doc = json.loads(run_cli("profile", "show", "nexus6p-rear", "--json").stdout)
    assert doc["schema_version"] == 1 and doc["id"] == "nexus6p-rear"


def test_profile_noise_lux_3():
    doc = json.loads(run_cli("profile", "noise", "nexus6p-rear", "--lux", "3", "--json").stdout)
    for plane in ("R", "Gr", "Gb", "B"):
        assert round(doc["alpha"][plane], 4) == 0.1248
        assert round(doc["sigma"][plane], 4) == 0.3155


def test_profile_validate(tmp_path):
    good = json.loads(run_cli("profile", "show", "semco", "--json").stdout)
    (tmp_path / "good.json").write_text(json.dumps(good))
    run_cli("profile", "validate", str(tmp_path / "good.json"))
    del good["noise"]["table"][0]["sigma"]
    good["noise"]["table"][0]["alpha"]["R"] = -1
    (tmp_path / "bad.json").write_text(json.dumps(good))
    r = run_cli("profile", "validate", str(tmp_path / "bad.json"), check=1)
    assert "noise.table[0].sigma: missing" in r.stderr and "alpha.R" in r.stderr
    assert "Traceback" not in r.stderr


def test_profile_validate_several_ids_files_and_psf(tmp_path):
    doc = json.loads(run_cli("profile", "show", "semco", "--json").stdout)
    doc["psf"] = {"file": "semco.psf.npz"}
    (tmp_path / "with_psf.json").write_text(json.dumps(doc))
    r = run_cli("profile", "validate", "eld-sonya7s2", "semco", check=0)
    assert r.stdout.count(": valid") == 2
    # a profile whose PSF file is missing is not valid (simulate --psf would fail on it)
    r = run_cli("profile", "validate", "semco", str(tmp_path / "with_psf.json"), "nope", check=1)
    assert "semco.json: valid" in r.stdout
    assert "psf.file: 'semco.psf.npz' not found" in r.stderr and "unknown profile 'nope'" in r.stderr
    docs = json.loads(run_cli("profile", "validate", "semco", str(tmp_path / "with_psf.json"), "--json",
                              check=1).stdout)
    assert [d["valid"] for d in docs] == [True, False]
    (tmp_path / "semco.psf.npz").write_bytes(b"")
    run_cli("profile", "validate", str(tmp_path / "with_psf.json"), check=0)


@pytest.mark.parametrize("args,warns", [
    (("eld-sonya7s2", "--lux", "0.01"), "ISO up to 20000000"),
    (("eld-sonya7s2", "--iso", "100000"), "ISO up to 100000"),
    (("eld-sonya7s2", "--iso", "50"), "ISO down to 50"),
    (("eld-sonya7s2", "--iso", "8000"), None),  # within a third of a stop of 6400
    (("eld-sonya7s2", "--iso", "800"), None),
    (("nexus6p-rear", "--lux", "0.01"), None),  # single-ISO linear profile: no measured range
])
def test_profile_noise_warns_beyond_measured_range(args, warns):
    r = run_cli("profile", "noise", *args, "--json")
    json.loads(r.stdout)  # the warning stays off stdout
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    if warns is None:
        assert lines == []
    else:
        assert len(lines) == 1 and lines[0].startswith("dpcal: warning: profile eld-sonya7s2 is measured at "
                                                        "ISO 100-6400;") and warns in lines[0]


@pytest.mark.parametrize(
    "args,code,text",
    [
        (("profile", "show", "nope"), 1, "unknown profile 'nope'"),
        (("profile", "noise", "nexus6p-rear"), 2, "exactly one of --iso and --lux"),
        (("profile", "noise", "nexus6p-rear", "--lux", "-1"), 1, "lux must be a positive"),
        (("info", "missing.dng"), 1, "no such file"),
        (("nosuchcommand",), 2, "No such command"),
    ],
)
def test_errors_are_one_line(args, code, text):
    r = run_cli(*args, check=code)
    assert text in r.stderr
    assert "Traceback" not in r.stderr
    assert len([l for l in r.stderr.splitlines() if l.strip()]) <= 3


def test_info_text_dng(tmp_path):
    (tmp_path / "t.dng").write_text("hello\n" * 100)
    r = run_cli("info", str(tmp_path / "t.dng"), check=1)
    assert r.stderr.strip().count("\n") == 0 and "LibRaw cannot read" in r.stderr
    r = run_cli("-v", "info", str(tmp_path / "t.dng"), check=1)
    assert "Traceback" in r.stderr


def test_info_real_files(shared_data):
    doc = json.loads(run_cli("info", str(shared_data / "raw/imageio_Blackmagic.dng"), "--json").stdout)
    assert doc["pattern"] == "RGGB" and doc["black_level"] == [512] * 4 and doc["white_level"] == 65535
    assert doc["iso"] is None and doc["model"] == "Blackmagic Pocket Cinema Camera 4K"
    doc = json.loads(run_cli("info", str(shared_data / "raw/rawpy_RAW_KODAK_DC50.KDC"), "--json").stdout)
    assert doc["pattern"] == "GRBG" and doc["white_level"] == 16383 and doc["iso"] == 84
    r = run_cli("info", str(shared_data / "raw/imageio_Nikon_uncompressed.nef"), check=1)
    assert "not a Bayer mosaic" in r.stderr and "Traceback" not in r.stderr


def test_info_headerless(tmp_path):
    np.arange(48, dtype="<u2").tofile(tmp_path / "a.raw")
    doc = json.loads(run_cli("info", str(tmp_path / "a.raw"), "--width", "8", "--height", "6", "--bits", "12",
                             "--pattern", "GRBG", "--json").stdout)
    assert (doc["width"], doc["height"], doc["pattern"], doc["white_level"]) == (8, 6, "GRBG", 4095)


def test_demo(tmp_path):
    """The whole pipeline (short training here; the README's command trains longer)."""
    out = tmp_path / "demo"
    doc = json.loads(run_cli("demo", "--out", str(out), "--steps", "6", "--json").stdout)
    assert doc["capture"]["pattern"] == "BGGR" and doc["capture"]["iso"] == 1600
    assert json.loads((out / "summary.json").read_text()) == doc
    # fit-noise recovers the profile the captures were made with, at every ISO: alpha within 4 %
    # (3.2 % at ISO 6400) and within 4 of its own standard errors (the error bars are
    # calibrated), sigma within 4 standard errors.
    assert sorted({f["iso"] for f in doc["fit_noise"]}) == [400, 1600, 6400]
    for f in doc["fit_noise"]:
        assert abs(f["alpha_rel_err"]) < 0.04 and abs(f["alpha"] - f["alpha_profile"]) < 4 * f["alpha_std"], f
        assert abs(f["sigma"] - f["sigma_profile"]) < 4 * f["sigma_std"], f
    # fit-psf recovers the known lens: 2-5 % is the method's published accuracy (docs/method.md).
    psf = doc["fit_psf"]
    assert psf["registration_rms_px"] < 0.1 and psf["kernel_rel_l2_median"] < 0.05 and psf["kernel_rel_l2_max"] < 0.1
    # The fits became a profile with the PSF attached, and the data were simulated with it.
    from dpcal.profile import load_profile

    fitted = load_profile(out / "camera" / "demo-camera.json")
    assert fitted.psf_path() is not None and fitted.psf_path().is_file()
    assert doc["simulate"]["ok"] == doc["simulate"]["images"] == 96
    # Both models were trained and evaluated at every demo light level; the report shows them.
    res = {r["name"]: r for r in doc["eval"]["results"]}
    assert set(res) == {"joint", "raw"}
    assert all(len(r["per_lux"]) == 4 and 0 <= r["top1"] <= 1 for r in res.values())
    report = (out / "report.md").read_text()
    for name, r in res.items():
        row = next(line for line in report.splitlines() if line.startswith(f"| {name} |") and " / " in line)
        first = r["per_lux"][0]
        assert f"{100 * first['top1']:.2f} / {100 * first['top5']:.2f}" in row
    for link in ("eval/panel.png", "eval/accuracy_vs_lux.png", "runs/joint/curve.png", "runs/raw/curve.png",
                 "eval/report.md"):
        assert link in report and (out / link).is_file(), link
    r = run_cli("demo", "--out", str(out), check=1)
    assert "--overwrite" in r.stderr


def test_library_errors_speak_flags_on_the_cli(tmp_path):
    """The library names parameters (`size`); the CLI shows its flags (--size), mapped in one place."""
    from dpcal.cli.options import cli_message
    from dpcal.errors import BadInputError
    from dpcal.workflows.simulate import simulate_dataset

    src = tmp_path / "src" / "a"
    src.mkdir(parents=True)
    np.zeros((40, 40), np.uint8).tofile(src / "x.raw")  # content never read: the size check comes first
    with pytest.raises(BadInputError, match="`size` must be an even number") as e:
        simulate_dataset(tmp_path / "src", tmp_path / "dst", lux=5, size=33, workers=0, progress=False)
    assert e.value.param == "size" and isinstance(e.value, ValueError)
    r = run_cli("simulate", str(tmp_path / "src"), str(tmp_path / "dst"), "--lux", "5", "--size", "33", check=1)
    assert "--size must be an even number" in r.stderr and "`" not in r.stderr
    assert cli_message("pass `white_level` or `overwrite=True`; `fmt=dng`") == "pass --white or --overwrite; --format dng"
