"""dpcal train: it learns, resumes bitwise after kill -9, runs under torchrun, refuses bad input."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dpcal.learn.checkpoint import load_checkpoint, load_model
from dpcal.learn.config import resolve_config
from dpcal.learn.trainer import TrainingError, epoch_batches, train
from dpcal.errors import BadInputError

from .conftest import ROOT, run_cli

COLOURS = [(40, 40, 200), (200, 60, 40), (40, 200, 60)]  # BGR, one per class


def _make_folder(root: Path, n_per_class: int, seed: int, size: int = 40, classes=COLOURS) -> Path:
    import cv2

    rng = np.random.default_rng(seed)
    for c, col in enumerate(classes):
        d = root / f"class{c}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            img = np.clip(rng.normal(col, 25, (size, size, 3)), 0, 255).astype(np.uint8)
            cv2.imwrite(str(d / f"{i:03d}.png"), img)
    return root


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    """An easy 3-class task: images of three colours (train 16 per class, val 6 per class)."""
    root = tmp_path_factory.mktemp("colours")
    return _make_folder(root / "train", 16, 0), _make_folder(root / "val", 6, 1)


def _cfg(folders, **kw):
    base = dict(mode="raw", data=str(folders[0]), val_data=str(folders[1]), size=32, batch_size=8, width=0.25, lux=200,
                workers=0, steps=12, checkpoint_every=4, log_every=2, seed=3)
    base.update(kw)
    return resolve_config(base)


def test_raw_training_learns_an_easy_task(colours, tmp_path):
    res = train(_cfg(colours, steps=80, batch_size=16, lr=4e-3), tmp_path / "run", progress=False)
    rows = [r for r in _metrics(tmp_path / "run") if r["split"] == "train"]
    first, last = rows[0]["loss"], rows[-1]["loss"]
    assert last < 0.85 * first, (first, last)
    assert res["val"]["top1"] >= 0.8, res["val"]  # chance is 1/3
    assert res["val"]["n"] == 18
    assert (tmp_path / "run" / "curve.png").stat().st_size > 10_000
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["train"]["steps"] == 80 and saved["classes"] == ["class0", "class1", "class2"]
    # The model file is all dpcal eval needs.
    model, meta = load_model(tmp_path / "run")
    assert meta["input"] == "raw" and meta["sim"]["config"]["pattern"] == "BGGR" and meta["step"] == 80


def _metrics(run):
    import csv

    with open(Path(run) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["loss"] = float(r["loss"])
    return rows


def _state(path):
    return load_checkpoint(path)["state_dict"]


def _cli_args(data, out, steps, extra=()):
    return ["train", "--mode", "joint", "--data", str(data[0]), "--size", "32", "--batch-size", "8", "--width", "0.25",
            "--lux", "3", "--steps", str(steps), "--checkpoint-every", "2", "--workers", "1", "--seed", "5",
            "--out", str(out), *extra]


def test_resume_after_kill_is_bitwise_identical(colours, tmp_path):
    steps = 14
    ref = tmp_path / "ref"
    run_cli(*_cli_args(colours, ref, steps), "--json")
    # The same run, killed with SIGKILL once a checkpoint exists, then resumed.
    out = tmp_path / "killed"
    p = subprocess.Popen([sys.executable, "-m", "dpcal", *_cli_args(colours, out, steps)], cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = out / "checkpoints" / "last.pt"
    t0 = time.time()
    while not last.exists() and time.time() - t0 < 120:
        time.sleep(0.05)
    time.sleep(0.3)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (out / "model.pt").exists(), "the run finished before it could be killed"
    killed_at = load_checkpoint(last)["step"]
    assert 0 < killed_at < steps
    r = run_cli("train", "--out", str(out), "--resume", "--json")
    assert json.loads(r.stdout)["steps"] == steps
    a, b = _state(ref / "model.pt"), _state(out / "model.pt")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    # Metrics were not duplicated by the replayed steps.
    steps_logged = [int(r["step"]) for r in _metrics(out) if r["split"] == "train"]
    assert steps_logged == sorted(set(steps_logged))
    # A finished run resumed again does nothing more.
    r = run_cli("train", "--out", str(out), "--resume", "--json")
    assert json.loads(r.stdout)["steps"] == steps


def test_two_process_torchrun_job(colours, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        "-m", "dpcal", "train", "--mode", "raw", "--data", str(colours[0]), "--val-data",
                        str(colours[1]), "--size", "32", "--batch-size", "8", "--width", "0.25", "--steps", "4",
                        "--workers", "0", "--out", str(out), "--json"],
                       cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout)  # one document: only rank 0 reports
    assert doc["steps"] == 4 and (out / "model.pt").is_file()
    assert load_checkpoint(out / "model.pt")["step"] == 4


def test_epoch_order_is_a_seeded_permutation():
    a = epoch_batches(50, 8, 1, 0)
    assert len(a) == 6 and len({i for b in a for i in b}) == 48
    assert a == epoch_batches(50, 8, 1, 0) and a != epoch_batches(50, 8, 1, 1) and a != epoch_batches(50, 8, 2, 0)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(colours, tmp_path):
    out = tmp_path / "nan"
    cfg = _cfg(colours, steps=30, lr=1e12, checkpoint_every=1, val_data=None, label_smoothing=0.0, grad_clip=None)
    with pytest.raises(TrainingError, match="(loss|weights) became"):
        train(cfg, out, progress=False)
    ck = load_checkpoint(out / "checkpoints" / "last.pt")
    assert all(torch.isfinite(v).all() for v in ck["state_dict"].values() if v.is_floating_point())
    assert not (out / "model.pt").exists()


def test_bad_inputs_each_give_one_line(colours, tmp_path):
    other = _make_folder(tmp_path / "other", 2, 0, classes=COLOURS[:2])
    empty = tmp_path / "empty"
    empty.mkdir()
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "a.png").write_bytes((colours[0] / "class0" / "000.png").read_bytes())
    base = ["train", "--mode", "raw", "--size", "32", "--batch-size", "8", "--width", "0.25", "--steps", "2",
            "--workers", "0"]
    cases = [
        ([*base, "--data", str(colours[0]), "--val-data", str(other), "--out", str(tmp_path / "r1")], "different classes"),
        ([*base, "--data", str(empty), "--out", str(tmp_path / "r2")], "no class folders"),
        ([*base, "--data", str(flat), "--out", str(tmp_path / "r3")], "no class folders"),
        ([*base, "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r4")], "no such folder"),
        ([*base, "--data", str(colours[0]), "--batch-size", "1000", "--out", str(tmp_path / "r5")], "fewer than one batch"),
        (["train", "--out", str(tmp_path / "r6"), "--resume"], "no run to resume"),
    ]
    for args, msg in cases:
        r = run_cli(*args, check=1)
        err = r.stderr.strip().splitlines()
        assert len(err) == 1 and msg in err[0] and "Traceback" not in r.stderr, (args, r.stderr)
        assert not (Path(args[args.index("--out") + 1]) / "model.pt").exists()


def test_resume_with_changed_model_is_refused_unless_forced(colours, tmp_path):
    out = tmp_path / "run"
    train(_cfg(colours, steps=4, val_data=None), out, progress=False)
    r = run_cli("train", "--out", str(out), "--resume", "--width", "0.5", check=1)
    assert "changed model or data setting" in r.stderr and "width" in r.stderr


def test_init_from_another_model_type_is_refused(colours, tmp_path):
    rec = tmp_path / "rec"
    train(_cfg(colours, mode="reconstruct", steps=2, val_data=None), rec, progress=False)
    with pytest.raises(BadInputError, match="no classifier"):
        train(_cfg(colours, mode="joint", steps=2, init=str(rec), val_data=None), tmp_path / "j", progress=False)
    wide = tmp_path / "wide"
    train(_cfg(colours, mode="clean", steps=2, width=0.5, val_data=None), wide, progress=False)
    with pytest.raises(BadInputError, match="classifier is mobilenet_v1"):
        train(_cfg(colours, mode="raw", steps=2, init=str(wide), val_data=None), tmp_path / "r", progress=False)


def test_clean_then_isp_as_is_and_joint_from_init(colours, tmp_path):
    clean = tmp_path / "clean"
    res = train(_cfg(colours, mode="clean", steps=80, batch_size=16, lr=4e-3), clean, progress=False)
    assert res["val"]["top1"] >= 0.8
    isp = train(_cfg(colours, mode="isp", steps=0, init=str(clean)), tmp_path / "isp", progress=False)
    assert isp["steps"] == 0 and (tmp_path / "isp" / "model.pt").is_file()
    a = load_checkpoint(clean / "model.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "isp" / "model.pt")["state_dict"]
    assert all(torch.equal(a[k], b["classifier." + k]) for k in a)  # the classifier, as is
    joint = train(_cfg(colours, mode="joint", steps=6, init=str(clean), lux=3, val_data=None), tmp_path / "j",
                  progress=False)
    assert [p["name"] for p in joint["phases"]] == ["isp", "joint"] and joint["phases"][0]["end"] == 1


def test_trains_on_a_simulated_folder(colours, tmp_path):
    sim = tmp_path / "sim"
    run_cli("simulate", str(colours[0]), str(sim), "--lux", "200", "--mode", "reference", "--size", "32",
            "--workers", "0", "--json")
    res = train(_cfg(colours, data=str(sim), steps=4, val_data=None), tmp_path / "run", progress=False)
    assert res["train_images"] == 48 and res["steps"] == 4


def test_toml_settings_and_overrides(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text('mode = "raw"\nlux = [2, 20]\nepochs = 3\nlr = 0.01\n')
    c = resolve_config({"data": "x", "lr": 0.02}, p)
    assert (c.mode, c.lux, c.epochs, c.lr) == ("raw", (2.0, 20.0), 3, 0.02)
    with pytest.raises(BadInputError, match="unknown training setting"):
        resolve_config({"data": "x", "steps": 1, "colour": 1})
    with pytest.raises(BadInputError, match="exactly one"):
        resolve_config({"data": "x", "steps": 1, "epochs": 2})


def test_one_extrapolation_warning_per_run(colours, tmp_path):
    """An ELD profile at 3 lux (ISO 66,667, measured up to 6400): one line for the run, not one per
    loader worker."""
    r = run_cli("train", "--mode", "raw", "--data", str(colours[0]), "--size", "32", "--batch-size", "8",
                "--width", "0.25", "--steps", "2", "--workers", "2", "--profile", "eld-sonya7s2", "--lux", "3",
                "--out", str(tmp_path / "run"), "--json")
    warns = [line for line in r.stderr.splitlines() if "warning" in line.lower()]
    assert warns == ["dpcal: warning: profile eld-sonya7s2 is measured at ISO 100-6400; ISO up to 66667 is "
                     "extrapolated by its cts ISO model"], r.stderr


def test_resume_before_the_first_checkpoint_starts_again(colours, tmp_path):
    """A run killed before it wrote a checkpoint left config.json and metrics rows: `--resume`
    (what the interrupt message asks for) starts it from step 0 and ends as an uninterrupted run."""
    ref = train(_cfg(colours, steps=4), tmp_path / "ref", progress=False)
    out = tmp_path / "run"
    train(_cfg(colours, steps=4), out, progress=False)
    (out / "model.pt").unlink()
    for p in (out / "checkpoints").iterdir():
        p.unlink()
    (out / "metrics.json").unlink()
    res = train(_cfg(colours, steps=4), out, resume=True, progress=False)
    assert res["steps"] == 4 and res["val"] == ref["val"]
    assert [r["step"] for r in _metrics(out)] == [r["step"] for r in _metrics(tmp_path / "ref")]
    for k, v in _state(tmp_path / "ref" / "model.pt").items():
        assert torch.equal(v, _state(out / "model.pt")[k]), k


def test_interrupt_message_of_train_names_resume(colours, tmp_path, monkeypatch, capsys):
    import dpcal.learn.trainer
    from dpcal.cli import main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(dpcal.learn.trainer, "train", interrupted)
    with pytest.raises(SystemExit) as e:
        main(_cli_args(colours, tmp_path / "run", 4))
    assert e.value.code == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "dpcal: interrupted; rerun with --resume to continue"
