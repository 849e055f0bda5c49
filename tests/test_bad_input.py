"""Bad input across the commands: one line on stderr (no traceback), exit 1 (2 for usage),
and nothing written: neither the inputs' folder nor the output folder changes.

The CLI runs in-process through ``dpcal.cli.main`` (the wrapper that maps errors to exit
codes) so the battery stays fast; ``{D}`` is a folder of inputs shared by the module, ``{W}``
the test's own output folder.
"""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from dpcal.cli import main
from tests._noise_data import capture, chart_clean
from tests.conftest import ROOT

CASES = [
    # info
    (["info", "{D}/missing.dng"], 1, "no such file"),
    (["info", "{D}/text.dng"], 1, "LibRaw cannot read it"),
    (["info", "{D}"], 2, "is a directory"),
    (["info", "{D}/a.raw", "--pattern", "RGGB"], 1, "needs --width, --height and --bits"),
    (["info", "{D}/a.raw"], 1, "carries no CFA pattern; pass --pattern"),
    (["info", "{D}/a.raw", "--width", "8", "--height", "8", "--bits", "12", "--pattern", "RGGB"], 1,
     "check --width/--height/--bits"),
    (["info", "{D}/m.npy"], 1, "pass --pattern"),
    (["info", "{D}/cap.dng", "--pattern", "XYZW"], 1, "unknown CFA pattern 'XYZW'"),
    (["info", "{D}/cap.dng", "--iso", "-5"], 1, "--iso must be > 0"),
    (["info", "{D}/cap.dng", "--black", "5000"], 1, "is not below white level"),
    (["info", "{D}/cap.dng", "--bits", "17"], 2, "not in the range 1<=x<=16"),
    # fit-noise
    (["fit-noise"], 2, "give RAW files, --manifest CSV or --emva FILE"),
    (["fit-noise", "{D}/missing.dng", "-o", "{W}/cam.json"], 1, "no such file"),
    (["fit-noise", "{D}/cap.dng", "--iso", "-5", "-o", "{W}/cam.json"], 1, "--iso must be > 0, got -5"),
    (["fit-noise", "{D}/cap.dng", "--iso", "0", "--csv", "{W}/c.csv"], 1, "--iso must be > 0, got 0"),
    (["fit-noise", "{D}/cap.dng", "-o", "{D}/existing.json"], 1, "already exists; pass --overwrite"),
    (["fit-noise", "{D}/cap.dng", "-o", "{D}/file.txt/cam.json"], 1, "file.txt is a file, not a folder"),
    (["fit-noise", "{D}/cap.dng", "-o", "{W}/cam.json", "--csv", "{D}/file.txt/c.csv"], 1,
     "file.txt is a file, not a folder"),
    (["fit-noise", "{D}/cap.dng", "-o", "{W}/cam.json", "--csv", "{W}/c.csv", "--plots", "{D}/file.txt/figs"], 1,
     "cannot write to"),
    (["fit-noise", "{D}/cap.dng", "-o", "{W}/nodir/cam.json"], 1, "does not exist; create it first"),
    (["fit-noise", "{D}/cap.dng", "-o", "{W}/missing.json", "--update"], 1, "--update needs an existing profile"),
    (["fit-noise", "{D}/cap.dng", "-o", "{W}/cam.json", "--plots", "{D}/plots"], 1, "already holds noise plots"),
    (["fit-noise", "--manifest", "{D}/missing.csv"], 1, "no such manifest file"),
    (["fit-noise", "--manifest", "{D}/negative_iso.csv", "-o", "{W}/cam.json"], 1, "ISO must be positive"),
    (["fit-noise", "--method", "pairs", "{D}/cap.dng", "-o", "{W}/cam.json"], 1, "only one frame"),
    (["fit-noise", "--method", "foo", "{D}/cap.dng"], 2, "'foo' is not one of 'single', 'pairs'"),
    (["fit-noise", "--emva", "{D}/file.txt", "{D}/cap.dng"], 1, "give no other inputs"),
    (["fit-noise", "{D}/photo.dng", "--scene", "chart", "-o", "{W}/cam.json", "--csv", "{W}/c.csv"], 1,
     "no gray chart found"),
    (["fit-noise", "{D}/cap.dng", "{D}/cap.dng"], 1, "is given twice"),
    # profile
    (["profile", "show", "nope"], 1, "unknown profile 'nope'"),
    (["profile", "noise", "nexus6p-rear"], 2, "give exactly one of --iso and --lux"),
    (["profile", "noise", "nexus6p-rear", "--lux", "-1"], 1, "lux must be a positive number"),
    (["profile", "noise", "nexus6p-rear", "--iso", "0"], 1, "ISO must be a positive number"),
    (["profile", "noise", "{D}/bad.json", "--iso", "100"], 1, "invalid profile"),
    (["profile", "noise", "nexus6p-rear", "--iso", "100", "--source", "foo"], 2, "'foo' is not one of"),
    (["profile", "validate", "{D}/bad.json"], 1, "noise.table[0].sigma: missing"),
    (["profile", "validate", "{D}/notjson.json"], 1, "not valid JSON"),
    (["profile", "validate", "{D}/with_psf.json"], 1, "psf.file: 'gone.npz' not found"),
    (["profile", "validate"], 2, "Missing argument"),
    # make-chart
    (["make-chart", "psf", "--out", "{D}/file.txt/chart"], 1, "file.txt is a file, not a folder"),
    (["make-chart", "psf", "--out", "{D}/file.txt"], 2, "is a file"),
    (["make-chart", "gray", "--out", "{D}/chart", "--no-pdf"], 1, "already exists; pass --overwrite"),
    (["make-chart", "psf", "--out", "{W}/c", "--size-mm", "5", "5"], 1, "too small for checker squares"),
    (["make-chart", "psf", "--out", "{W}/c", "--screen", "640", "400", "--size-mm", "1", "1"], 2, "not both"),
    (["make-chart", "foo", "--out", "{W}/c"], 2, "'foo' is not one of 'psf', 'gray'"),
    # render-chart
    (["render-chart", "--chart", "{D}/missing.json", "-o", "{W}/x.dng"], 1, "missing.json"),
    (["render-chart", "--chart", "{D}/chart/chart.json", "-o", "{W}/x.dng", "--size", "64", "48", "--iso", "-5"], 1,
     "iso must be > 0"),
    (["render-chart", "--chart", "{D}/chart/chart.json", "-o", "{W}/x.dng", "--size", "64", "48", "--exposure", "0"],
     1, "--exposure must be > 0"),
    (["render-chart", "--chart", "{D}/chart/chart.json", "-o", "{W}/x.dng", "--size", "64", "48", "--fill", "0"], 1,
     "--fill must be > 0"),
    (["render-chart", "--chart", "{D}/chart/chart.json", "-o", "{D}/file.txt/x.dng", "--size", "64", "48"], 1,
     "file.txt is a file, not a folder"),
    (["render-chart", "--chart", "{D}/chart/chart.json", "-o", "{W}/x.dng", "--psf", "{D}/f.npz", "--gaussian", "1"],
     2, "give --psf or --gaussian, not both"),
    (["render-chart", "--chart", "{D}/chart/chart.json", "-o", "{W}/x.dng", "--size", "64", "48", "--frame", "3"], 2,
     "--frame must be in 0..0"),
    # fit-psf
    (["fit-psf", "{D}/cap.dng", "--chart", "{D}/chart/chart.json", "-o", "{D}/file.txt/f.npz"], 1,
     "file.txt is a file, not a folder"),
    (["fit-psf", "{D}/cap.dng", "--chart", "{D}/chart/chart.json", "-o", "{W}/f.npz", "--plots",
      "{D}/file.txt/figs"], 1, "cannot write to"),
    (["fit-psf", "{D}/cap.dng", "--chart", "{D}/missing.json", "-o", "{W}/f.npz"], 1, "missing.json"),
    (["fit-psf", "{D}/cap.dng", "--chart", "{D}/chart/chart.json", "-o", "{W}/f.npz", "--attach",
      "{W}/missing.json"], 1, "--attach needs an existing profile .json file"),
    (["fit-psf", "--chart", "{D}/chart/chart.json", "-o", "{W}/f.npz"], 2, "Missing argument"),
    (["fit-psf", "{D}/cap.dng", "--chart", "{D}/chart/chart.json", "-o", "{D}/existing.json"], 1,
     "already exists; pass --overwrite"),
    # simulate
    (["simulate", "{D}/img.JPEG", "{W}/out", "--lux", "3"], 1, "is a file, not a folder of class folders or a CSV"),
    (["simulate", "{D}/data.bin", "{W}/out", "--lux", "3"], 1, "is a file, not a folder of class folders or a CSV"),
    (["simulate", "{D}/src", "{W}/out", "--lux", "0", "--workers", "0"], 1, "lux must be a positive number, got 0"),
    (["simulate", "{D}/src", "{W}/out", "--lux", "-1", "--workers", "0"], 1, "lux must be a positive number"),
    (["simulate", "{D}/src", "{W}/out", "--lux", "20", "2", "--workers", "0"], 1, "needs LO <= HI"),
    (["simulate", "{D}/src", "{W}/out", "--lux", "3", "--size", "33", "--workers", "0"], 1, "even number"),
    (["simulate", "{D}/src", "{D}/file.txt/out", "--lux", "3", "--workers", "0"], 1, "cannot write to the output"),
    (["simulate", "{D}/src", "{W}/out", "--lux", "3", "--preview", "{W}/p.jpg", "--workers", "0"], 1,
     "--preview must name a .png file"),
    (["simulate", "{D}/src", "{W}/out", "--lux", "3", "--preview", "{D}/file.txt/p.png", "--workers", "0"], 1,
     "file.txt is a file, not a folder"),
    (["simulate", "{D}/src", "{D}/src/out", "--lux", "3", "--workers", "0"], 1, "is inside the source"),
    (["simulate", "{D}/missing", "{W}/out", "--lux", "3", "--workers", "0"], 1, "no such folder or CSV file"),
    (["simulate", "{D}/src", "{W}/out", "--lux", "3", "--workers", "-1"], 2, "not in the range x>=0"),
    (["simulate", "{D}/src", "{W}/out", "--lux", "3", "--profile", "nope", "--workers", "0"], 1,
     "unknown profile 'nope'"),
    (["simulate", "{D}/emptydir", "{W}/out", "--lux", "3", "--workers", "0"], 1, "has no class folders"),
    (["simulate", "{D}/src", "{W}/out"], 2, "Missing option '--lux'"),
    # demo
    (["demo", "--out", "{D}/file.txt/demo"], 1, "file.txt is a file, not a folder"),
    (["demo", "--out", "{D}/nonempty"], 1, "is not empty"),
    (["demo", "--out", "{W}/demo", "--profile", "nope"], 1, "unknown profile 'nope'"),
    # the group
    (["nosuchcommand"], 2, "No such command"),
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from PIL import Image

    from dpcal.chart import make_chart
    from dpcal.io.dng import write_dng
    from tests.test_sim_dataset import make_tree

    d = tmp_path_factory.mktemp("inputs")
    write_dng(d / "cap.dng", capture(chart_clean(240, 360), "RGGB", 400), "RGGB", black_level=64, white_level=4095,
              iso=400)
    rng = np.random.default_rng(0)
    import cv2

    tex = cv2.GaussianBlur(rng.standard_normal((240, 360)), (0, 0), 1.5)
    write_dng(d / "photo.dng", capture(0.45 + 0.35 * tex / tex.std(), "RGGB", 400), "RGGB", black_level=64,
              white_level=4095, iso=400)
    (d / "text.dng").write_text("hello\n" * 100)
    (d / "file.txt").write_text("a regular file\n")
    np.arange(48, dtype="<u2").tofile(d / "a.raw")
    np.save(d / "m.npy", np.zeros((8, 8), np.uint16))
    good = json.loads((ROOT / "profiles" / "semco.json").read_text())
    (d / "existing.json").write_text(json.dumps(good))
    bad = json.loads(json.dumps(good))
    del bad["noise"]["table"][0]["sigma"]
    (d / "bad.json").write_text(json.dumps(bad))
    (d / "notjson.json").write_text("{not json")
    (d / "with_psf.json").write_text(json.dumps({**good, "psf": {"file": "gone.npz"}}))
    (d / "negative_iso.csv").write_text("file,iso\ncap.dng,-5\n")
    (d / "plots").mkdir()
    (d / "plots" / "noise_iso400.png").write_bytes(b"an earlier plot")
    make_chart("psf", d / "chart", size_mm=(62, 46), dpi=300, square=24, pdf=False)
    make_tree(d / "src", classes=["a"], n=1, ext="png")
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(d / "img.JPEG")
    (d / "data.bin").write_bytes(bytes(range(256)) * 4)
    (d / "emptydir").mkdir()
    (d / "nonempty").mkdir()
    (d / "nonempty" / "keep.txt").write_text("mine")
    (d / "f.npz").write_bytes(b"")
    return d


def _tree(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def test_enough_distinct_cases():
    assert len({tuple(a) for a, _, _ in CASES}) == len(CASES) >= 40


@pytest.mark.parametrize("args,code,text", CASES, ids=[" ".join(a)[:60] for a, _, _ in CASES])
def test_bad_input(inputs, tmp_path, capsys, args, code, text):
    work = tmp_path / "work"
    work.mkdir()
    argv = [a.format(D=inputs, W=work) for a in args]
    before_inputs, before_work = _tree(inputs), _tree(work)
    with pytest.raises(SystemExit) as e:
        main(argv)
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert e.value.code == code, err
    assert text in err, err
    assert "Traceback" not in err and len(lines) == 1, err
    assert out == ""
    assert _tree(inputs) == before_inputs, "an input or existing file changed"
    assert _tree(work) == before_work == {}, "something was written"


def test_chmod_read_only_folder(inputs, tmp_path, capsys):
    """A folder without write permission (only where permissions bind: not as root)."""
    import os

    if os.geteuid() == 0:
        pytest.skip("root writes through folder permissions; the file.txt/... cases cover unwritable paths")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(SystemExit) as e:
            main(["fit-noise", str(inputs / "cap.dng"), "-o", str(ro / "cam.json")])
        assert e.value.code == 1 and "cannot write to" in capsys.readouterr().err
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


def test_cleanup_after_a_late_failure(inputs, tmp_path, capsys, monkeypatch):
    """fit-psf fails after the fit (the plots): the field written before is removed again, and
    the OS error is one line."""
    import dpcal.psf.plots

    monkeypatch.setattr(dpcal.psf.plots, "write_plots",
                        lambda field, out: (_ for _ in ()).throw(OSError(30, "Read-only file system", str(out))))
    shutil.copy(inputs / "existing.json", tmp_path / "cam.json")
    with pytest.raises(SystemExit) as e:
        main(["render-chart", "--chart", str(inputs / "chart" / "chart.json"), "-o", str(tmp_path / "psfcap.dng"),
              "--size", "800", "600", "--gaussian", "1.3", "--iso", "200", "--fill", "0.9"])
    assert e.value.code == 0
    before = _tree(tmp_path)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["fit-psf", str(tmp_path / "psfcap.dng"), "--chart", str(inputs / "chart" / "chart.json"), "-o",
              str(tmp_path / "f.npz"), "--kernel-size", "9", "--grid", "1", "1", "--plots", str(tmp_path / "figs"),
              "--attach", str(tmp_path / "cam.json")])
    err = capsys.readouterr().err
    assert e.value.code == 1, err
    assert [line for line in err.splitlines() if line.startswith("dpcal: error")] == [
        f"dpcal: error: {tmp_path / 'figs'}: Read-only file system"]
    assert _tree(tmp_path) == before  # no field, no plots folder, the profile untouched
