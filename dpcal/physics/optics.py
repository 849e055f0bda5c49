"""Spatially varying PSF fields and their application (bilinear product convolution).

A field holds one kernel per grid node and CFA plane, ``psf[gy, gx, c, k, k]`` (planes
``R, Gr, Gb, B``), at the nodes ``node_xy[gy, gx] = (x, y)`` in full-sensor pixels. Kernels are
true convolution kernels, odd-sized, centred at ``((k-1)/2, (k-1)/2)``, non-negative and summing
to 1, indexed by the *source* position. The field is applied as an efficient filter flow
(Hirsch et al. 2010; ``docs/conventions.md``)::

    y = sum_g h_g * (w_g . x)

with bilinear hat windows ``w_g`` (products of 1-D hats over the node grid, constant beyond the
outer nodes) that sum to 1 everywhere, so a field of identical kernels is a plain convolution.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from dpcal.cfa import PLANES
from dpcal.errors import BadInputError
from dpcal.io.atomic import atomic_path

NPZ_VERSION = 1


@dataclasses.dataclass
class PSFField:
    """A grid of PSFs over the sensor.

    Attributes
    ----------
    psf : ndarray, float32, shape (gy, gx, P, k, k)
        Kernels per node and plane; each sums to 1.
    node_xy : ndarray, float64, shape (gy, gx, 2)
        Node positions ``(x, y)`` in sensor pixels; a separable grid (x varies along gx only,
        y along gy only), increasing.
    planes : tuple of str
        Plane names, normally ``("R", "Gr", "Gb", "B")``.
    sensor_size : (width, height) or None
        Size of the frame the node coordinates refer to.
    meta : dict
        Free-form metadata (method, QA, provenance) stored as JSON in the ``.npz``.
    """

    psf: np.ndarray
    node_xy: np.ndarray
    planes: tuple[str, ...] = PLANES
    sensor_size: tuple[int, int] | None = None
    meta: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self.psf = np.asarray(self.psf, dtype=np.float32)
        self.node_xy = np.asarray(self.node_xy, dtype=np.float64)
        self.planes = tuple(str(p) for p in self.planes)
        if self.sensor_size is not None:
            self.sensor_size = (int(self.sensor_size[0]), int(self.sensor_size[1]))
        self.validate()

    # ------------------------------------------------------------------------------------
    def validate(self, atol: float = 1e-3) -> None:
        """Raise :class:`BadInputError` naming the problem if the field is malformed."""
        p, n = self.psf, self.node_xy
        if p.ndim != 5 or p.shape[-1] != p.shape[-2]:
            raise BadInputError(f"PSF field: psf must have shape [gy, gx, planes, k, k], got {p.shape}")
        k = p.shape[-1]
        if k % 2 == 0:
            raise BadInputError(f"PSF field: kernel size must be odd, got {k}")
        if p.shape[2] != len(self.planes):
            raise BadInputError(f"PSF field: {p.shape[2]} kernel planes but planes={self.planes}")
        if n.shape != p.shape[:2] + (2,):
            raise BadInputError(f"PSF field: node_xy must have shape {p.shape[:2] + (2,)}, got {n.shape}")
        if not np.all(np.isfinite(p)) or p.min() < 0:
            raise BadInputError("PSF field: kernels must be finite and non-negative")
        sums = p.sum(axis=(-1, -2))
        if np.max(np.abs(sums - 1)) > atol:
            raise BadInputError(f"PSF field: kernels must sum to 1 (worst sum {sums.flat[np.argmax(np.abs(sums - 1))]:.4f})")
        xs, ys = self.grid_x, self.grid_y
        if not (np.allclose(n[..., 0], xs[None, :]) and np.allclose(n[..., 1], ys[:, None])):
            raise BadInputError("PSF field: node_xy must be a separable grid (x along gx, y along gy)")
        if np.any(np.diff(xs) <= 0) or np.any(np.diff(ys) <= 0):
            raise BadInputError("PSF field: node coordinates must increase along each grid axis")

    @property
    def kernel_size(self) -> int:
        return int(self.psf.shape[-1])

    @property
    def grid_x(self) -> np.ndarray:
        return self.node_xy[0, :, 0]

    @property
    def grid_y(self) -> np.ndarray:
        return self.node_xy[:, 0, 1]

    def plane_index(self, plane: str) -> int:
        if plane not in self.planes:
            raise BadInputError(f"PSF field has no plane {plane!r}; it has {', '.join(self.planes)}")
        return self.planes.index(plane)

    # ------------------------------------------------------------------------------------
    def kernel_at(self, x: float, y: float, plane: str) -> np.ndarray:
        """The field's effective kernel for a source at ``(x, y)``: bilinear blend of node kernels."""
        wx = hat_weights(self.grid_x, np.array([x], float))[:, 0]
        wy = hat_weights(self.grid_y, np.array([y], float))[:, 0]
        c = self.plane_index(plane)
        return np.einsum("j,i,jikl->kl", wy, wx, self.psf[:, :, c].astype(np.float64)).astype(np.float32)

    def rgb(self) -> np.ndarray:
        """Kernels for an RGB image, ``[gy, gx, 3, k, k]`` (G is the mean of Gr and Gb)."""
        r, gr, gb, b = (self.psf[:, :, self.plane_index(p)] for p in PLANES)
        return np.stack([r, 0.5 * (gr + gb), b], axis=2)

    def resampled(self, width: int, height: int) -> "PSFField":
        """The field for an image that shows the whole sensor frame at ``width`` x ``height``.

        Node positions are scaled (pixel centres map to pixel centres) and each kernel is
        re-integrated over the new, larger or smaller pixels (exact area resampling, separable),
        keeping it centred, odd-sized and summing to 1.
        """
        if self.sensor_size is None:
            raise BadInputError("PSF field has no sensor_size; cannot map it to another image size")
        sw, sh = self.sensor_size
        sx, sy = width / sw, height / sh
        k = self.kernel_size
        kx = _odd_at_least(k * sx)
        ky = _odd_at_least(k * sy)
        rx = _area_resample_matrix(k, kx, sx)
        ry = _area_resample_matrix(k, ky, sy)
        psf = np.einsum("ak,...kl,bl->...ab", ry, self.psf.astype(np.float64), rx)
        psf = np.maximum(psf, 0)
        psf /= psf.sum(axis=(-1, -2), keepdims=True)
        if kx != ky:  # keep kernels square
            m = max(kx, ky)
            psf = np.pad(psf, [(0, 0)] * 3 + [((m - ky) // 2,) * 2, ((m - kx) // 2,) * 2])
        node = self.node_xy.copy()
        node[..., 0] = (node[..., 0] + 0.5) * sx - 0.5
        node[..., 1] = (node[..., 1] + 0.5) * sy - 0.5
        return PSFField(psf.astype(np.float32), node, self.planes, (width, height), dict(self.meta))

    def with_pixel_aperture(self) -> "PSFField":
        """The field as system PSFs: each kernel integrated over a photosite's area.

        A dpcal kernel is the optical PSF *sampled at pixel centres*, and it acts on an image
        that is already integrated over the pixels (the chart model of ``fit-psf``, the
        renderer's pixel-area integral, a photo given to the simulator): blurring the
        pixel-integrated scene with it gives the capture. The other common convention, the
        *system* PSF, folds the pixel aperture into the kernel (optics convolved with the pixel
        box) and acts on the scene sampled at pixel centres. Both describe the same capture;
        their kernels differ by the box, by 10 % (relative L2) for a Gaussian of sigma 0.8 px
        and 2.4 % at 2.4 x 1.3 px. Compare a dpcal field with a system-PSF truth only after
        this conversion (:func:`dpcal.psf.qa.compare_fields` with
        ``truth_convention="integrated"``).

        Each kernel is interpolated band-limitedly (sinc) between its samples and integrated
        over a 1 x 1 pixel box about each sample, i.e. its spectrum is multiplied by
        ``sinc(fx) sinc(fy)`` (f in cycles per pixel): a separable convolution with the taps
        ``h[n] = (Si(pi (n + 1/2)) - Si(pi (n - 1/2))) / pi``, applied in full inside the
        kernel's window. The box is one photosite: kernels are at full-sensor sampling for
        every CFA plane (the CFA sub-sampling happens after the blur), so the aperture is one
        full-sensor pixel (100 % fill factor), not the 2 x 2 CFA cell.

        The conversion is exact for band-limited PSFs (up to the light the box spreads beyond the
        window). A Gaussian of sigma 0.8 px or more, sampled, converts to within 0.4 % of its
        numerically integrated version; sharper kernels are not band-limited and their sinc
        interpolation rings (3 % at sigma 0.5 px): negative ringing is clipped, then each
        kernel is renormalised to sum 1. The sum and, for kernels well inside their window,
        the centroid are kept.

        Returns
        -------
        PSFField
            Same nodes, planes and kernel size; ``meta["kernel_convention"]`` is
            ``"pixel-integrated"``.

        Raises
        ------
        BadInputError
            If the field already includes the pixel aperture (by that ``meta`` entry).

        Examples
        --------
        A Gaussian of sigma 1 px: its central sample is ``1 / (2 pi)``; integrated over the
        central pixel it is ``erf(0.5 / sqrt(2))^2 = 0.14663``:

        >>> f = PSFField(gaussian_kernel(21, 1.0)[None, None, None], np.zeros((1, 1, 2)), planes=("Y",))
        >>> k = f.with_pixel_aperture().psf[0, 0, 0]
        >>> round(float(f.psf[0, 0, 0, 10, 10]), 4), round(float(k[10, 10]), 4), round(float(k.sum()), 6)
        (0.1592, 0.1467, 1.0)
        """
        if self.meta.get("kernel_convention") == "pixel-integrated":
            raise BadInputError("PSF field: its kernels already include the pixel aperture")
        k = self.kernel_size
        n = np.arange(k)[:, None] - np.arange(k)[None, :]
        a = _pixel_box_taps(n)
        psf = np.einsum("ak,...kl,bl->...ab", a, self.psf.astype(np.float64), a)
        psf = np.maximum(psf, 0)
        psf /= psf.sum(axis=(-1, -2), keepdims=True)
        meta = dict(self.meta, kernel_convention="pixel-integrated")
        return PSFField(psf.astype(np.float32), self.node_xy.copy(), self.planes, self.sensor_size, meta)

    # ------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the field as ``.npz`` (``psf``, ``node_xy``, ``planes``, ...), atomically."""
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(
                    f,
                    psf=self.psf.astype(np.float32),
                    node_xy=self.node_xy.astype(np.float64),
                    planes=np.array(self.planes),
                    sensor_size=np.array(self.sensor_size if self.sensor_size else (-1, -1), dtype=np.int64),
                    meta=np.array(json.dumps(self.meta)),
                    version=np.array(NPZ_VERSION),
                )

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PSFField":
        """Read a field written by :meth:`save` (or any ``.npz`` with ``psf`` and ``node_xy``)."""
        p = Path(path)
        if not p.is_file():
            raise BadInputError(f"{p}: no such PSF field file")
        try:
            with np.load(p, allow_pickle=False) as z:
                if "psf" not in z or "node_xy" not in z:
                    raise BadInputError(f"{p}: not a PSF field (needs arrays 'psf' and 'node_xy')")
                psf, node = z["psf"], z["node_xy"]
                planes = tuple(z["planes"].tolist()) if "planes" in z else PLANES
                ss = tuple(int(v) for v in z["sensor_size"]) if "sensor_size" in z else (-1, -1)
                meta = json.loads(str(z["meta"])) if "meta" in z else {}
        except (OSError, ValueError) as e:
            raise BadInputError(f"{p}: cannot read PSF field ({e})") from None
        return cls(psf, node, planes, None if ss[0] < 0 else ss, meta)


def _odd_at_least(v: float) -> int:
    n = max(1, int(np.ceil(v - 1e-9)))
    return n if n % 2 else n + 1


def _pixel_box_taps(n: np.ndarray) -> np.ndarray:
    """``h[n]``: the integral over pixel ``n`` (width 1) of ``sinc(t)``, the band-limited unit sample.

    Its spectrum is ``sinc(f)`` for ``|f| <= 1/2``; the taps sum to 1 and fall as ``1/n^2``
    with alternating sign.
    """
    from scipy.special import sici

    return (sici(np.pi * (n + 0.5))[0] - sici(np.pi * (n - 0.5))[0]) / np.pi


def _area_resample_matrix(k_old: int, k_new: int, scale: float) -> np.ndarray:
    """``R[j, i]``: overlap of new pixel j (in old units) with old pixel i, both centred."""
    c_old, c_new = (k_old - 1) / 2, (k_new - 1) / 2
    i = np.arange(k_old) - c_old
    j = np.arange(k_new) - c_new
    lo = np.maximum(i[None, :] - 0.5, (j[:, None] - 0.5) / scale)
    hi = np.minimum(i[None, :] + 0.5, (j[:, None] + 0.5) / scale)
    return np.maximum(hi - lo, 0.0)


def hat_weights(nodes: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """1-D bilinear hat weights ``(len(nodes), len(coords))``; columns sum to 1.

    Beyond the outer nodes the weight stays with the outer node (constant extension).

    Examples
    --------
    >>> hat_weights(np.array([0.0, 10.0]), np.array([-5.0, 0.0, 2.5, 10.0, 20.0]))
    array([[1.  , 1.  , 0.75, 0.  , 0.  ],
           [0.  , 0.  , 0.25, 1.  , 1.  ]])
    """
    nodes = np.asarray(nodes, float)
    eye = np.eye(len(nodes))
    return np.stack([np.interp(coords, nodes, eye[i]) for i in range(len(nodes))])


def apply_psf_field(
    image,
    field: PSFField | None = None,
    *,
    kernels: np.ndarray | None = None,
    node_xy: np.ndarray | None = None,
    padding: str = "reflect",
    method: str = "auto",
):
    """Blur an image with a spatially varying PSF field (bilinear product convolution).

    Parameters
    ----------
    image : torch.Tensor or ndarray, shape (B, C, H, W), (C, H, W) or (H, W)
        Image in the field's pixel frame (node coordinates are pixel indices of this image).
    field : PSFField, optional
        Uses ``field.psf`` (``C`` must equal the number of planes) and ``field.node_xy``.
    kernels : array (gy, gx, C, k, k), optional
        Instead of ``field``: the kernels per channel (e.g. ``field.rgb()`` for an RGB image).
    node_xy : array (gy, gx, 2), optional
        With ``kernels``: node positions (default ``field.node_xy``).
    padding : {"reflect", "replicate", "zeros"}
        How the image continues beyond its border (light from outside the frame).
    method : {"auto", "direct", "fft"}
        Convolution method; ``auto`` uses FFT for kernels of 15 px and more.

    Returns
    -------
    Same type, shape and dtype as ``image`` (differentiable for tensors).

    Examples
    --------
    A single bright pixel spreads into the kernel itself (true convolution, not flipped):

    >>> k = np.zeros((1, 1, 1, 3, 3), np.float32); k[0, 0, 0, 1, 2] = 1.0   # shift right
    >>> f = PSFField(k, np.zeros((1, 1, 2)), planes=("Y",))
    >>> x = np.zeros((1, 5, 5), np.float32); x[0, 2, 2] = 1
    >>> apply_psf_field(x, f, padding="zeros")[0, 2]
    array([0., 0., 0., 1., 0.], dtype=float32)
    """
    import torch

    if kernels is None:
        if field is None:
            raise ValueError("give a field or kernels")
        kernels = field.psf
    if node_xy is None:
        if field is None:
            raise ValueError("give node_xy with kernels")
        node_xy = field.node_xy
    is_numpy = not isinstance(image, torch.Tensor)
    x = torch.as_tensor(np.asarray(image)) if is_numpy else image
    shape = x.shape
    if x.ndim == 2:
        x = x[None, None]
    elif x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise ValueError(f"image must be (H, W), (C, H, W) or (B, C, H, W), got {tuple(shape)}")
    dtype = x.dtype if x.is_floating_point() else torch.float32
    x = x.to(dtype)
    kern = torch.as_tensor(np.asarray(kernels), dtype=dtype, device=x.device)
    gy, gx, c, k, _ = kern.shape
    if c != x.shape[1]:
        raise ValueError(f"image has {x.shape[1]} channels but the kernels have {c}")
    r = k // 2
    b, _, h, w = x.shape
    node_xy = np.asarray(node_xy, float)
    xs, ys = node_xy[0, :, 0], node_xy[:, 0, 1]
    if padding not in ("reflect", "replicate", "zeros"):
        raise ValueError(f"padding must be reflect, replicate or zeros, got {padding!r}")
    if r > 0 and padding != "zeros":
        mode = padding if (padding == "replicate" or (r < h and r < w)) else "replicate"
        xp = torch.nn.functional.pad(x, (r, r, r, r), mode=mode)
    else:
        xp = torch.nn.functional.pad(x, (r, r, r, r))
    # Hat windows over the padded domain (padded pixel i sits at image coordinate i - r).
    wx = hat_weights(xs, np.arange(w + 2 * r) - r)
    wy = hat_weights(ys, np.arange(h + 2 * r) - r)
    use_fft = method == "fft" or (method == "auto" and k >= 15)
    acc = x.new_zeros((b, c, h + 4 * r, w + 4 * r))
    flipped = torch.flip(kern, dims=(-2, -1))
    # Support (start, stop, window) of each node's hat along each axis, computed once.
    row_spans = _hat_spans(wy, dtype, x.device)
    col_spans = _hat_spans(wx, dtype, x.device)
    for j, (r0, r1, wyj) in enumerate(row_spans):
        if wyj is None:
            continue
        for i, (c0, c1, wxi) in enumerate(col_spans):
            if wxi is None:
                continue
            crop = xp[:, :, r0:r1, c0:c1] * (wyj[:, None] * wxi[None, :])
            if use_fft:
                out = _full_conv_fft(crop, kern[j, i])
            else:
                out = torch.nn.functional.conv2d(crop, flipped[j, i][:, None], padding=k - 1, groups=c)
            # Full convolution covers padded rows r0 - r .. r1 + r - 1, i.e. acc rows r0 .. r1 + 2r.
            acc[:, :, r0 : r1 + 2 * r, c0 : c1 + 2 * r] += out
    y = acc[:, :, 2 * r : 2 * r + h, 2 * r : 2 * r + w].reshape(shape)
    if is_numpy:
        return y.numpy().astype(np.asarray(image).dtype if np.asarray(image).dtype.kind == "f" else np.float32)
    return y


def _hat_spans(weights: np.ndarray, dtype, device) -> list:
    """Per node: first and past-last index where its hat is non-zero, and the hat there as a tensor."""
    import torch

    spans = []
    for w in weights:
        nz = np.nonzero(w > 0)[0]
        if len(nz) == 0:
            spans.append((0, 0, None))
            continue
        a, b = int(nz[0]), int(nz[-1]) + 1
        spans.append((a, b, torch.as_tensor(w[a:b], dtype=dtype, device=device)))
    return spans


def _full_conv_fft(x, kern):
    """Full 2-D convolution of ``x`` (B, C, h, w) with per-channel kernels (C, k, k) via FFT."""
    import torch

    k = kern.shape[-1]
    hh, ww = x.shape[-2] + k - 1, x.shape[-1] + k - 1
    fx = torch.fft.rfft2(x, s=(hh, ww))
    fk = torch.fft.rfft2(kern, s=(hh, ww))
    return torch.fft.irfft2(fx * fk[None], s=(hh, ww))


def blur_rgb_to_planes(rgb, field: PSFField, **kw):
    """Blur an RGB image (B, 3, H, W) into the four CFA-plane images (B, 4, H, W).

    Plane ``p`` is its colour channel (R, G, G, B) blurred with that plane's kernels, so that
    mosaicking then takes plane ``p`` at its CFA sites: the CFA sub-sampling stays part of the
    forward model and Gr/Gb keep their own PSFs.
    """
    import torch

    idx = [0 if p == "R" else 2 if p == "B" else 1 for p in field.planes]
    x = rgb[:, idx] if isinstance(rgb, torch.Tensor) else np.asarray(rgb)[:, idx]
    return apply_psf_field(x, field, **kw)


def gaussian_kernel(k: int, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0,
                    shift: Sequence[float] = (0.0, 0.0)) -> np.ndarray:
    """Anisotropic Gaussian kernel (k x k), rotated by ``theta`` and shifted by ``(dx, dy)``.

    A convenient synthetic PSF (astigmatism, off-axis shapes) for tests and capture planning.
    """
    sy = sigma_x if sigma_y is None else sigma_y
    c = (k - 1) / 2
    yy, xx = np.mgrid[0:k, 0:k].astype(float)
    xx -= c + shift[0]
    yy -= c + shift[1]
    ct, st = np.cos(theta), np.sin(theta)
    u = ct * xx + st * yy
    v = -st * xx + ct * yy
    g = np.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sy) ** 2))
    return (g / g.sum()).astype(np.float32)
