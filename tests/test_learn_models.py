"""dpcal.learn.models: sizes, gradients, the Anscombe inverses against exact expectations, CFA
handling per pattern, registry round trips, the CLI table and a short end-to-end learning run."""

import json
import time

import numpy as np
import pytest
import torch
from scipy import stats

from dpcal.cfa import PATTERNS
from dpcal.errors import BadInputError
from dpcal.learn.models import (
    PRESETS,
    AnscombeNet,
    AnscombeTransform,
    ChenUNet,
    ConventionalISP,
    MobileNetV1,
    MobileNetV2,
    Pipeline,
    SoftProjection,
    build_model,
    count_macs,
    count_params,
    demosaic_mhc,
    example_inputs,
    generalized_anscombe,
    inverse_anscombe_asymptotic,
    inverse_anscombe_closed_form,
    model_spec,
    model_table,
    preset,
    soft_projection,
)
from dpcal.learn.models.anscombe import channel_plane_values
from dpcal.physics.cfa import cfa_mask, mosaic, mosaic3, pack, plane_values
from dpcal.physics.noise import poisson_gaussian
from tests.conftest import run_cli

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"))]
DTYPES = [torch.float32, torch.float64]


def _noise(b, alpha=0.01, sigma=0.02, dtype=torch.float64):
    g = torch.Generator().manual_seed(3)
    a = alpha * (1 + 0.5 * torch.rand(b, 4, generator=g, dtype=dtype))
    s = sigma * (1 + 0.5 * torch.rand(b, 4, generator=g, dtype=dtype))
    return a, s


def _smooth_image(h, w, dtype=torch.float32):
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h, dtype=dtype), torch.linspace(0, 1, w, dtype=dtype), indexing="ij")
    return torch.stack([0.3 + 0.2 * torch.sin(2 * xx + yy), 0.5 + 0.2 * torch.cos(3 * yy), 0.4 + 0.15 * xx * yy])[None]


# -- sizes ------------------------------------------------------------------------------------

def test_parameter_counts_match_the_paper():
    assert count_params(MobileNetV1(1000)) == 4_231_976
    ansc = AnscombeNet()
    assert count_params(ansc) == 47_661  # the reference network's ISP part
    joint = build_model(preset("joint", 1000))
    assert abs(count_params(joint) - 4.28e6) / 4.28e6 < 0.005
    assert count_params(joint) == 4_231_976 + 47_661
    assert abs(count_params(MobileNetV2(1000, width=1.4)) - 6.11e6) / 6.11e6 < 0.005
    assert abs(count_params(ChenUNet()) - 7.76e6) / 7.76e6 < 0.005
    # U-Net + MobileNet-v1: the paper's Table 1 lists 11.99 M.
    assert round(count_params(build_model(preset("chen_unet-mobilenet_v1", 1000))) / 1e6, 2) == 11.99


def test_model_table_lists_macs_for_every_preset():
    rows = model_table(size=128, classes=1000)
    assert [r["name"] for r in rows] == list(PRESETS)
    by = {r["name"]: r for r in rows}
    assert all(r["macs"] > 0 and r["params"] > 0 for r in rows)
    # Standard counters give 186-190 M MACs for MobileNet-v1 at 128 px.
    assert 185e6 < by["mobilenet_v1"]["macs"] < 191e6
    assert by["joint"]["macs"] == by["mobilenet_v1"]["macs"] + by["anscombe"]["macs"]
    # MACs scale with the pixel count for these fully convolutional models.
    small = {r["name"]: r for r in model_table(size=64, classes=1000)}
    assert small["anscombe"]["macs"] * 4 == by["anscombe"]["macs"]


def test_count_macs_is_half_the_flop_counter():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert count_macs(conv, (torch.zeros(1, 3, 10, 10),)) == 3 * 8 * 9 * 100


# -- Anscombe layers: gradients ----------------------------------------------------------------

def test_gradcheck_generalized_anscombe_and_inverses():
    g = torch.Generator().manual_seed(0)
    z = (0.05 + torch.rand(6, generator=g, dtype=torch.float64)).requires_grad_()
    a = (0.01 + 0.02 * torch.rand(6, generator=g, dtype=torch.float64)).requires_grad_()
    s = (0.01 + 0.02 * torch.rand(6, generator=g, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(generalized_anscombe, (z, a, s))
    d = (3.0 + 10 * torch.rand(6, generator=g, dtype=torch.float64)).requires_grad_()
    s_small = (0.001 * torch.rand(6, generator=g, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(inverse_anscombe_asymptotic, (d, a, s))
    assert torch.autograd.gradcheck(inverse_anscombe_closed_form, (d, a, s_small))


def test_gradcheck_soft_projection():
    g = torch.Generator().manual_seed(1)
    z, y = (torch.rand(2, 3, 4, 4, generator=g, dtype=torch.float64).requires_grad_() for _ in range(2))
    mask = cfa_mask("RGGB", 4, 4, dtype=torch.float64)
    lam = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    beta = torch.tensor(2.5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z, y, l, b: soft_projection(z, y, mask, l, b), (z, y, lam, beta))


@pytest.mark.parametrize("pattern", PATTERNS)
def test_gradcheck_anscombe_normalisation(pattern):
    g = torch.Generator().manual_seed(2)
    m = torch.rand(2, 1, 4, 6, generator=g, dtype=torch.float64).requires_grad_()
    a, s = (v.requires_grad_() for v in _noise(2))
    layer = AnscombeTransform(pattern)
    assert torch.autograd.gradcheck(lambda m, a, s: layer(m, a, s), (m, a, s))
    t, scale, lo = layer(m, a, s)

    def roundtrip(m, a, s):
        t, scale, lo = layer(m, a, s)
        return layer.inverse(t, scale, lo, a, s)

    assert torch.autograd.gradcheck(roundtrip, (m, a, s))


@pytest.mark.parametrize("inverse", ["asymptotic", "closed_form"])
def test_gradcheck_full_anscombe_net(inverse):
    torch.manual_seed(0)
    net = AnscombeNet("GRBG", inverse=inverse).double().eval()  # BN uses its running statistics
    g = torch.Generator().manual_seed(4)
    m = (0.2 + 0.6 * torch.rand(1, 1, 8, 8, generator=g, dtype=torch.float64)).requires_grad_()
    a, s = (v.requires_grad_() for v in _noise(1, alpha=0.02, sigma=0.01))
    # fast_mode checks random projections of the Jacobian: a few network evaluations, not 2 x 72.
    assert torch.autograd.gradcheck(lambda m, a, s: net(m, a, s, clip=False), (m, a, s), atol=1e-5, fast_mode=True)


# -- Anscombe layers: values ----------------------------------------------------------------------

def test_normalisation_matches_the_single_noise_level_definition():
    """With one alpha/sigma per image: min-max over the 3-channel mosaic, zeros -> 0."""
    g = torch.Generator().manual_seed(5)
    m = torch.rand(3, 1, 8, 8, generator=g, dtype=torch.float64)
    a = torch.tensor([0.01, 0.02, 0.05], dtype=torch.float64)
    s = torch.tensor([0.02, 0.01, 0.03], dtype=torch.float64)
    t, scale, lo = AnscombeTransform("BGGR")(m, a[:, None].expand(3, 4), s[:, None].expand(3, 4))
    f = generalized_anscombe(mosaic3(m, "BGGR"), a.view(-1, 1, 1, 1), s.view(-1, 1, 1, 1))
    fmin, fmax = f.amin(dim=(1, 2, 3), keepdim=True), f.amax(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(t, (f - fmin) / (fmax - fmin))
    torch.testing.assert_close(scale, 1 / (fmax - fmin))
    assert t.min() == 0
    torch.testing.assert_close(t.amax(dim=(1, 2, 3)), torch.ones(3, dtype=torch.float64))


def test_gat_stabilises_per_plane_noise():
    """Per-plane alpha/sigma: after the transform every plane has unit-variance noise."""
    g = torch.Generator().manual_seed(6)
    alpha = torch.tensor([[0.002, 0.01, 0.02, 0.05]])
    sigma = torch.tensor([[0.01, 0.005, 0.02, 0.002]])
    clean = torch.full((1, 1, 256, 256), 0.4)
    y = poisson_gaussian(clean, alpha, sigma, pattern="RGGB", generator=g, clip=False)
    f = generalized_anscombe(y, plane_values(alpha, "RGGB", 256, 256), plane_values(sigma, "RGGB", 256, 256))
    std = pack(f, "RGGB").std(dim=(2, 3))[0]
    # 16384 samples per plane: the std of the sample std is about 1/sqrt(2 n) = 0.0055.
    torch.testing.assert_close(std, torch.ones(4), atol=0.03, rtol=0)


def _expected_gat(counts: float, s_hat: float) -> float:
    """E[f(z)] in count units, z = Poisson(counts) + N(0, s_hat^2): a sum over the Poisson
    counts of a fine trapezoid integral over the Gaussian (exact to ~1e-6 here)."""
    k = np.arange(int(counts + 12 * np.sqrt(counts) + 30) + 1)
    pk = stats.poisson.pmf(k, counts)
    if s_hat == 0:
        return float(pk @ (2 * np.sqrt(k + 0.375)))
    gx = np.linspace(-10 * s_hat, 10 * s_hat, 8001)
    wg = stats.norm.pdf(gx, scale=s_hat)
    wg /= wg.sum()
    return float(pk @ (2 * np.sqrt(np.maximum(k[:, None] + gx[None] + 0.375 + s_hat**2, 0))) @ wg)


COUNTS = [0.5, 1, 2, 5, 10, 30, 100]


@pytest.mark.parametrize("s_hat", [0.0, 0.5, 1.0, 2.0])
def test_inverses_against_the_exact_expectation(s_hat):
    alpha = 0.01
    d = torch.tensor([_expected_gat(c, s_hat) for c in COUNTS], dtype=torch.float64)
    x = torch.tensor(COUNTS, dtype=torch.float64) * alpha
    sigma = s_hat * alpha
    closed = (inverse_anscombe_closed_form(d, alpha, sigma) - x) / alpha
    asym = (inverse_anscombe_asymptotic(d, alpha, sigma) - x) / alpha
    # The closed form approximates the exact unbiased inverse: Makitalo & Foi's fit leaves a
    # few hundredths of a count (measured max 0.035 over this grid), i.e. <= 7 % at 0.5 counts
    # and 0.02 % at 100.
    assert closed.abs().max() < 0.04, closed
    # The asymptotic inverse is exact for large counts ...
    assert asym[-1].abs() < 1e-3
    assert asym[COUNTS.index(10)].abs() < 0.01
    # ... and biased at low counts: upwards without read noise (f(0) = 2 sqrt(3/8) maps to
    # +1/4 count), downwards once sigma/alpha reaches ~2 counts.
    if s_hat == 0:
        assert 0.1 < asym[0] < 0.2 and asym[0] > 10 * closed[0].abs()
    if s_hat == 2.0:
        assert -0.05 < asym[0] < -0.02


def test_soft_projection_is_the_minimiser():
    g = torch.Generator().manual_seed(7)
    z, y = torch.rand(2, 3, 6, 6, generator=g, dtype=torch.float64), torch.rand(2, 3, 6, 6, generator=g, dtype=torch.float64)
    mask = cfa_mask("GBRG", 6, 6, dtype=torch.float64)
    lam, beta = 0.8, 3.0
    x = SoftProjection(beta).double()(z, y, mask, lam).detach().requires_grad_()
    objective = lam / 2 * (mask * (x - y)).square().sum() + beta / 2 * (x - z).square().sum()
    (grad,) = torch.autograd.grad(objective, x)
    assert grad.abs().max() < 1e-12
    torch.testing.assert_close(x[:, mask == 0], z[:, mask == 0])  # unmeasured sites keep the prior's value


def test_anscombe_net_handles_zero_alpha():
    net = AnscombeNet("RGGB")
    m = torch.rand(2, 1, 16, 16).requires_grad_()
    out = net(m, torch.zeros(2, 4), torch.zeros(2, 4))
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(m.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())


def test_anscombe_net_iterations_and_widths():
    net = AnscombeNet("RGGB", iterations=3, width=4, levels=2)
    assert [p.beta.item() for p in net.projections] == [2.0, 4.0, 8.0]
    out = net(torch.rand(1, 1, 10, 14), torch.full((1, 4), 0.01), torch.full((1, 4), 0.02))
    assert out.shape == (1, 3, 10, 14)  # odd multiples of the pooling factor are padded inside


# -- CFA handling per pattern ----------------------------------------------------------------

@pytest.mark.parametrize("pattern", PATTERNS)
def test_channel_plane_values(pattern):
    vals = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    ch = channel_plane_values(vals, pattern, 4, 6)
    assert ch[:, 0].eq(vals[:, :1, None]).all() and ch[:, 2].eq(vals[:, 3:, None]).all()
    # At every measured site the map reads the site's own plane ...
    site = plane_values(vals, pattern, 4, 6).expand(-1, 3, -1, -1)
    measured = cfa_mask(pattern, 4, 6).bool()
    assert torch.equal(ch[:, measured], site[:, measured])
    # ... and green is constant along rows.
    assert ch[:, 1].eq(ch[:, 1, :, :1]).all()


@pytest.mark.parametrize("pattern", PATTERNS)
def test_mhc_demosaic_per_pattern(pattern):
    img = _smooth_image(32, 48)
    out = demosaic_mhc(mosaic(img, pattern), pattern)
    assert (out - img)[..., 2:-2, 2:-2].abs().max() < 2e-3
    wrong = {"RGGB": "BGGR", "BGGR": "RGGB", "GRBG": "GBRG", "GBRG": "GRBG"}[pattern]
    assert (demosaic_mhc(mosaic(img, pattern), wrong) - img).abs().max() > 0.05


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("denoise", ["nlm", "bilateral", "none"])
def test_conventional_isp_is_transparent_without_noise(pattern, denoise):
    img = _smooth_image(32, 32)
    isp = ConventionalISP(pattern, denoise=denoise, tone="none", white_balance="none")
    out = isp(mosaic(img, pattern), torch.zeros(1, 4), torch.zeros(1, 4))
    assert (out - img)[..., 2:-2, 2:-2].abs().max() < 5e-3
    assert (out - img).abs().mean() < 2e-3


def test_conventional_isp_denoises():
    g = torch.Generator().manual_seed(8)
    img = _smooth_image(64, 64).expand(4, -1, -1, -1)
    a, s = torch.full((4, 4), 0.02), torch.full((4, 4), 0.02)
    m = poisson_gaussian(mosaic(img, "BGGR"), a, s, pattern="BGGR", generator=g)
    err = {d: (ConventionalISP("BGGR", denoise=d, tone="none", white_balance="none")(m, a, s) - img).square().mean()
           for d in ("none", "nlm", "bilateral")}
    assert err["nlm"] < err["none"] / 3 and err["bilateral"] < err["none"] / 3, err


def test_conventional_isp_viewing_options():
    img = _smooth_image(16, 16) * torch.tensor([0.5, 1.0, 0.8]).view(1, 3, 1, 1)
    isp = ConventionalISP("RGGB", denoise="none", tone="srgb", white_balance="gray_world")
    out = isp(mosaic(img, "RGGB"), torch.zeros(1, 4), torch.zeros(1, 4))
    means = out.mean(dim=(2, 3))[0]
    assert (means - means[1]).abs().max() < 0.01  # gray world, then a common tone curve
    assert out.mean() > img.mean()  # the sRGB curve brightens mid tones
    assert not out.requires_grad and count_params(isp) == 0


# -- shapes, dtypes, devices ----------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["anscombe", "chen_unet", "conventional_isp"])
def test_isp_stages_shapes(name, dtype, device):
    stage = build_model({"name": name, "kwargs": {"pattern": "GBRG"}}).to(device=device, dtype=dtype)
    m, a, s = example_inputs(stage, 32, batch=2, dtype=dtype, device=device)
    out = stage(m, a, s)
    assert out.shape == (2, 3, 32, 32) and out.dtype == dtype and out.device.type == device
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", [MobileNetV1, MobileNetV2])
def test_classifier_shapes(cls, dtype, device):
    net = cls(7, width=0.25).to(device=device, dtype=dtype)
    out = net(torch.rand(2, 3, 32, 32, dtype=dtype, device=device))
    assert out.shape == (2, 7) and out.dtype == dtype and torch.isfinite(out).all()


def test_chen_unet_clip_flag_and_odd_sizes():
    net = ChenUNet("RGGB", base=8)
    m = torch.rand(1, 1, 20, 36)
    raw = net(m, None, None, clip=False)
    torch.testing.assert_close(net(m, None, None), raw.clamp(0, 1))
    with pytest.raises(ValueError, match="even"):
        net(torch.rand(1, 1, 21, 36))


@pytest.mark.parametrize("name", ["joint", "isp-mobilenet_v1", "chen_unet-mobilenet_v1", "raw-mobilenet_v1"])
def test_presets_take_the_simulators_output(name):
    """The simulator reports alpha/sigma in float64; float32 models take them as they are."""
    from dpcal.sim import Simulator

    sim = Simulator("nexus6p-rear", mode="reference", lux=(2.0, 20.0))
    out = sim(_smooth_image(32, 32).expand(2, -1, -1, -1).contiguous(), generator=torch.Generator().manual_seed(0))
    assert out.alpha.dtype == torch.float64
    net = build_model(preset(name, 5, pattern=sim.config.pattern, sim_mode="reference")).eval()
    logits = net(out.mosaic, out.alpha, out.sigma)
    assert logits.shape == (2, 5) and logits.dtype == torch.float32 and torch.isfinite(logits).all()


def test_raw_input_errors_name_the_parameter():
    with pytest.raises(ValueError, match="alpha must be a \\(B, 4\\)"):
        AnscombeNet()(torch.rand(2, 1, 8, 8), torch.zeros(2), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="mosaic must be"):
        AnscombeNet()(torch.rand(2, 3, 8, 8), torch.zeros(2, 4), torch.zeros(2, 4))


# -- pipeline and registry ----------------------------------------------------------------------

def test_pipeline_raw_baseline_sees_the_three_channel_mosaic():
    net = Pipeline(None, MobileNetV1(3, width=0.25), pattern="GRBG")
    m = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(net.stage_output(m, None, None), mosaic3(m, "GRBG"))
    with pytest.raises(ValueError, match="pattern"):
        Pipeline(AnscombeNet("RGGB"), None, pattern="BGGR")


@pytest.mark.parametrize("name", PRESETS)
def test_registry_round_trip(name):
    spec = preset(name, num_classes=10, pattern="RGGB")
    json.dumps(spec)
    a = build_model(spec)
    assert model_spec(a) == spec
    b = build_model(json.loads(json.dumps(model_spec(a))))
    b.load_state_dict(a.state_dict())  # same architecture, key for key
    assert count_params(a) == count_params(b)
    a.eval(), b.eval()
    inputs = example_inputs(a, 32, batch=2)
    torch.testing.assert_close(a(*inputs), b(*inputs))


def test_registry_errors_and_hand_built_pipelines():
    with pytest.raises(BadInputError, match="unknown model"):
        build_model({"name": "resnet", "kwargs": {}})
    with pytest.raises(BadInputError, match="JSON"):
        build_model({"name": "mobilenet_v1", "kwargs": {"num_classes": torch.tensor(3)}})
    with pytest.raises(BadInputError, match="cannot build"):
        build_model({"name": "anscombe", "kwargs": {"inverse": "exact"}})
    with pytest.raises(BadInputError, match="unknown model preset"):
        preset("vgg")
    pipe = Pipeline(build_model(preset("anscombe")).isp, build_model(preset("mobilenet_v1", 5)))
    assert model_spec(pipe) == preset("joint", 5)
    with pytest.raises(ValueError, match="not built by build_model"):
        model_spec(MobileNetV1())
    ref = preset("isp-mobilenet_v1", 10, sim_mode="reference")["kwargs"]["isp"]["kwargs"]
    assert ref["tone"] == "none" and ref["white_balance"] == "none"


def test_models_cli_json():
    r = run_cli("models", "--size", "128", "--classes", "1000", "--json")
    doc = json.loads(r.stdout)
    assert doc["size"] == 128 and doc["classes"] == 1000 and "FLOPs/2" in doc["note"]
    by = {m["name"]: m for m in doc["models"]}
    assert set(by) == set(PRESETS)
    assert by["mobilenet_v1"]["params"] == 4_231_976
    assert all(m["macs"] > 0 for m in doc["models"])
    human = run_cli("models", "--size", "64", "--classes", "10").stdout
    assert "joint" in human and "FLOPs/2" in human
    bad = run_cli("models", "--pattern", "RGBG", check=1)
    assert "pattern" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


# -- learning -------------------------------------------------------------------------------------

def test_joint_pipeline_learns_end_to_end():
    """An easy task (class = brightness level): the cross-entropy falls within 20 Adam steps."""
    torch.manual_seed(0)
    net = Pipeline(AnscombeNet("BGGR"), MobileNetV1(4, width=0.25), pattern="BGGR")
    g = torch.Generator().manual_seed(9)
    labels = torch.arange(16) % 4
    m = 0.15 + 0.2 * labels.view(-1, 1, 1, 1) + 0.1 * torch.rand(16, 1, 32, 32, generator=g)
    a, s = torch.full((16, 4), 0.01), torch.full((16, 4), 0.02)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(m, a, s), labels)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < 0.6 * losses[0], losses
    # The ISP's parameters received gradients through the classifier.
    assert net.isp.lam.grad is not None and net.isp.lam.grad.abs() > 0
    assert all(p.grad is not None for p in net.isp.parameters())


def test_torch_compile_smoke():
    net = AnscombeNet("RGGB").eval()
    inputs = example_inputs(net, 16, batch=1)
    t0 = time.perf_counter()
    try:
        compiled = torch.compile(net, backend="aot_eager", fullgraph=True)
        out = compiled(*inputs)
    except Exception as e:  # no working compiler stack: not what this test is about
        pytest.skip(f"torch.compile unavailable here: {type(e).__name__}: {e}")
    torch.testing.assert_close(out, net(*inputs))
    assert time.perf_counter() - t0 < 120
