import numpy as np
import pytest

from dpcal.cfa import PATTERNS
from dpcal.errors import BadInputError, BadRawError
from dpcal.io.dng import write_dng
from dpcal.io.raw import read_raw


@pytest.mark.parametrize("pattern", PATTERNS)
def test_dng_round_trip(tmp_path, rng, pattern):
    dn = rng.integers(0, 4096, (30, 44)).astype(np.uint16)
    p = tmp_path / "x.dng"
    write_dng(p, dn, pattern, black_level=[60, 61, 62, 63], white_level=4095, iso=800, exposure_time=1 / 60)
    r = read_raw(p)
    assert r.pattern == pattern
    assert r.black_level == (60, 61, 62, 63)
    assert r.white_level == 4095
    assert r.iso == 800
    assert r.exposure_time == pytest.approx(1 / 60)
    np.testing.assert_array_equal(r.dn, dn)
    # normalisation uses the black level of each pixel's own plane
    norm = r.normalized()
    from dpcal.cfa import plane_map

    black = np.array([60, 61, 62, 63])[plane_map(pattern, *dn.shape)]
    np.testing.assert_allclose(norm, (dn - black) / (4095 - black), rtol=1e-6)


def test_headerless_raw(tmp_path, rng):
    dn = rng.integers(0, 1024, (8, 12)).astype("<u2")
    p = tmp_path / "x.raw"
    dn.tofile(p)
    r = read_raw(p, width=12, height=8, bits=10, pattern="gbrg", black_level=16)
    assert r.pattern == "GBRG" and r.white_level == 1023 and r.black_level == (16,) * 4
    np.testing.assert_array_equal(r.dn, dn)
    with pytest.raises(BadRawError, match="192 bytes, but 10x8"):
        read_raw(p, width=10, height=8, bits=10, pattern="RGGB")
    with pytest.raises(BadInputError, match="`pattern`"):
        read_raw(p, width=12, height=8, bits=10)


def test_decoded_png_and_npy(tmp_path, rng):
    import cv2

    dn = rng.integers(0, 65535, (10, 14)).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "m.png"), dn)
    r = read_raw(tmp_path / "m.png", pattern="BGGR", bits=16)
    np.testing.assert_array_equal(r.dn, dn)
    np.save(tmp_path / "f.npy", np.full((4, 4), 0.25, np.float32))
    r = read_raw(tmp_path / "f.npy", pattern="RGGB")
    assert r.white_level == 1 and float(r.normalized().mean()) == 0.25
    cv2.imwrite(str(tmp_path / "rgb.png"), np.zeros((4, 4, 3), np.uint16))
    with pytest.raises(BadRawError, match="single-channel"):
        read_raw(tmp_path / "rgb.png", pattern="RGGB")


def test_bad_files(tmp_path):
    t = tmp_path / "text.dng"
    t.write_text("not a raw file\n" * 20)
    with pytest.raises(BadRawError, match="LibRaw cannot read"):
        read_raw(t)
    with pytest.raises(BadInputError, match="no such file"):
        read_raw(tmp_path / "missing.dng")


def test_truncated_dng(tmp_path, rng):
    p = tmp_path / "full.dng"
    write_dng(p, rng.integers(0, 1000, (256, 256)).astype(np.uint16), "RGGB", white_level=1023)
    data = p.read_bytes()
    (tmp_path / "trunc.dng").write_bytes(data[: len(data) // 3])
    with pytest.raises(BadRawError):
        read_raw(tmp_path / "trunc.dng")


def test_real_files(shared_data):
    raw = shared_data / "raw"
    bm = read_raw(raw / "imageio_Blackmagic.dng")
    assert (bm.width, bm.height, bm.pattern) == (4128, 2176, "RGGB")
    assert bm.black_level == (512,) * 4 and bm.white_level == 65535
    kd = read_raw(raw / "rawpy_RAW_KODAK_DC50.KDC")
    assert (kd.width, kd.height, kd.pattern) == (768, 512, "GRBG")
    assert kd.black_level == (0,) * 4 and kd.white_level == 16383
    with pytest.raises(BadRawError, match="not a Bayer mosaic"):
        read_raw(raw / "imageio_Nikon_uncompressed.nef")


def test_real_truncated(shared_data, tmp_path):
    data = (shared_data / "raw" / "imageio_Blackmagic.dng").read_bytes()
    (tmp_path / "t.dng").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadRawError, match="complete RAW"):
        read_raw(tmp_path / "t.dng")


@pytest.mark.parametrize("iso", [100, 65535, 66667, 200000])
def test_dng_iso_beyond_16_bits(tmp_path, iso):
    write_dng(tmp_path / "i.dng", np.zeros((32, 32), np.uint16), "RGGB", iso=iso)
    assert read_raw(tmp_path / "i.dng").iso == iso
