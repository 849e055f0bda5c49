"""Decoding and the crop/resize rules (reference code's and realistic), and bad image files."""

import io

import numpy as np
import pytest
from PIL import Image

from dpcal.sim.geometry import (
    ImageSkip,
    central_crop_box,
    load_image,
    nearest_indices,
    plan_crop,
    sample_distorted_box,
)


def smooth_rgb(h, w, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([np.sin(xx / (7 + 3 * c) + rng.uniform(0, 6)) * np.cos(yy / (9 + c)) for c in range(3)], -1)
    return ((img * 0.45 + 0.5) * 255).astype(np.uint8)


def test_central_crop_matches_tf_rule():
    # tf.image.central_crop: offset int((n - n * f) / 2), size n - 2 * offset.
    for (h, w) in [(375, 500), (333, 500), (100, 100), (17, 9)]:
        c = central_crop_box(h, w, 0.875)
        assert c.y0 == int((h - h * 0.875) / 2) and c.h == h - 2 * c.y0
        assert c.x0 == int((w - w * 0.875) / 2) and c.w == w - 2 * c.x0


def test_nearest_indices_tf1_legacy():
    assert nearest_indices(438, 128).tolist()[:4] == [0, 3, 6, 10]
    idx = nearest_indices(329, 128)
    assert idx[-1] == (127 * 329) // 128 and np.all(np.diff(idx) >= 2)
    assert nearest_indices(64, 128).tolist()[:4] == [0, 0, 1, 1]  # upsampling repeats pixels


def test_distorted_box_follows_the_reference_rules():
    rng = np.random.default_rng(0)
    h, w = 375, 500
    area, aspect = [], []
    for _ in range(3000):
        c = sample_distorted_box(h, w, rng)
        assert 0 <= c.y0 and c.y0 + c.h <= h and 0 <= c.x0 and c.x0 + c.w <= w
        area.append(c.h * c.w / (h * w))
        aspect.append(c.w / c.h)
    area, aspect = np.array(area), np.array(aspect)
    # min_object_covered=0.1 with the whole image as the box raises the 0.05 area floor to 0.1.
    assert area.min() >= 0.1 and area.max() <= 1.0 and area.min() < 0.13 and area.max() > 0.9
    assert aspect.min() >= 0.75 - 0.02 and aspect.max() <= 1.33 + 0.02
    assert aspect.min() < 0.78 and aspect.max() > 1.3


def test_distorted_box_falls_back_to_whole_image():
    # A 1-pixel-high strip admits no crop with aspect in [0.75, 1.33] and area >= 10 %.
    c = sample_distorted_box(1, 400, np.random.default_rng(0))
    assert (c.y0, c.x0, c.h, c.w) == (0, 0, 1, 400)


def test_train_crop_flips_half_the_time():
    flips = [plan_crop("reference", "train", 300, 400, np.random.default_rng(s)).flip for s in range(400)]
    assert 0.4 < np.mean(flips) < 0.6


def write(path, arr, **kw):
    Image.fromarray(arr).save(path, **kw)
    return path


def test_reference_eval_exact_on_lossless_source(tmp_path):
    a = smooth_rgb(150, 210)
    p = write(tmp_path / "a.png", a)
    out, info = load_image(p, 64, mode="reference")
    c = central_crop_box(150, 210)
    crop = a[c.y0 : c.y0 + c.h, c.x0 : c.x0 + c.w]
    # tf.image.convert_image_dtype multiplies by float32(1 / 255).
    expect = crop[nearest_indices(c.h, 64)][:, nearest_indices(c.w, 64)].astype(np.float32) * np.float32(1 / 255)
    np.testing.assert_array_equal(out, expect)
    assert info["crop"][:4] == [c.y0, c.x0, c.h, c.w]


def test_reference_decodes_jpeg_fully(tmp_path):
    p = write(tmp_path / "a.JPEG", smooth_rgb(384, 512), quality=90)
    full = np.asarray(Image.open(p).convert("RGB"))
    out, _ = load_image(p, 128, mode="reference")
    c = central_crop_box(384, 512)
    crop = full[c.y0 : c.y0 + c.h, c.x0 : c.x0 + c.w]
    pick = crop[nearest_indices(c.h, 128)][:, nearest_indices(c.w, 128)]
    np.testing.assert_array_equal(out, pick.astype(np.float32) * np.float32(1 / 255))


def test_realistic_draft_decode_close_to_full_decode(tmp_path):
    import cv2

    p = write(tmp_path / "a.jpg", smooth_rgb(600, 800), quality=92)
    fast, info = load_image(p, 128, mode="realistic")
    y0, x0, h, w, _ = info["crop"]
    assert y0 % 4 == 0 and x0 % 4 == 0 and h % 4 == 0  # snapped to the 1/4-scale DCT blocks
    full = np.asarray(Image.open(p).convert("RGB")).astype(np.float32) / 255
    slow = cv2.resize(full[y0 : y0 + h, x0 : x0 + w], (128, 128), interpolation=cv2.INTER_AREA)
    assert fast.shape == (128, 128, 3)
    assert float(np.abs(fast - slow).mean()) < 0.01


def test_realistic_tone_is_applied_to_codes(tmp_path):
    from dpcal.physics.color import srgb_to_linear
    import torch

    p = write(tmp_path / "flat.png", np.full((100, 120, 3), 200, np.uint8))
    out, _ = load_image(p, 32, tone="gamma")
    np.testing.assert_allclose(out, float(srgb_to_linear(torch.tensor(200 / 255, dtype=torch.float64))), rtol=1e-5)


def test_train_crop_deterministic(tmp_path):
    p = write(tmp_path / "a.png", smooth_rgb(120, 160))
    a, ia = load_image(p, 32, crop="train", rng=np.random.default_rng(3))
    b, ib = load_image(p, 32, crop="train", rng=np.random.default_rng(3))
    assert np.array_equal(a, b) and ia == ib


# ------------------------------------------------------------------------------------------
# bad and unusual files


def jpeg_bytes(arr, **kw):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", **kw)
    return buf.getvalue()


def test_corrupt_truncated_empty_and_tiny(tmp_path):
    (tmp_path / "corrupt.JPEG").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 10)
    data = jpeg_bytes(smooth_rgb(200, 200))
    (tmp_path / "trunc.JPEG").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.png").write_bytes(b"")
    write(tmp_path / "tiny.png", smooth_rgb(12, 40))
    for name, msg in [("corrupt.JPEG", "corrupt"), ("trunc.JPEG", "truncated"), ("empty.png", "not a readable image"),
                      ("tiny.png", "smaller than min_size 32")]:
        with pytest.raises(ImageSkip, match=msg):
            load_image(tmp_path / name, 64)


def test_cmyk_gray_alpha_palette_and_16bit(tmp_path):
    import cv2

    rgb = smooth_rgb(80, 96)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    Image.fromarray(rgb).convert("L").save(tmp_path / "gray.JPEG")
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "pal.png", transparency=0)
    g16 = (np.linspace(0, 65535, 80 * 96).reshape(80, 96)).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "g16.png"), g16)
    c16 = np.dstack([g16, g16 // 2, np.full_like(g16, 257 * 100 + 1)])  # B, G, R in OpenCV order
    cv2.imwrite(str(tmp_path / "c16.png"), c16)
    notes = {}
    for name in ["cmyk.jpg", "gray.JPEG", "rgba.png", "pal.png", "g16.png", "c16.png"]:
        out, info = load_image(tmp_path / name, 32, mode="reference")
        assert out.shape == (32, 32, 3) and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
        notes[name] = " ".join(info["notes"])
    assert "CMYK" in notes["cmyk.jpg"] and "grayscale" in notes["gray.JPEG"]
    assert "alpha" in notes["rgba.png"] and "alpha" in notes["pal.png"]
    assert "16-bit" in notes["g16.png"] and "16-bit" in notes["c16.png"]
    # 16-bit precision survives (257 * 100 + 1 is not an 8-bit code) and channels are RGB.
    out, _ = load_image(tmp_path / "c16.png", 32, mode="reference")
    np.testing.assert_allclose(out[..., 0], (257 * 100 + 1) / 65535, rtol=1e-6)
    gray, _ = load_image(tmp_path / "gray.JPEG", 32, mode="reference")
    assert np.array_equal(gray[..., 0], gray[..., 2])
    # CMYK (Adobe-inverted, as PIL writes it) comes back as the right colours.
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    cmyk, _ = load_image(tmp_path / "cmyk.jpg", 32, mode="reference")
    assert float(np.abs(cmyk - load_image(tmp_path / "rgb.png", 32, mode="reference")[0]).mean()) < 0.01


def test_jpeg_header_and_opencv_path_match_pil(tmp_path):
    from dpcal.sim.geometry import jpeg_header

    a = smooth_rgb(150, 200)
    for kw in ({"quality": 90}, {"quality": 80, "progressive": True}):
        Image.fromarray(a).save(tmp_path / "a.jpg", **kw)
        data = (tmp_path / "a.jpg").read_bytes()
        assert jpeg_header(data) == (200, 150, 3)
        full = np.asarray(Image.open(tmp_path / "a.jpg").convert("RGB"))
        out, _ = load_image(tmp_path / "a.jpg", 150, mode="reference")
        c = central_crop_box(150, 200)
        pick = full[c.y0 : c.y0 + c.h, c.x0 : c.x0 + c.w][nearest_indices(c.h, 150)][:, nearest_indices(c.w, 150)]
        np.testing.assert_array_equal(out, pick.astype(np.float32) * np.float32(1 / 255))
    # Bytes after the end marker are tolerated (decoded by PIL), a cut-off file is not.
    (tmp_path / "tail.jpg").write_bytes(data + b"trailer")
    assert load_image(tmp_path / "tail.jpg", 64)[0].shape == (64, 64, 3)
    assert jpeg_header(b"\xff\xd8\xff\xe0\x00") is None and jpeg_header(b"PNG") is None
