"""``dpcal simulate`` through the command line: JSON, errors, kill and resume."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from dpcal.workflows.simulate import simulate_dataset
from tests.conftest import ROOT, run_cli
from tests.test_sim_dataset import make_tree, read_manifest, tree_bytes


def test_simulate_json_and_lux_range(tmp_path):
    src = make_tree(tmp_path / "src", n=2)
    r = run_cli("simulate", str(src), str(tmp_path / "dst"), "--lux", "2", "20", "--size", "32", "--workers", "0",
                "--json", "--preview", str(tmp_path / "p.png"))
    doc = json.loads(r.stdout)
    assert doc["complete"] and doc["counts"]["ok"] == 4 and doc["settings"]["simulator"]["lux"] == [2.0, 20.0]
    assert (tmp_path / "p.png").is_file() and doc["preview"] == str(tmp_path / "p.png")
    r = run_cli("simulate", str(src), str(tmp_path / "ref"), "--lux", "3", "--mode", "reference", "--size", "32",
                "--workers", "0", "--format", "dng")
    assert "4 mosaics written" in r.stdout
    card = json.loads((tmp_path / "ref" / "dataset.json").read_text())
    assert card["settings"]["simulator"] == {"mode": "reference", "lux": [3.0, 3.0], "linearize": "none",
                                            "pattern": "BGGR", "quantize": False, "psf": False,
                                            "psf_position": "sensor", "noise_source": "model"}
    assert card["settings"]["dng_levels"] == "0-65535"


@pytest.mark.parametrize("args,code,text", [
    (("--lux", "0"), 1, "lux must be a positive number, got 0"),
    (("--lux", "-1"), 1, "lux must be a positive number, got -1"),
    (("--lux", "2", "20", "200"), 2, "unexpected extra argument"),
    ((), 2, "Missing option '--lux'"),
    (("--lux", "3", "--psf"), 1, "has no PSF field"),
    (("--lux", "3", "--mode", "reference", "--pattern", "RGGB"), 1, "--mode reference fixes the pattern"),
    (("--lux", "3", "--profile", "nope"), 1, "unknown profile 'nope'"),
])
def test_errors(tmp_path, args, code, text):
    src = make_tree(tmp_path / "src", classes=["a"], n=1, ext="png")
    r = run_cli("simulate", str(src), str(tmp_path / "dst"), *args, check=code)
    assert text in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "dst" / "manifest.csv").exists()


def test_rerun_of_a_finished_run_succeeds(tmp_path):
    src = make_tree(tmp_path / "src", classes=["a"], n=1, ext="png")
    args = ("simulate", str(src), str(tmp_path / "dst"), "--lux", "3", "--size", "32", "--workers", "0",
            "--preview", str(tmp_path / "p.png"))
    r = run_cli(*args)
    assert r.stdout.splitlines()[0].endswith(": 1 mosaic written, 0 skipped (nexus6p-rear, realistic, BGGR, lux 3)")
    assert "  1 image in " in r.stdout
    before = tree_bytes(tmp_path / "dst")
    r = run_cli(*args)  # exit 0: complete with the same settings is success in a pipeline
    assert "already complete (same settings): 1 mosaic, 0 skipped" in r.stdout
    assert tree_bytes(tmp_path / "dst") == before
    r = run_cli(*args[:4], "4", *args[5:9], check=1)  # other settings: a conflict
    assert "already holds a complete dataset made with different settings" in r.stderr
    assert tree_bytes(tmp_path / "dst") == before


def test_missing_source(tmp_path):
    r = run_cli("simulate", str(tmp_path / "nope"), str(tmp_path / "dst"), "--lux", "3", check=1)
    assert "no such folder or CSV file" in r.stderr


def test_kill_and_resume(tmp_path):
    """SIGKILL the whole run (main and workers) mid-way; the same command then finishes, redoing only
    what was not recorded, and the result is byte-identical to an uninterrupted run."""
    src = make_tree(tmp_path / "src", n=300, size=(64, 48), ext="png")
    dst = tmp_path / "dst"
    cmd = [sys.executable, "-m", "dpcal", "simulate", str(src), str(dst), "--lux", "2", "20", "--size", "32",
           "--workers", "1", "--json"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    journal = dst / ".dpcal-sim" / "journal.jsonl"
    t0 = time.time()
    try:
        while time.time() - t0 < 60:
            if journal.is_file() and journal.read_text().count("\n") >= 32:
                break
            if proc.poll() is not None:
                break
            time.sleep(0.005)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done_at_kill = journal.read_text().count("\n")
    assert 0 < done_at_kill < 600, "the run should have been killed part-way"
    card = json.loads((dst / "dataset.json").read_text())
    assert card["complete"] is False and not (dst / "manifest.csv").exists()
    # A temporary file left by a write cut short is cleaned up on resume.
    stray = dst / "n01440764" / ".img_0_0.99999.part.png"
    stray.write_bytes(b"partial")

    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["complete"] and doc["counts"]["ok"] == 600
    assert doc["run"]["processed_now"] == 600 - done_at_kill
    assert not stray.exists()

    simulate_dataset(src, tmp_path / "ref", lux=(2, 20), size=32, workers=0, progress=False)
    assert tree_bytes(dst) == tree_bytes(tmp_path / "ref")
    assert len(read_manifest(dst)) == 600


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_terminate_ends_every_worker_process_and_resumes(tmp_path, sig):
    """`kill PID` (SIGTERM), a closed terminal (SIGHUP) or Ctrl-C (SIGINT) on the main process only: the fork
    server, the resource tracker and the workers all end; the message says how to resume; the
    same command then finishes with the files of an uninterrupted run."""
    psutil = pytest.importorskip("psutil")
    src = make_tree(tmp_path / "src", n=100, size=(96, 80), ext="png")
    dst = tmp_path / "dst"
    cmd = [sys.executable, "-m", "dpcal", "simulate", str(src), str(dst), "--lux", "2", "20", "--size", "64",
           "--workers", "2"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    journal = dst / ".dpcal-sim" / "journal.jsonl"
    main = psutil.Process(proc.pid)
    children: set = set()
    t0 = time.time()
    try:
        while time.time() - t0 < 60 and proc.poll() is None:
            children |= {c.pid for c in main.children(recursive=True)}
            if journal.is_file() and journal.read_text().count("\n") >= 8:
                break
            time.sleep(0.01)
        children |= {c.pid for c in main.children(recursive=True)}
        assert proc.poll() is None, "the run ended before it could be interrupted"
        assert len(children) >= 3  # fork server, resource tracker, 2 workers
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + sig
    assert err.strip().splitlines()[-1] == "dpcal: interrupted; rerun the same command to resume"

    def running(pids):
        out = []
        for p in pids:
            try:
                if psutil.Process(p).status() != psutil.STATUS_ZOMBIE:
                    out.append(p)
            except psutil.NoSuchProcess:
                pass
        return out

    deadline = time.time() + 10
    alive = running(children)
    while alive and time.time() < deadline:
        time.sleep(0.1)
        alive = running(alive)
    for p in alive:  # do not leave them behind when the test fails
        psutil.Process(p).kill()
    assert alive == [], f"{len(alive)} worker processes were left running"
    assert json.loads((dst / "dataset.json").read_text())["complete"] is False

    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    simulate_dataset(src, tmp_path / "ref", lux=(2, 20), size=64, workers=0, progress=False)
    assert tree_bytes(dst) == tree_bytes(tmp_path / "ref")


def test_preview_one_image_per_class_with_names_and_upscale_note(tmp_path, monkeypatch, capsys):
    import dpcal.workflows.simulate_preview as preview
    from dpcal.cli import main

    shown = {}

    def spy(images, sim, lux_levels, seeds, **kw):
        shown["labels"] = list(kw["labels"])
        return real(images, sim, lux_levels, seeds, **kw)

    real = preview.render_preview
    monkeypatch.setattr(preview, "render_preview", spy)
    # 3 images in each of two ImageNet classes and one other; sources of 48x40 px simulated at 64 px
    src = make_tree(tmp_path / "src", classes=["n01440764", "n02102040", "zzz"], n=3, size=(48, 40), ext="png")
    with pytest.raises(SystemExit) as e:
        main(["simulate", str(src), str(tmp_path / "dst"), "--lux", "3", "--size", "64", "--workers", "0",
              "--preview", str(tmp_path / "p.png")])
    assert e.value.code == 0
    # one image of every class before a second of any; class names where the label is a wnid
    assert shown["labels"] == ["tench", "English springer", "zzz", "tench"]
    rows = read_manifest(tmp_path / "dst")
    assert all(r["detail"] == "upscaled: a 35x35 px crop to 64 px" for r in rows)  # the central 87.5 %
    assert "9 of 9 images were upscaled: their crop is smaller than the size 64" in capsys.readouterr().err


def test_one_extrapolation_warning_per_run(tmp_path):
    """An ELD profile (measured at ISO 100-6400) at 3 lux is ISO 66,667: one line on stderr for the
    whole run, not one per worker, chunk or preview row."""
    src = make_tree(tmp_path / "src", classes=["a", "b"], n=4, ext="png")
    r = run_cli("simulate", str(src), str(tmp_path / "dst"), "--lux", "3", "--size", "32", "--workers", "2",
                "--profile", "eld-sonya7s2", "--preview", str(tmp_path / "p.png"))
    warns = [line for line in r.stderr.splitlines() if "warn" in line.lower()]
    assert warns == ["dpcal: warning: profile eld-sonya7s2 is measured at ISO 100-6400; ISO up to 66667 is "
                     "extrapolated by its cts ISO model"], r.stderr
    r = run_cli("simulate", str(src), str(tmp_path / "dst2"), "--lux", "100", "--size", "32", "--workers", "0",
                "--profile", "eld-sonya7s2")
    assert "warning" not in r.stderr  # ISO 2000: measured
