"""dpcal.workflows.simulate: the dataset writer (layout, manifest, card, bad input, determinism)."""

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from dpcal.errors import BadInputError
from dpcal.profile import load_profile
from dpcal.sim import Simulator
from dpcal.sim.layout import MANIFEST_COLUMNS, derive_seed, discover, imagenet_synsets
from dpcal.workflows.simulate import simulate_dataset
from dpcal.sim.geometry import load_image

WNIDS = ["n01440764", "n02102040"]  # class indices 0 and 217 in the ILSVRC order


def smooth(h, w, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([np.sin(xx / rng.uniform(4, 12) + rng.uniform(0, 6)) * np.cos(yy / rng.uniform(5, 15))
                    for _ in range(3)], -1)
    return ((img * 0.45 + 0.5) * 255).astype(np.uint8)


def make_tree(root: Path, classes=WNIDS, n=3, size=(90, 70), ext="JPEG", seed=0) -> Path:
    for ci, c in enumerate(classes):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(smooth(size[1], size[0], seed + 100 * ci + i)).save(root / c / f"img_{ci}_{i}.{ext}")
    return root


def read_manifest(dst: Path) -> list[dict]:
    with open(dst / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def tree_bytes(dst: Path) -> dict:
    return {p.relative_to(dst).as_posix(): p.read_bytes() for p in sorted(dst.rglob("*"))
            if p.is_file() and p.name != "dataset.json"}


def test_synsets_shipped():
    s = imagenet_synsets()
    assert len(s) == 1000 == len(set(s)) and s.index("n02102040") == 217


def test_writes_png_dataset_and_card(tmp_path):
    src = make_tree(tmp_path / "src")
    dst = tmp_path / "dst"
    res = simulate_dataset(src, dst, "nexus6p-rear", lux=(3, 30), size=64, seed=7, workers=0, progress=False)
    card = json.loads((dst / "dataset.json").read_text())
    assert card["complete"] is True and card["schema_version"] == 1
    assert card["counts"] == {"images": 6, "ok": 6, "skipped": 0, "ignored_files": 0}
    assert card["classes"] == {"n01440764": 0, "n02102040": 217} and card["num_classes"] == 1000
    assert card["settings"]["simulator"]["pattern"] == "BGGR" and card["settings"]["simulator"]["lux"] == [3, 30]
    assert res["run"]["processed_now"] == 6 and not (dst / ".dpcal-sim").exists()
    rows = read_manifest(dst)
    assert list(rows[0]) == MANIFEST_COLUMNS and len(rows) == 6
    prof = load_profile("nexus6p-rear")
    sim = Simulator(prof, lux=(3, 30))
    for r in rows:
        assert r["status"] == "ok" and int(r["class_index"]) == {"n01440764": 0, "n02102040": 217}[r["label"]]
        assert int(r["seed"]) == derive_seed(7, r["source"])
        lux = float(r["lux"])
        assert 3 <= lux <= 30
        assert float(r["alpha_R"]) == prof.noise(lux=lux).alpha["R"]
        png = cv2.imread(str(dst / r["path"]), cv2.IMREAD_UNCHANGED)
        assert png.dtype == np.uint16 and png.shape == (64, 64)
        # The PNG holds round(value * 65535) of the simulator's output for this image's seed.
        seed = int(r["seed"])
        img, _ = load_image(src / r["source"], 64, rng=np.random.default_rng([seed, 1]), tone="unprocess")
        out = sim(torch.from_numpy(img.transpose(2, 0, 1).copy())[None], seeds=[seed], tone_applied=True)
        assert float(out.lux[0]) == lux
        np.testing.assert_array_equal(png, np.rint(out.mosaic[0, 0].double().numpy() * 65535).astype(np.uint16))
    # Files are readable by others (not mkstemp's 0600).
    assert (dst / rows[0]["path"]).stat().st_mode & 0o044


def test_class_index_sorted_names_empty_class_and_ignored_files(tmp_path):
    src = make_tree(tmp_path / "src", classes=["zebra", "apple"], n=2, ext="png")
    (src / "empty").mkdir()
    (src / "apple" / "notes.txt").write_text("not an image")
    (src / "stray.jpg").write_bytes(b"x")
    res = simulate_dataset(src, tmp_path / "dst", lux=5, size=32, workers=0, progress=False)
    assert res["classes"] == {"apple": 0, "empty": 1, "zebra": 2}
    assert res["class_index_source"] == "sorted labels" and res["empty_classes"] == ["empty"]
    assert res["counts"]["ignored_files"] == 2 and res["counts"]["ok"] == 4


def test_csv_source(tmp_path):
    make_tree(tmp_path / "imgs", classes=["a", "b"], n=2, ext="png")
    (tmp_path / "list.csv").write_text("path,label\nimgs/a/img_0_0.png,cat\nimgs/b/img_1_1.png,dog\nimgs/a/img_0_1.png,dog\n")
    res = simulate_dataset(tmp_path / "list.csv", tmp_path / "dst", lux=5, size=32, workers=0, progress=False)
    assert res["source"]["kind"] == "csv" and res["classes"] == {"cat": 0, "dog": 1}
    rows = read_manifest(tmp_path / "dst")
    assert sorted(r["path"] for r in rows) == ["cat/img_0_0.png", "dog/img_0_1.png", "dog/img_1_1.png"]
    (tmp_path / "dup.csv").write_text("imgs/a/img_0_0.png,cat\nimgs/a/img_0_0.png,dog\n")
    with pytest.raises(BadInputError, match="listed more than once"):
        discover(tmp_path / "dup.csv")
    (tmp_path / "bad.csv").write_text("imgs/a/img_0_0.png\n")
    with pytest.raises(BadInputError, match="row 1 is not 'path,label'"):
        discover(tmp_path / "bad.csv")


def test_bad_images_are_skipped_with_reasons(tmp_path):
    src = make_tree(tmp_path / "src", classes=["n01440764"], n=2)
    d = src / "n01440764"
    (d / "corrupt.JPEG").write_bytes(b"\xff\xd8\xff\xe0garbage" * 20)
    data = (d / "img_0_0.JPEG").read_bytes()
    (d / "truncated.JPEG").write_bytes(data[: len(data) // 2])
    Image.fromarray(smooth(20, 20, 1)).save(d / "tiny.png")
    Image.fromarray(smooth(60, 80, 2)).convert("CMYK").save(d / "cmyk.JPEG")
    Image.fromarray(smooth(60, 80, 3)).convert("L").save(d / "gray.JPEG")
    Image.fromarray(np.dstack([smooth(60, 80, 4), np.full((60, 80), 9, np.uint8)])).save(d / "alpha.png")
    cv2.imwrite(str(d / "deep.png"), (smooth(60, 80, 5).astype(np.uint16) * 257))
    # The same stem twice in one class gets distinct outputs.
    Image.fromarray(smooth(60, 80, 6)).save(d / "img_0_0.png")
    res = simulate_dataset(src, tmp_path / "dst", lux=10, size=32, workers=0, progress=False)
    rows = {Path(r["source"]).name: r for r in read_manifest(tmp_path / "dst")}
    assert rows["corrupt.JPEG"]["status"] == "skipped" and "corrupt" in rows["corrupt.JPEG"]["detail"]
    assert rows["truncated.JPEG"]["status"] == "skipped" and "truncated" in rows["truncated.JPEG"]["detail"]
    assert rows["tiny.png"]["status"] == "skipped" and "smaller than min_size 32" in rows["tiny.png"]["detail"]
    assert rows["tiny.png"]["path"] == "" and rows["tiny.png"]["lux"] == ""
    for name, note in [("cmyk.JPEG", "CMYK"), ("gray.JPEG", "grayscale"), ("alpha.png", "alpha"), ("deep.png", "16-bit")]:
        assert rows[name]["status"] == "ok" and note in rows[name]["detail"], rows[name]
    assert {rows["img_0_0.JPEG"]["path"], rows["img_0_0.png"]["path"]} == {"n01440764/img_0_0.png", "n01440764/img_0_0__2.png"}
    assert res["complete"] is True and res["counts"]["skipped"] == 3 and res["counts"]["ok"] == 7


def test_same_output_whatever_the_workers_and_executor(tmp_path):
    src = make_tree(tmp_path / "src", n=6)
    kw = dict(lux=(2, 20), size=32, seed=3, progress=False, chunk_size=2)
    simulate_dataset(src, tmp_path / "w0", workers=0, **kw)
    simulate_dataset(src, tmp_path / "w2", workers=2, **kw)
    ref = tree_bytes(tmp_path / "w0")
    assert len(ref) == 13  # 12 mosaics + the manifest, nothing else left behind
    assert tree_bytes(tmp_path / "w2") == ref
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cl:
        simulate_dataset(src, tmp_path / "dask", executor="dask", scheduler=cl.scheduler_address, **kw)
        with distributed.Client(cl) as client:  # an existing Client works too
            simulate_dataset(src, tmp_path / "dask2", executor="dask", scheduler=client, **kw)
    assert tree_bytes(tmp_path / "dask") == ref == tree_bytes(tmp_path / "dask2")
    # A different seed changes everything.
    simulate_dataset(src, tmp_path / "s4", workers=0, **{**kw, "seed": 4})
    other = tree_bytes(tmp_path / "s4")
    assert all(other[k] != v for k, v in ref.items() if k.endswith(".png"))


def test_dng_output_carries_pattern_and_levels(tmp_path):
    from dpcal.io.raw import read_raw

    src = make_tree(tmp_path / "src", classes=["n01440764"], n=1)
    kw = dict(lux=20, size=32, seed=1, workers=0, progress=False)
    simulate_dataset(src, tmp_path / "dng", fmt="dng", **kw)
    simulate_dataset(src, tmp_path / "png", fmt="png", **kw)
    row = read_manifest(tmp_path / "dng")[0]
    raw = read_raw(tmp_path / "dng" / row["path"])
    assert raw.pattern == "BGGR" and tuple(raw.black_level) == (64.0,) * 4 and raw.white_level == 1023
    assert raw.iso == round(float(row["iso"]))
    png = cv2.imread(str(tmp_path / "png" / read_manifest(tmp_path / "png")[0]["path"]), cv2.IMREAD_UNCHANGED)
    np.testing.assert_allclose(raw.normalized(), png / 65535, atol=0.5 / 65535 + 1e-9)


def test_destination_rules(tmp_path):
    src = make_tree(tmp_path / "src", classes=["a"], n=1, ext="png")
    kw = dict(lux=5, size=32, workers=0, progress=False)
    dst = tmp_path / "dst"
    simulate_dataset(src, dst, **kw)
    with pytest.raises(BadInputError, match="already holds a complete dataset"):
        simulate_dataset(src, dst, **kw)
    assert simulate_dataset(src, dst, overwrite=True, **kw)["complete"]
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "keep.txt").write_text("mine")
    with pytest.raises(BadInputError, match="not empty and holds no dpcal dataset"):
        simulate_dataset(src, tmp_path / "foreign", **kw)
    (tmp_path / "file").write_text("x")
    with pytest.raises(BadInputError, match="not a folder"):
        simulate_dataset(src, tmp_path / "file", **kw)
    with pytest.raises(BadInputError, match="cannot write to the output folder"):
        simulate_dataset(src, tmp_path / "file" / "sub", **kw)
    with pytest.raises(BadInputError, match="inside the source"):
        simulate_dataset(src, src / "out", **kw)
    # An unfinished run made with other settings is not mixed with a new one.
    card = json.loads((dst / "dataset.json").read_text())
    card["complete"] = False
    (dst / "dataset.json").write_text(json.dumps(card))
    with pytest.raises(BadInputError, match="unfinished dataset made with different settings"):
        simulate_dataset(src, dst, **{**kw, "lux": 6})


def test_read_only_destination(tmp_path):
    import os

    if os.geteuid() == 0:
        pytest.skip("root can write to read-only folders")
    src = make_tree(tmp_path / "src", classes=["a"], n=1, ext="png")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(BadInputError, match="cannot write"):
            simulate_dataset(src, ro / "dst", lux=5, size=32, workers=0, progress=False)
    finally:
        ro.chmod(0o755)


@pytest.mark.parametrize("kw,msg", [
    ({"lux": 0}, "lux must be a positive"),
    ({"lux": (5, -1)}, "lux must be a positive"),
    ({"psf": True}, "has no PSF field"),
    ({"size": 33}, "even number"),
    ({"fmt": "tiff"}, "unknown format"),
    ({"executor": "dask", "scheduler": None}, "needs `scheduler`"),
])
def test_bad_settings_are_clear_errors(tmp_path, kw, msg):
    src = make_tree(tmp_path / "src", classes=["a"], n=1, ext="png")
    with pytest.raises(BadInputError, match=msg):
        simulate_dataset(src, tmp_path / "dst", **{"lux": 5, "size": 32, "workers": 0, "progress": False, **kw})
    card = tmp_path / "dst" / "dataset.json"
    assert not card.exists() or not json.loads(card.read_text())["complete"]


def test_missing_and_empty_sources(tmp_path):
    with pytest.raises(BadInputError, match="no such folder"):
        discover(tmp_path / "nope")
    (tmp_path / "flat").mkdir()
    Image.fromarray(smooth(40, 40, 0)).save(tmp_path / "flat" / "a.png")
    with pytest.raises(BadInputError, match="no class folders"):
        discover(tmp_path / "flat")
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(BadInputError, match="no image files"):
        discover(tmp_path / "empty")


def test_preview(tmp_path):
    src = make_tree(tmp_path / "src", n=1)
    res = simulate_dataset(src, tmp_path / "dst", lux=(3, 300), size=32, workers=0, progress=False,
                           preview=tmp_path / "p.png")
    img = cv2.imread(res["preview"])[..., ::-1].astype(float)
    # 2 rows, 5 columns (clean, mosaic, 3 light levels) of (32 + 4) px tiles at 2x, plus a header.
    assert img.shape == (28 + 2 * 36 * 2, 5 * 36 * 2, 3)
    t = 36 * 2
    tiles = [[img[28 + r * t + 4 + 8 : 28 + (r + 1) * t - 4 - 8, c * t + 4 + 8 : (c + 1) * t - 4 - 8]  # inside the border
              for c in range(5)] for r in range(2)]
    for row in tiles:
        clean, mosaic, dark, mid, bright = row
        assert clean.mean() > 40 and clean.std() > 10  # a picture, not black or flat
        assert mosaic.mean() > 10  # CFA samples in their colours: about a third of the light
        # Noise: the simulated tiles differ from the clean image, most at the lowest light level
        # (3 lux: alpha 0.12) and least at the highest (300 lux).
        err = [np.abs(x - clean).mean() for x in (dark, mid, bright)]
        assert err[0] > err[2] and err[0] > 20, err
    # Each row shows its own image.
    assert np.abs(tiles[0][0] - tiles[1][0]).mean() > 10


def test_real_imagenet_folders(shared_data, tmp_path):
    src = tmp_path / "src"
    for d in sorted((shared_data / "imagenet_val_sample").iterdir())[:3]:
        (src / d.name).mkdir(parents=True)
        for f in sorted(d.iterdir())[:1]:
            (src / d.name / f.name).symlink_to(f)
    for d in sorted((shared_data / "imagenette160" / "val").iterdir())[:2]:
        (src / d.name).mkdir(parents=True, exist_ok=True)
        for f in sorted(d.iterdir())[:2]:
            (src / d.name / f.name).symlink_to(f)
    res = simulate_dataset(src, tmp_path / "dst", lux=(2, 20), workers=0, progress=False)
    syn = imagenet_synsets()
    assert res["counts"]["ok"] == res["counts"]["images"] == 7
    assert all(res["classes"][w] == syn.index(w) for w in res["classes"])
    for r in read_manifest(tmp_path / "dst"):
        png = cv2.imread(str(tmp_path / "dst" / r["path"]), cv2.IMREAD_UNCHANGED)
        assert png.shape == (128, 128) and png.dtype == np.uint16


def test_write_failure_leaves_an_incomplete_resumable_dataset(tmp_path, monkeypatch):
    import dpcal.workflows.simulate_worker as worker
    from dpcal.errors import DpcalError

    src = make_tree(tmp_path / "src", n=4)
    dst = tmp_path / "dst"
    real = worker.write_bytes_atomic
    calls = {"n": 0}

    def flaky(path, data):
        calls["n"] += str(path).endswith(".png")
        if calls["n"] > 3:
            raise OSError(28, "No space left on device")
        real(path, data)

    monkeypatch.setattr(worker, "write_bytes_atomic", flaky)
    kw = dict(lux=5, size=32, workers=0, progress=False, chunk_size=1)
    with pytest.raises(DpcalError, match="No space left on device"):
        simulate_dataset(src, dst, **kw)
    assert json.loads((dst / "dataset.json").read_text())["complete"] is False
    assert not (dst / "manifest.csv").exists()
    monkeypatch.setattr(worker, "write_bytes_atomic", real)
    res = simulate_dataset(src, dst, **kw)
    assert res["complete"] and res["run"]["processed_now"] == 5 and res["counts"]["ok"] == 8
