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
