import numpy as np
import pytest
import torch

from dpcal.errors import BadInputError
from dpcal.physics.optics import PSFField, apply_psf_field, blur_rgb_to_planes, gaussian_kernel, hat_weights


def random_field(rng, gy=3, gx=4, c=2, k=5, h=40, w=52):
    psf = rng.random((gy, gx, c, k, k)).astype(np.float32) ** 3
    psf /= psf.sum(axis=(-1, -2), keepdims=True)
    xs = np.linspace(1, w - 2, gx)
    ys = np.linspace(1, h - 3, gy)
    node = np.stack(np.meshgrid(xs, ys), -1)
    planes = ("R", "Gr", "Gb", "B") if c == 4 else tuple("ABC"[:c])
    return PSFField(psf, node, planes=planes, sensor_size=(w, h))


def brute_force(x, field, r):
    """Definition: y = sum_g h_g * (w_g . x), reflect-padded, full true convolution."""
    from scipy.signal import convolve2d

    c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (r, r), (r, r)), mode="reflect")
    wx = hat_weights(field.grid_x, np.arange(w + 2 * r) - r)
    wy = hat_weights(field.grid_y, np.arange(h + 2 * r) - r)
    y = np.zeros_like(xp, dtype=np.float64)
    for j in range(len(field.grid_y)):
        for i in range(len(field.grid_x)):
            for ch in range(c):
                y[ch] += convolve2d(xp[ch] * np.outer(wy[j], wx[i]), field.psf[j, i, ch].astype(np.float64), mode="same")
    return y[:, r:-r, r:-r]


@pytest.mark.parametrize("method", ["direct", "fft"])
def test_matches_definition(rng, method):
    f = random_field(rng)
    x = rng.random((2, 40, 52))
    y = apply_psf_field(x, f, method=method)
    np.testing.assert_allclose(y, brute_force(x, f, 2), atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lopsided_kernel_orientation(dtype):
    # Energy goes 2 px right and 1 px down of the source: a true convolution, not a correlation.
    k = np.zeros((7, 7), np.float32)
    k[4, 5] = 0.7
    k[3, 3] = 0.3
    f = PSFField(k[None, None, None], np.zeros((1, 1, 2)), planes=("Y",))
    x = torch.zeros(1, 1, 15, 15, dtype=dtype)
    x[0, 0, 6, 4] = 1
    y = apply_psf_field(x, f, padding="zeros")
    assert y.dtype == dtype
    assert float(y[0, 0, 7, 6]) == pytest.approx(0.7) and float(y[0, 0, 6, 4]) == pytest.approx(0.3)
    assert float(y.sum()) == pytest.approx(1.0)


def test_uniform_field_is_plain_convolution(rng):
    from scipy.ndimage import convolve

    kern = gaussian_kernel(9, 1.5, 0.8, theta=0.4, shift=(0.7, -0.3))
    psf = np.broadcast_to(kern, (2, 3, 1, 9, 9)).copy()
    node = np.stack(np.meshgrid([0.0, 20, 40], [0.0, 30]), -1)
    x = rng.random((33, 45))
    y = apply_psf_field(x, PSFField(psf, node, planes=("Y",)))
    ref = convolve(x, kern.astype(np.float64), mode="mirror")  # scipy's mirror == torch's reflect
    np.testing.assert_allclose(y, ref, atol=1e-6)


def test_gradcheck(rng):
    f = random_field(rng, gy=2, gx=2, c=1, k=3, h=7, w=8)
    x = torch.rand(1, 1, 7, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: apply_psf_field(t, f), (x,))


def test_blur_rgb_to_planes_uses_plane_kernels(rng):
    psf = np.zeros((1, 1, 4, 3, 3), np.float32)
    psf[..., 1, 1] = 1  # identity for R, Gb, B
    psf[0, 0, 1] = 0
    psf[0, 0, 1, 1, 2] = 1  # Gr shifted right
    f = PSFField(psf, np.zeros((1, 1, 2)))
    rgb = torch.rand(2, 3, 6, 6, dtype=torch.float64)
    out = blur_rgb_to_planes(rgb, f, padding="zeros")
    assert out.shape == (2, 4, 6, 6)
    torch.testing.assert_close(out[:, 0], rgb[:, 0])
    torch.testing.assert_close(out[:, 2], rgb[:, 1])
    torch.testing.assert_close(out[:, 1, :, 1:], rgb[:, 1, :, :-1])


def test_save_load_round_trip(tmp_path, rng):
    f = random_field(rng, c=4)
    f = PSFField(f.psf, f.node_xy, sensor_size=(52, 40), meta={"method": "test"})
    f.save(tmp_path / "f.npz")
    g = PSFField.load(tmp_path / "f.npz")
    np.testing.assert_array_equal(g.psf, f.psf)
    np.testing.assert_array_equal(g.node_xy, f.node_xy)
    assert g.planes == ("R", "Gr", "Gb", "B") and g.sensor_size == (52, 40) and g.meta == {"method": "test"}
    assert list(tmp_path.iterdir()) == [tmp_path / "f.npz"]


def test_validation_errors(rng):
    good = random_field(rng, c=4).psf
    node = random_field(rng, c=4).node_xy
    with pytest.raises(BadInputError, match="odd"):
        PSFField(np.ones((1, 1, 4, 4, 4)) / 16, np.zeros((1, 1, 2)))
    with pytest.raises(BadInputError, match="sum to 1"):
        PSFField(good * 2, node)
    with pytest.raises(BadInputError, match="separable grid"):
        bad = node.copy()
        bad[0, 0, 0] += 1
        PSFField(good, bad)
    with pytest.raises(BadInputError, match="no such PSF field"):
        PSFField.load("nope.npz")


def test_kernel_at_nodes_and_between(rng):
    f = random_field(rng, c=4)
    np.testing.assert_allclose(f.kernel_at(*f.node_xy[1, 2], "Gb"), f.psf[1, 2, 2], atol=1e-6)
    mid = 0.5 * (f.node_xy[0, 0] + f.node_xy[0, 1])
    np.testing.assert_allclose(f.kernel_at(*mid, "R"), 0.5 * (f.psf[0, 0, 0] + f.psf[0, 1, 0]), atol=1e-6)


def test_resampled_kernel_widths(rng):
    sig = 3.0
    k = gaussian_kernel(25, sig)
    f = PSFField(np.broadcast_to(k, (2, 2, 4, 25, 25)).copy(), np.stack(np.meshgrid([10.0, 390], [10.0, 290]), -1),
                 sensor_size=(400, 300))
    assert f.resampled(400, 300).psf.shape == f.psf.shape
    np.testing.assert_allclose(f.resampled(400, 300).psf, f.psf, atol=1e-6)
    g = f.resampled(200, 150)
    assert g.kernel_size % 2 == 1 and g.sensor_size == (200, 150)
    kk = g.psf[0, 0, 0].astype(np.float64)
    c = (g.kernel_size - 1) / 2
    xx = np.arange(g.kernel_size) - c
    var_x = float((kk.sum(0) * xx**2).sum())
    # area resampling by 1/2: variance (sig^2 + 1/12) / 4 + 1/12 (new pixel box) approximately
    assert var_x == pytest.approx((sig**2 + 1 / 12) / 4 + 1 / 12, rel=0.05)
    np.testing.assert_allclose(g.node_xy[0, 0], [(10.5) / 2 - 0.5, (10.5) / 2 - 0.5])


def pixel_integrated_gaussian(k, s1, s2, theta, shift=(0.0, 0.0), n=16):
    """The Gaussian integrated over each pixel numerically: n x n sub-samples per pixel."""
    g = gaussian_kernel(k * n, s1 * n, s2 * n, theta=theta, shift=(shift[0] * n, shift[1] * n)).astype(np.float64)
    return g.reshape(k, n, k, n).sum(axis=(1, 3))  # sub-pixel grid centred like the kernel: k n - 1 / 2 <-> k - 1 / 2


@pytest.mark.parametrize("s1, s2, theta, shift", [(0.8, 0.8, 0.0, (0, 0)), (1.2, 0.9, 0.7, (0.4, -0.3)),
                                                  (2.4, 1.3, 2.2, (0, 0)), (3.1, 1.7, -0.4, (-1.2, 0.5))])
def test_with_pixel_aperture_matches_integrated_gaussian(s1, s2, theta, shift):
    from dpcal.psf.estimate import kernel_centroid, relative_l2

    k = 21
    sampled = gaussian_kernel(k, s1, s2, theta=theta, shift=shift)
    f = PSFField(np.broadcast_to(sampled, (2, 1, 4, k, k)).copy(), np.stack(np.meshgrid([5.0], [5.0, 50]), -1),
                 sensor_size=(60, 60), meta={"method": "test"})
    g = f.with_pixel_aperture()
    truth = pixel_integrated_gaussian(k, s1, s2, theta, shift)
    assert relative_l2(sampled, truth) > 0.014  # the box is not negligible: 1.4 % at 3.1 px, 10 % at 0.8 px
    assert relative_l2(g.psf[1, 0, 3], truth) < 0.004
    np.testing.assert_allclose(g.psf.sum(axis=(-1, -2)), 1, atol=1e-6)
    assert kernel_centroid(g.psf[0, 0, 0]) == pytest.approx(kernel_centroid(sampled), abs=2e-3)
    assert g.meta == {"method": "test", "kernel_convention": "pixel-integrated"}
    assert g.psf.shape == f.psf.shape and g.sensor_size == f.sensor_size
    np.testing.assert_array_equal(g.node_xy, f.node_xy)
    with pytest.raises(BadInputError, match="already include the pixel aperture"):
        g.with_pixel_aperture()


def test_with_pixel_aperture_is_a_box_in_frequency():
    # a band-limited kernel (a wide Gaussian) gets its spectrum multiplied by sinc(fx) sinc(fy)
    k = 41
    sampled = gaussian_kernel(k, 2.0, 1.5, theta=0.3)
    g = PSFField(sampled[None, None, None], np.zeros((1, 1, 2)), planes=("Y",)).with_pixel_aperture().psf[0, 0, 0]
    f = np.fft.fftfreq(k)
    shift = np.exp(2j * np.pi * f * (k - 1) / 2)  # spectra about the kernel centre
    spec = lambda a: np.fft.fft2(a.astype(np.float64)) * shift[:, None] * shift[None, :]
    np.testing.assert_allclose(spec(g), spec(sampled) * np.sinc(f)[:, None] * np.sinc(f)[None, :], atol=1e-6)
