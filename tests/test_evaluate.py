"""dpcal eval: hand-checked metrics, repeatability, the simulate -> eval round trip, real RAW
captures, the JSON and CSV interface, reports, and one-line refusals of bad input."""

import csv
import io
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dpcal.errors import BadInputError
from dpcal.evaluate import PREDICTION_COLUMNS, evaluate
from dpcal.evaluate.captures import pattern_offset, reduce_mosaic
from dpcal.learn.metrics import confusion_matrix, per_class_accuracy, topk_correct, topk_predictions

from .conftest import run_cli
from .test_learn_train import _make_folder

CLASSES = ["class0", "class1", "class2"]


def _save_ckpt(path: Path, kind: str = "raw", classes=CLASSES, seed: int = 0, lux=3.0, sim_mode: str = "reference",
               size: int = 32) -> Path:
    """An untrained tiny model saved as `dpcal train` saves one (weights from ``seed``)."""
    from dpcal.learn.checkpoint import save_checkpoint
    from dpcal.learn.models import build_model, preset
    from dpcal.profile import load_profile
    from dpcal.sim.config import SimConfig

    prof = load_profile("nexus6p-rear")
    lo_hi = (lux, lux) if not isinstance(lux, tuple) else lux
    cfg = SimConfig(mode=sim_mode, lux=lo_hi).resolve(prof).to_dict()
    name = {"raw": "raw-mobilenet_v1", "joint": "joint", "clean": "mobilenet_v1", "reconstruct": "anscombe"}[kind]
    spec = preset(name, len(classes), cfg["pattern"], sim_mode)
    cls = spec if kind == "clean" else spec["kwargs"].get("classifier")
    if cls is not None:
        cls["kwargs"]["width"] = 0.25
    torch.manual_seed(seed)
    model = build_model(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, {"model": spec, "input": getattr(model, "input_kind", "raw"), "state_dict": model.state_dict(),
                           "classes": list(classes), "sim": {"profile": prof.doc, "config": cfg, "size": size},
                           "train": {"seed": seed, "mode": kind, "sim_mode": sim_mode}, "step": 0})
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return _make_folder(tmp_path_factory.mktemp("evaldata") / "val", 8, 1, size=40)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpts")
    return {k: _save_ckpt(d / k / "model.pt", k, seed=i) for i, k in enumerate(["raw", "joint", "clean", "reconstruct"])}


def _csv_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# -- metrics -----------------------------------------------------------------------------------
def test_topk_against_hand_computed_cases():
    # 7 classes; labels ranked 1st, 5th, 6th (not in the top 5) and 3rd.
    logits = torch.tensor([
        [9.0, 1, 2, 3, 4, 5, 6],
        [0.0, 6, 5, 4, 3, 2, 1],   # label 5 (score 2): the fifth guess, a top-5 hit
        [0.0, 6, 5, 4, 3, 2, 1],   # label 6 (score 1): the sixth guess, NOT a top-5 hit (the reference code counted it)
        [1.0, 3, 2, 0, 0, 0, 0],   # label 0: third
    ])
    labels = torch.tensor([0, 5, 6, 0])
    assert topk_correct(logits, labels) == (1, 3)
    assert topk_predictions(logits, 5)[1].tolist() == [1, 2, 3, 4, 5]
    # Ties: torch.topk keeps the lower index first on CPU; the same rule for every model.
    tied = torch.tensor([[1.0, 1.0, 0.0]])
    assert topk_predictions(tied, 5).tolist() == [[0, 1, 2]]
    assert topk_correct(tied, torch.tensor([1])) == (0, 1)
    # Fewer than five classes: top-5 means all of them.
    two = torch.tensor([[0.2, 0.8], [0.9, 0.1]])
    assert topk_predictions(two, 5).shape == (2, 2)
    assert topk_correct(two, torch.tensor([0, 1])) == (0, 2)


def test_confusion_matrix_and_per_class_accuracy():
    cm = confusion_matrix([0, 0, 0, 1, 1, 2], [0, 1, 0, 1, 2, 2], 4)
    assert cm.tolist() == [[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    acc = per_class_accuracy(cm)
    assert acc[:3].tolist() == [2 / 3, 0.5, 1.0] and math.isnan(acc[3])


# -- real captures: geometry and the noise of binning ----------------------------------------
@pytest.mark.parametrize("target", ["RGGB", "BGGR", "GRBG", "GBRG"])
def test_reduce_mosaic_keeps_every_pixel_in_its_colour(target):
    from dpcal.cfa import plane_map

    values = np.array([10.0, 20.0, 30.0, 40.0])  # R, Gr, Gb, B
    for src in ("RGGB", "GBRG"):
        m = values[plane_map(src, 70, 90)]
        out, n = reduce_mosaic(m, src, target, 16, "bin")
        assert out.shape == (16, 16) and n == 16  # k = floor(69 / 16) = 4
        assert np.array_equal(out, values[plane_map(target, 16, 16)].astype(np.float32))
    assert pattern_offset("RGGB", target) in [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_binning_scales_alpha_and_sigma_as_derived():
    """Average k*k same-colour samples of simulated Poisson-Gaussian data: the variance of the
    result is (alpha / n) x + sigma^2 / n, so alpha -> alpha / n and sigma -> sigma / sqrt(n)."""
    from dpcal.physics.noise import poisson_gaussian

    alpha, sigma, x = 2e-3, 1e-2, 0.3
    clean = torch.full((1, 1, 1024, 1024), x, dtype=torch.float64)
    y = poisson_gaussian(clean, torch.full((1, 4), alpha, dtype=torch.float64),
                         torch.full((1, 4), sigma, dtype=torch.float64), pattern="RGGB",
                         generator=torch.Generator().manual_seed(0))[0, 0].numpy()
    out, n = reduce_mosaic(y, "RGGB", "RGGB", 128, "bin")
    assert n == 64
    var = out.astype(np.float64).var(ddof=1)
    expected = (alpha / n) * x + (sigma / math.sqrt(n)) ** 2
    assert var == pytest.approx(expected, rel=0.06)  # 16384 samples: ~1.1 % standard error
    sub, n1 = reduce_mosaic(y, "RGGB", "RGGB", 128, "subsample")
    assert n1 == 1 and sub.astype(np.float64).var(ddof=1) == pytest.approx(alpha * x + sigma ** 2, rel=0.06)


# -- evaluate: repeatability, the interface --------------------------------------------------------
def test_same_seed_same_numbers_different_seed_different_noise(folder, ckpts, tmp_path):
    args = [str(ckpts["raw"]), str(ckpts["joint"]), "--data", str(folder), "--lux", "2", "20", "--json"]
    a = run_cli("eval", *args, "--seed", "7", "--predictions", str(tmp_path / "a.csv"))
    b = run_cli("eval", *args, "--seed", "7", "--predictions", str(tmp_path / "b.csv"))
    c = run_cli("eval", *args, "--seed", "8", "--predictions", str(tmp_path / "c.csv"))
    def numbers(r):  # everything but the timing, to the last digit
        doc = json.loads(r.stdout)
        for res in doc["results"]:
            res.pop("images_per_s")
        return json.dumps(doc)

    assert numbers(a) == numbers(b)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    lux_a = [r["lux"] for r in _csv_rows(tmp_path / "a.csv")]
    lux_c = [r["lux"] for r in _csv_rows(tmp_path / "c.csv")]
    assert lux_a != lux_c and all(2 <= float(v) <= 20 for v in lux_a)
    # Both checkpoints saw the same images with the same noise (one shared pass).
    ra = _csv_rows(tmp_path / "a.csv")
    assert [r["lux"] for r in ra if r["checkpoint"] == str(ckpts["raw"])] == \
           [r["lux"] for r in ra if r["checkpoint"] == str(ckpts["joint"])]


def test_json_shape_and_predictions_columns(folder, ckpts, tmp_path):
    pred = tmp_path / "p.csv"
    r = run_cli("eval", str(ckpts["raw"]), str(ckpts["clean"]), "--data", str(folder), "--lux-sweep", "3,200",
                "--predictions", str(pred), "--json")
    doc = json.loads(r.stdout)
    assert list(doc) == ["results"]
    raw, clean = doc["results"]
    for res in (raw, clean):
        assert {"checkpoint", "model", "n", "top1", "top5", "per_lux"} <= set(res)
        assert 0 <= res["top1"] <= res["top5"] <= 1
    assert raw["n"] == 2 * 24 and [e["lux"] for e in raw["per_lux"]] == [3.0, 200.0]
    assert clean["n"] == 24 and clean["per_lux"][0]["lux"] is None  # clean images: the ceiling
    assert raw["per_lux"][0]["top1"] * 24 == pytest.approx(round(raw["per_lux"][0]["top1"] * 24))
    assert raw["model"] == "mosaic+mobilenet_v1" and raw["params"] > 0 and raw["macs"] > 0
    assert np.array(raw["confusion"]).sum() == raw["n"]
    with open(pred, newline="") as f:
        header = f.readline().strip()
    assert header == "checkpoint,path,label,top1,top2,top3,top4,top5,lux"
    rows = _csv_rows(pred)
    assert len(rows) == 48 + 24
    # Three classes: three guesses, the rest empty; labels are checkpoint class indices.
    assert all(r["top4"] == "" and r["top5"] == "" and r["label"] in "012" for r in rows)
    hits = sum(r["top1"] == r["label"] for r in rows if r["checkpoint"] == str(ckpts["raw"]))
    assert hits == round(raw["top1"] * raw["n"])
    assert PREDICTION_COLUMNS == header.split(",")


def test_reconstruction_models_get_psnr_and_ssim(folder, ckpts):
    res = evaluate([ckpts["reconstruct"]], folder, lux=200, seed=0, panel_images=0)
    r = res.results[0]
    assert r["top1"] is None and 0 < r["ssim"] <= 1 and math.isfinite(r["psnr"])
    assert r["per_lux"][0]["psnr"] == pytest.approx(r["psnr"])


def test_round_trip_simulated_dng_folder_gives_the_same_predictions(folder, ckpts, tmp_path):
    """dpcal simulate --format dng, then eval on it == eval on the clean folder on the fly."""
    dst = tmp_path / "sim"
    run_cli("simulate", str(folder), str(dst), "--mode", "reference", "--lux", "2", "20", "--seed", "5",
            "--format", "dng", "--size", "32", "--workers", "0")
    ck = _save_ckpt(tmp_path / "range" / "model.pt", "raw", seed=5, lux=(2.0, 20.0))
    a = evaluate([ck], dst, seed=5, panel_images=0)
    b = evaluate([ck], folder, seed=5, panel_images=0)  # on the fly, the checkpoint's settings
    pa = {r["path"]: r for r in a.predictions}
    pb = {r["path"]: r for r in b.predictions}
    assert set(pa) == set(pb) and len(pa) == 24
    same = sum(all(pa[k][f"top{j}"] == pb[k][f"top{j}"] for j in (1, 2, 3)) for k in pa)
    assert same >= 0.99 * len(pa)
    assert all(pa[k]["lux"] == pytest.approx(pb[k]["lux"], rel=1e-12) for k in pa)  # one seed rule everywhere
    assert len({r["top1"] for r in b.predictions}) >= 1 and len({r["lux"] for r in b.predictions}) == 24


def test_report_tables_plots_and_overwrite(folder, ckpts, tmp_path):
    out = tmp_path / "rep"
    args = ["eval", str(ckpts["raw"]), str(ckpts["joint"]), str(ckpts["clean"]), "--data", str(folder),
            "--lux-sweep", "3,20", "--report", str(out)]
    run_cli(*args)
    for f in ("report.md", "table.md", "table.csv", "accuracy_vs_lux.png", "panel.png", "results.json"):
        assert (out / f).is_file(), f
    import pandas as pd

    table = pd.read_csv(out / "table.csv")
    assert table["model"].tolist() == ["raw", "joint", "clean"]
    assert {"top-1 / top-5 @ 3 lux", "top-1 / top-5 @ 20 lux", "top-1 / top-5 @ clean", "params (M)",
            "MACs (M)"} <= set(table.columns)
    md = (out / "report.md").read_text()
    assert "![panel](panel.png)" in md and "| raw |" in md
    r = run_cli(*args, check=1)
    assert "already holds a report" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    run_cli(*args, "--overwrite")


# -- real RAW captures ---------------------------------------------------------------------------
@pytest.mark.data
def test_raw_captures_path_on_real_files(shared_data, tmp_path):
    raw = shared_data / "raw"
    cap = tmp_path / "captures"
    for cls, name in (("a", "imageio_Blackmagic.dng"), ("b", "rawpy_RAW_KODAK_DC50.KDC"),
                      ("a", "imageio_Nikon_uncompressed.nef")):
        (cap / cls).mkdir(parents=True, exist_ok=True)
        shutil.copy(raw / name, cap / cls / name)
    ck = _save_ckpt(tmp_path / "ck" / "model.pt", "joint", classes=["a", "b", "c"], sim_mode="reference")
    pred = tmp_path / "p.csv"
    r = run_cli("eval", str(ck), "--data", str(cap), "--raw", "--profile", "nexus6p-rear", "--iso", "800",
                "--predictions", str(pred), "--json")
    res = json.loads(r.stdout)["results"][0]
    assert res["n"] == 2 and res["data"]["kind"] == "captures"  # the scanner NEF (no CFA) is skipped with a warning
    assert "imageio_Nikon_uncompressed.nef" in r.stderr and "not a Bayer mosaic" in r.stderr
    rows = _csv_rows(pred)
    assert sorted(r["path"] for r in rows) == ["a/imageio_Blackmagic.dng", "b/rawpy_RAW_KODAK_DC50.KDC"]
    # Equivalent lux under the profile's light model, 2000 * 100 / ISO: --iso 800 for the DNG, which
    # has no ISO; the KDC's own ISO 84 (in its header, read by LibRaw) for the KDC.
    lux = {r["path"]: float(r["lux"]) for r in rows}
    assert lux == pytest.approx({"a/imageio_Blackmagic.dng": 250.0, "b/rawpy_RAW_KODAK_DC50.KDC": 2000 * 100 / 84})
    # The data path itself: pattern shifted to the model's BGGR, white balance and noise scaled.
    from dpcal.evaluate.captures import CaptureDataset, open_captures

    ds = CaptureDataset(open_captures(cap), "nexus6p-rear", size=32, pattern="BGGR", white_balance=True, iso=800)
    mos, alpha, sigma, lux, label, _ = ds[0]
    from dpcal.profile import load_profile

    base = load_profile("nexus6p-rear").noise(iso=800)
    wb = (2.2060446739196777, 1.0, 1.0, 1.886792540550232)  # the Blackmagic file's as-shot gains (R, Gr, Gb, B)
    assert alpha.tolist() == pytest.approx([base.alpha[q] * g for q, g in zip("R Gr Gb B".split(), wb)], rel=1e-6)
    assert mos.shape == (1, 32, 32) and 0 <= float(mos.min()) and float(mos.max()) <= 1
    # Only non-Bayer files: refused in one line.
    only = tmp_path / "scanner" / "a"
    only.mkdir(parents=True)
    shutil.copy(raw / "imageio_Nikon_uncompressed.nef", only)
    r = run_cli("eval", str(ck), "--data", str(only.parent), "--raw", "--profile", "nexus6p-rear", "--iso", "800",
                check=1)
    assert "none of the" in r.stderr and r.stderr.strip().splitlines()[-1].startswith("dpcal: error:")


# -- bad input -------------------------------------------------------------------------------------
def _one_line_error(r, *words):
    lines = r.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("dpcal: error:"), r.stderr
    assert "Traceback" not in r.stderr
    for w in words:
        assert w in lines[-1], lines[-1]


def test_bad_input_one_line_exit_1(folder, ckpts, tmp_path):
    other = _save_ckpt(tmp_path / "other.pt", "raw", classes=["cat", "dog", "fish"])
    _one_line_error(run_cli("eval", str(other), "--data", str(folder), check=1), "other classes")
    _one_line_error(run_cli("eval", str(tmp_path / "nope"), "--data", str(folder), check=1), "no such checkpoint")
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_line_error(run_cli("eval", str(ckpts["raw"]), "--data", str(empty), check=1))
    unlabelled = tmp_path / "flat"
    unlabelled.mkdir()
    shutil.copy(next(folder.rglob("*.png")), unlabelled / "x.png")
    _one_line_error(run_cli("eval", str(ckpts["raw"]), "--data", str(unlabelled), check=1), "class folders")
    # A clean-image classifier on RAW data needs an ISP in front of it.
    dst = tmp_path / "sim"
    run_cli("simulate", str(folder), str(dst), "--mode", "reference", "--lux", "3", "--size", "32", "--workers", "0")
    _one_line_error(run_cli("eval", str(ckpts["clean"]), "--data", str(dst), check=1), "--mode isp --steps 0")
    # A model of another geometry than the simulated data.
    big = _save_ckpt(tmp_path / "big.pt", "raw", size=64)
    _one_line_error(run_cli("eval", str(big), "--data", str(dst), check=1), "64 px")
    with pytest.raises(BadInputError, match="`lux` or `lux_sweep`"):
        evaluate([ckpts["raw"]], folder, lux=3, lux_sweep=[3])


def test_eval_of_a_run_reproduces_its_validation_numbers(folder, tmp_path):
    """Settings default to the checkpoint's: evaluating the run's validation folder gives the
    trainer's own validation accuracy (same crops, noise seeds and light level)."""
    from dpcal.learn.config import resolve_config
    from dpcal.learn.trainer import train

    cfg = resolve_config(dict(mode="raw", data=str(folder), val_data=str(folder), size=32, batch_size=8, width=0.25,
                              lux=(2.0, 20.0), workers=0, steps=6, seed=4, lr=4e-3))
    res = train(cfg, tmp_path / "run", progress=False)
    ev = evaluate([tmp_path / "run"], folder, panel_images=0).results[0]
    assert ev["n"] == res["val"]["n"] == 24
    assert ev["top1"] == pytest.approx(res["val"]["top1"], abs=1e-9)
    assert ev["top5"] == pytest.approx(res["val"]["top5"], abs=1e-9)
    assert ev["seed"] == 4 and ev["per_lux"][0]["lux"] == [2.0, 20.0]
