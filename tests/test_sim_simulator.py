"""The simulator: linearisation, modes, PSF placement, differentiability, determinism."""

import json

import numpy as np
import pytest
import torch

from dpcal.errors import BadInputError
from dpcal.profile import load_profile
from dpcal.psf import PSFField, blur_rgb_to_planes, gaussian_kernel
from dpcal.sim import Simulator, psf_for_image
from dpcal.physics.color import (
    forward_tone,
    inverse_tone,
    inverse_tone_lut,
    linear_to_srgb,
    linearize,
    reprocess,
    sample_unprocess_params,
    srgb_to_linear,
    unprocess,
)
from dpcal.physics.cfa import mosaic

DTYPES = [torch.float32, torch.float64]


@pytest.mark.parametrize("dtype", DTYPES)
def test_srgb_round_trip_and_known_values(dtype):
    x = torch.linspace(0, 1, 101, dtype=dtype)
    assert torch.allclose(linear_to_srgb(srgb_to_linear(x)), x, atol=1e-5)
    assert float(srgb_to_linear(torch.tensor(0.04045, dtype=dtype))) == pytest.approx(0.04045 / 12.92)
    assert float(srgb_to_linear(torch.tensor(1.0, dtype=dtype))) == pytest.approx(1.0)


def test_unprocess_params_follow_the_published_ranges():
    p = sample_unprocess_params(2000, torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.allclose(p.rgb2cam.sum(-1), torch.ones(2000, 3, dtype=torch.float64))
    assert float(p.red_gain.min()) >= 1.9 and float(p.red_gain.max()) <= 2.4
    assert float(p.blue_gain.min()) >= 1.5 and float(p.blue_gain.max()) <= 1.9
    brightness = 1 / p.rgb_gain
    assert float(brightness.mean()) == pytest.approx(0.8, abs=0.01)
    assert float(brightness.std()) == pytest.approx(0.1, abs=0.01)


def test_unprocess_inverts_with_reprocess_below_highlights():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 3, 8, 8, generator=g, dtype=torch.float64) * 0.5 + 0.05
    p = sample_unprocess_params(3, g, dtype=torch.float64)
    raw = unprocess(x, p)
    assert float(raw.min()) >= 0 and float(raw.max()) <= 1
    assert torch.allclose(reprocess(raw, p), x, atol=1e-6)
    # Unprocessed images are darker and green-dominant, like real RAW data.
    assert float(raw[:, 1].mean()) > float(raw[:, 0].mean()) and float(raw.mean()) < float(x.mean())


@pytest.mark.parametrize("method", ["gamma", "unprocess"])
@pytest.mark.parametrize("bits", [8, 16])
def test_lut_is_exact_on_codes(method, bits):
    lut = inverse_tone_lut(method, bits)
    codes = np.array([0, 1, 7, 2 ** (bits - 1), 2**bits - 2, 2**bits - 1])
    ref = inverse_tone(torch.tensor(codes / (2**bits - 1), dtype=torch.float64), method).numpy()
    np.testing.assert_allclose(lut[codes], ref, rtol=1e-6, atol=1e-9)
    assert torch.allclose(forward_tone(torch.from_numpy(lut.astype(np.float64)), method),
                          torch.arange(2**bits, dtype=torch.float64) / (2**bits - 1), atol=2e-4)


def test_linearisations_gradcheck():
    g = torch.Generator().manual_seed(2)
    x = (torch.rand(1, 3, 3, 3, generator=g, dtype=torch.float64) * 0.8 + 0.1).requires_grad_()
    p = sample_unprocess_params(1, g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: linearize(t, "gamma"), (x,))
    assert torch.autograd.gradcheck(lambda t: unprocess(t, p), (x,))


def test_whole_simulator_is_differentiable():
    # Gradients reach the clean image through unprocessing, mosaic, noise (straight-through),
    # clipping and quantisation (straight-through).
    sim = Simulator("nexus6p-rear", lux=200.0)
    x = torch.full((2, 3, 8, 8), 0.4, dtype=torch.float64, requires_grad=True)
    out = sim(x, seeds=[0, 1])
    out.mosaic.sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0 and torch.isfinite(x.grad).all()
    # The deterministic part (linearise + mosaic) passes gradcheck.
    p = sample_unprocess_params(1, torch.Generator().manual_seed(0), dtype=torch.float64)
    y = (torch.rand(1, 3, 4, 4, dtype=torch.float64) * 0.6 + 0.2).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: mosaic(unprocess(t, p), "BGGR"), (y,))


def test_reference_mode_fixes_its_settings():
    sim = Simulator("eld-sonya7s2", mode="reference", lux=3)
    c = sim.config
    assert (c.pattern, c.linearize, c.quantize) == ("BGGR", "none", False)
    x = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    out = sim(x, seeds=[0])
    assert torch.equal(out.clean, mosaic(x, "BGGR"))  # sRGB values used as linear
    assert out.unprocess is None
    for bad in ({"pattern": "RGGB"}, {"linearize": "gamma"}, {"quantize": True}):
        with pytest.raises(BadInputError, match="`mode=reference` fixes"):
            Simulator("nexus6p-rear", mode="reference", lux=3, **bad)


def test_realistic_defaults_follow_the_profile():
    sim = Simulator("eld-sonya7s2", lux=3)
    assert (sim.pattern, sim.config.linearize, sim.config.quantize) == ("RGGB", "unprocess", True)
    assert Simulator("eld-sonya7s2", lux=3, pattern="gbrg").pattern == "GBRG"


@pytest.mark.parametrize("bad,msg", [
    ({"lux": 0}, "lux must be a positive"),
    ({"lux": -3}, "lux must be a positive"),
    ({"lux": (20, 2)}, "LO <= HI"),
    ({"mode": "paper"}, "unknown mode"),
    ({"linearize": "log"}, "unknown linearisation"),
    ({"pattern": "RGBG"}, "unknown CFA pattern"),
    ({"psf": True}, "has no PSF field"),
])
def test_bad_settings(bad, msg):
    with pytest.raises(BadInputError, match=msg):
        Simulator("nexus6p-rear", **{"lux": 3, **bad})


def test_same_seed_same_output_and_batch_independence():
    sim = Simulator("nexus6p-rear", lux=(2, 20))
    x = torch.rand(3, 3, 16, 16)
    a = sim(x, seeds=[5, 6, 7])
    b = sim(x[1:], seeds=[6, 7])
    assert torch.equal(a.mosaic[1:], b.mosaic) and torch.equal(a.lux[1:], b.lux)
    c = sim(x, seeds=[5, 6, 8])
    assert not torch.equal(a.mosaic[2], c.mosaic[2])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_runs_on_gpu():
    sim = Simulator("nexus6p-rear", lux=3, device="cuda")
    out = sim(torch.rand(2, 3, 16, 16), seeds=[0, 1])
    assert out.mosaic.device.type == "cuda"


# ------------------------------------------------------------------------------------------
# PSF fields


def sensor_field(sensor=(4000, 3000), k=21):
    ks = np.stack([gaussian_kernel(k, 2.0 + 0.5 * i) for i in range(4)])
    psf = np.broadcast_to(ks, (3, 4, 4, k, k)).copy()
    xs = np.linspace(0.1, 0.9, 4) * sensor[0]
    ys = np.linspace(0.1, 0.9, 3) * sensor[1]
    return PSFField(psf, np.stack(np.meshgrid(xs, ys), -1), sensor_size=sensor)


def test_psf_for_image_sensor_mapping():
    f = sensor_field()
    g = psf_for_image(f, 120, 120, "sensor")  # square image: central 3000 x 3000 of the sensor
    s = 120 / 3000
    np.testing.assert_allclose(g.grid_x, (f.grid_x - 500 + 0.5) * s - 0.5)
    np.testing.assert_allclose(g.grid_y, (f.grid_y + 0.5) * s - 0.5)
    assert g.sensor_size == (120, 120) and g.kernel_size < f.kernel_size
    np.testing.assert_allclose(g.psf.sum(axis=(-1, -2)), 1, atol=1e-5)


@pytest.mark.parametrize("position,frac", [("center", 0.5), ("offaxis", 0.9), ("periphery", 1.0)])
def test_psf_for_image_positions(position, frac):
    f = sensor_field()
    g = psf_for_image(f, 64, 64, position)
    x0 = min(max(round(frac * 4000 - 32), 0), 4000 - 64)
    y0 = min(max(round(frac * 3000 - 32), 0), 3000 - 64)
    np.testing.assert_allclose(g.grid_x, f.grid_x - x0)
    np.testing.assert_allclose(g.grid_y, f.grid_y - y0)
    assert g.kernel_size == f.kernel_size  # native scale


def test_simulator_applies_profile_psf(tmp_path):
    doc = json.loads(json.dumps(load_profile("nexus6p-rear").doc))
    doc["id"] = "nexus6p-psf"
    doc["psf"] = {"file": "nexus6p-psf.psf.npz"}
    (tmp_path / "nexus6p-psf.json").write_text(json.dumps(doc))
    f = sensor_field(sensor=(64, 64), k=7)
    f.save(tmp_path / "nexus6p-psf.psf.npz")
    sim = Simulator(str(tmp_path / "nexus6p-psf.json"), lux=200, psf=True, linearize="gamma")
    x = torch.rand(1, 3, 64, 64, dtype=torch.float64)
    out = sim(x, seeds=[0])
    expect = mosaic(blur_rgb_to_planes(srgb_to_linear(x), psf_for_image(f, 64, 64, "sensor")), "BGGR")
    assert torch.allclose(out.clean, expect, atol=1e-10)
    plain = Simulator("nexus6p-rear", lux=200, linearize="gamma")(x, seeds=[0])
    assert float((plain.clean - out.clean).abs().max()) > 0.01  # the blur did something
