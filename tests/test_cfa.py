import numpy as np
import pytest

from dpcal import cfa
from dpcal.errors import BadCFAError

EXPECTED = {
    # pattern: offsets of R, Gr, Gb, B
    "RGGB": [(0, 0), (0, 1), (1, 0), (1, 1)],
    "BGGR": [(1, 1), (1, 0), (0, 1), (0, 0)],
    "GRBG": [(0, 1), (0, 0), (1, 1), (1, 0)],
    "GBRG": [(1, 0), (1, 1), (0, 0), (0, 1)],
}


@pytest.mark.parametrize("pattern", cfa.PATTERNS)
def test_plane_offsets(pattern):
    offs = cfa.plane_offsets(pattern)
    assert [offs[p] for p in cfa.PLANES] == EXPECTED[pattern]


@pytest.mark.parametrize("pattern", cfa.PATTERNS)
def test_split_join_round_trip(pattern, rng):
    m = rng.integers(0, 1000, (6, 10))
    planes = cfa.split_planes(m, pattern)
    assert planes.shape == (4, 3, 5)
    np.testing.assert_array_equal(cfa.join_planes(planes, pattern), m)
    # each plane really holds the pixels at its offset
    for i, p in enumerate(cfa.PLANES):
        dy, dx = cfa.plane_offsets(pattern)[p]
        np.testing.assert_array_equal(planes[i], m[dy::2, dx::2])


@pytest.mark.parametrize("pattern", cfa.PATTERNS)
def test_color_mask_and_plane_map(pattern):
    mask = cfa.color_mask(pattern, 5, 7)
    assert mask.shape == (3, 5, 7)
    np.testing.assert_array_equal(mask.sum(0), 1)
    pm = cfa.plane_map(pattern, 5, 7)
    for i, p in enumerate(cfa.PLANES):
        assert mask[cfa.PLANE_CHANNEL[p]][pm == i].all()
    assert pattern[0] == "RGB"[int(np.argmax(mask[:, 0, 0]))]


@pytest.mark.parametrize("pattern", cfa.PATTERNS)
def test_opencv_mapping_by_demosaicing_a_flat_colour(pattern):
    colour = np.array([0.8, 0.4, 0.1])
    mask = cfa.color_mask(pattern, 16, 16)
    mosaic = (mask * colour[:, None, None]).sum(0)
    rgb = cfa.demosaic_bilinear(mosaic, pattern)
    np.testing.assert_allclose(rgb[4:-4, 4:-4].reshape(-1, 3).mean(0), colour, atol=2e-3)


def test_shift_pattern_matches_crop():
    for p in cfa.PATTERNS:
        mask = cfa.color_mask(p, 8, 8)
        for dy in (0, 1):
            for dx in (0, 1):
                sub = mask[:, dy:, dx:]
                letters = "".join("RGB"[int(np.argmax(sub[:, r, c]))] for r in (0, 1) for c in (0, 1))
                assert cfa.shift_pattern(p, dy, dx) == letters


def test_bad_pattern_message():
    with pytest.raises(BadCFAError, match="RGGB, BGGR, GRBG, GBRG"):
        cfa.validate_pattern("RGBW")
