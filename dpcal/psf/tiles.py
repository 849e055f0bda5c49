"""Kernels per tile and CFA plane, from the prepared captures (``docs/psf.md``, steps 4-5).

- **Node grid and tiles** (:func:`node_grid`, :func:`tile_bounds`) and the local field model's
  weights (:func:`local_field_weights`).
- **Pilot** per tile on the half-resolution luminance (:func:`pilot_kernels`): a coarse kernel
  that sets the support size (the radius holding 99 % of the kernel's mass above its noise
  floor), the predicted signal for the noise weights, and the check that the capture matches
  the chart (:func:`check_match`).
- **Kernels** per tile and plane (:func:`estimate_tile_kernels`, solver in
  :mod:`dpcal.psf.estimate`): non-negative, sum one, smoothness-regularised, noise-weighted
  least squares with exact normal equations; the regularisation weight is a fixed multiple of
  the one maximising the marginal likelihood (evidence) of the tile's data
  (``EVIDENCE_FACTOR``). The result per tile is a :class:`TileProblem`.
"""

from __future__ import annotations

import dataclasses
import math
import sys

import numpy as np

from dpcal.cfa import PLANES, plane_offsets
from dpcal.chart.spec import ChartSpec
from dpcal.errors import BadInputError, FitError
from dpcal.psf.estimate import KernelSolution, NormalEquations, kernel_centroid, smoothness_operator, solve_kernel
from dpcal.psf.prepare import PreparedCapture

# Nuisance columns per tile: gain ramps only (residual vignetting within the tile). A free
# offset is left out on purpose: over a noise chart it is nearly collinear with a flat pedestal
# under the kernel (the window mean of a Bernoulli field hardly varies), so noise trades one for
# the other and the kernels come out too wide; the black/white photometry fixes the offset.
N_NUIS = 2
# The kernels' regularisation weight is this multiple of the evidence-optimal one. The
# Laplacian prior leaves high kernel frequencies far freer than lens PSFs are (its spectrum
# falls as |w|^-4, a blur's much faster), so the evidence optimum under-smooths the wide kernels,
# and the field unmixing then amplifies that noise. Measured on two renderers, ISO 100-800,
# sigma 0.8-3.2 px: x3 lowers the worst node's error in every case (e.g. 6.5 -> 5.1 %) and
# leaves the sharp centre unchanged; x10 over-smooths the sharp kernels.
EVIDENCE_FACTOR = 3.0


def node_grid(width: int, height: int, gx: int, gy: int, origin: tuple[int, int] = (0, 0)) -> tuple[np.ndarray, np.ndarray]:
    """Node coordinates at the centres of a ``gx x gy`` partition of a ``width x height`` region.

    The region's top-left pixel is ``origin`` (default: the whole sensor from (0, 0)).

    Examples
    --------
    >>> node_grid(800, 600, 4, 3)[0]
    array([ 99.5, 299.5, 499.5, 699.5])
    """
    xs = origin[0] + (np.arange(gx) + 0.5) * width / gx - 0.5
    ys = origin[1] + (np.arange(gy) + 0.5) * height / gy - 0.5
    return xs, ys


def tile_bounds(width: int, height: int, gx: int, gy: int, origin: tuple[int, int] = (0, 0)):
    ex = origin[0] + np.round(np.arange(gx + 1) * width / gx).astype(int)
    ey = origin[1] + np.round(np.arange(gy + 1) * height / gy).astype(int)
    return ex, ey


def local_field_weights(nodes: np.ndarray, tile: int, coords: np.ndarray) -> np.ndarray:
    """Weights ``(len(nodes), len(coords))`` of the node kernels in tile ``tile``'s field model.

    Within an inner tile (and its margin) the PSF is modelled as the quadratic through the
    tile's node and its two neighbours (Lagrange weights); in a border tile, as the line
    through the outer node and its neighbour, extrapolated outward (a quadratic extrapolation
    amplifies the noise of the outer kernels). The weights sum to 1 and are 1 at the tile's own
    node, so the node kernels are samples of the field. Bilinear hats would mix a tile's
    neighbours in three times as strongly as a smooth field does; unmixing with them biases
    the nodes where the PSF changes smoothly.

    Examples
    --------
    >>> local_field_weights(np.array([0.0, 10.0, 20.0]), 1, np.array([5.0, 15.0]))
    array([[ 0.375, -0.125],
           [ 0.75 ,  0.75 ],
           [-0.125,  0.375]])
    >>> local_field_weights(np.array([0.0, 10.0, 20.0]), 0, np.array([-5.0, 5.0]))
    array([[ 1.5,  0.5],
           [-0.5,  0.5],
           [ 0. ,  0. ]])
    """
    nodes = np.asarray(nodes, float)
    x = np.asarray(coords, float)
    n = len(nodes)
    w = np.zeros((n, len(x)))
    if n == 1:
        w[0] = 1.0
        return w
    if n == 2 or tile in (0, n - 1):
        a, b = (0, 1) if tile == 0 else (n - 1, n - 2)
        t = (x - nodes[a]) / (nodes[b] - nodes[a])
        w[a], w[b] = 1 - t, t
        return w
    trip = (tile - 1, tile, tile + 1)
    for a in trip:
        others = [nodes[o] for o in trip if o != a]
        w[a] = (x - others[0]) * (x - others[1]) / ((nodes[a] - others[0]) * (nodes[a] - others[1]))
    return w


@dataclasses.dataclass
class PilotTile:
    kernel_half: np.ndarray | None  # (Kh, Kh) at half resolution
    kernel_full: np.ndarray | None  # upsampled to full resolution (K x K)
    radius: int  # support radius at full resolution
    border: float
    r2: float | None  # explained variance in the noise field
    n: int


def _half(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[0] // 2 * 2, img.shape[1] // 2 * 2
    a = img[:h, :w]
    return 0.25 * (a[0::2, 0::2] + a[0::2, 1::2] + a[1::2, 0::2] + a[1::2, 1::2])


def _upsample_kernel(kh: np.ndarray, K: int) -> np.ndarray:
    """A half-resolution kernel on the full-resolution K x K grid (offset q <-> q / 2), bilinear."""
    from scipy.ndimage import map_coordinates

    ch = (kh.shape[0] - 1) / 2
    q = np.arange(K) - (K - 1) / 2
    yy, xx = np.meshgrid(ch + q / 2, ch + q / 2, indexing="ij")
    out = np.maximum(map_coordinates(kh, [yy, xx], order=1, mode="constant", cval=0.0), 0)
    return out / max(out.sum(), 1e-12)


def _sigma_max(k: np.ndarray) -> float:
    """Standard deviation of a kernel along its major axis (second moments about the centroid)."""
    c = np.arange(k.shape[0]) - (k.shape[0] - 1) / 2
    X, Y = np.meshgrid(c, c)
    m = max(float(k.sum()), 1e-30)
    mx, my = kernel_centroid(k)
    cxx = float((k * (X - mx) ** 2).sum()) / m
    cyy = float((k * (Y - my) ** 2).sum()) / m
    cxy = float((k * (X - mx) * (Y - my)).sum()) / m
    return math.sqrt(max(0.5 * (cxx + cyy) + math.hypot(0.5 * (cxx - cyy), cxy), 0.0))


def pilot_kernels(prepared: list[PreparedCapture], ex, ey, K: int, pilot_rows: int,
                  prior_order: int = 2) -> dict[tuple[int, int], PilotTile]:
    """Half-resolution luminance kernels per tile (noise-field rows only)."""
    rng = np.random.default_rng(0)
    # The pilot looks a little beyond the kernel size, to notice PSFs that do not fit in it.
    Kh = (K + 1) // 2 + 4
    Kh += 1 - Kh % 2
    rh = Kh // 2
    gx, gy = len(ex) - 1, len(ey) - 1
    halves = []
    for p in prepared:
        bh = _half(np.where(np.isfinite(p.b), p.b, np.nan))
        uh = _half(p.u)
        vh = _half(p.valid.astype(np.float32)) == 1.0
        nh = _half(p.in_noise.astype(np.float32)) == 1.0
        halves.append((bh, np.pad(uh, rh, constant_values=np.nan), vh & nh & np.isfinite(bh)))
    D = smoothness_operator(Kh, prior_order)
    out = {}
    # The central tile first: its evidence-optimal regularisation serves all pilot tiles (the
    # pilot only needs a sound kernel shape, and the eigen-decomposition is its costliest step).
    order = sorted(((j, i) for j in range(gy) for i in range(gx)),
                   key=lambda t: (t[0] - (gy - 1) / 2) ** 2 + (t[1] - (gx - 1) / 2) ** 2)
    lam = None
    for (j, i) in order:
        ne = NormalEquations.empty(Kh, 0)
        tot_var = 0.0
        n_tot = 0
        for bh, pad, vh in halves:
            y0, y1, x0, x1 = ey[j] // 2, ey[j + 1] // 2, ex[i] // 2, ex[i + 1] // 2
            ys, xs = np.nonzero(vh[y0:y1, x0:x1])
            if len(ys) == 0:
                continue
            sel = rng.choice(len(ys), size=min(pilot_rows, len(ys)), replace=False)
            ys, xs = ys[sel] + y0, xs[sel] + x0
            A = rows_im2col(pad, Kh, ys, xs)
            if not np.all(np.isfinite(A)):
                ok = np.all(np.isfinite(A), 1)
                A, ys, xs = A[ok], ys[ok], xs[ok]
            bb = bh[ys, xs]
            ne.add(A, bb, np.ones(len(bb), np.float32))
            tot_var += float(((bb - bb.mean()) ** 2).sum())
            n_tot += len(bb)
        if ne.n < 4 * Kh * Kh:
            out[(j, i)] = PilotTile(None, None, -1, 0.0, None, ne.n)
            continue
        Q, q, bwb = reduce_nuisance(ne)
        if lam is None:
            lam = evidence_lambda(Q, q, D, ne.n, bwb)
        sol = solve_kernel(ne, lam, D)
        kh = sol.kernel
        # posterior standard deviation of the (normalised) coefficients
        try:
            Lc = np.linalg.cholesky(Q + lam * D)
            var = (np.linalg.inv(Lc) ** 2).sum(0) * max(sol.reduced_chi2, 1e-12)
            noise = float(np.sqrt(np.mean(var))) / max(sol.gain, 1e-12)
        except np.linalg.LinAlgError:
            noise = None
        radius_h, border = _support_radius(kh, (K // 2) / 2 + 0.5, noise)
        r2 = 1.0 - sol.chi2 / max(tot_var, 1e-12)
        kf = _upsample_kernel(kh, K)
        # The threshold rule cuts a wide PSF's tails where the pilot is noisy; a support of at
        # least 3.5 sigma (second moments of the pilot, which noise only inflates) keeps them.
        radius = max(2 * radius_h + 2, math.ceil(3.5 * _sigma_max(kf)))
        out[(j, i)] = PilotTile(kh, kf, min(K // 2, radius), border, r2, ne.n)
    return out


def check_match(pilot: dict, chart: ChartSpec) -> None:
    r2 = [t.r2 for t in pilot.values() if t.r2 is not None]
    if not r2:
        raise FitError("the chart's noise field covers too little of any tile; fill more of the frame with the chart "
                       "or use a coarser `grid`")
    med = float(np.median(r2))
    if med < 0.2:
        causes = ("the frames given in another order than the chart's sequence (checkerboard, black, white, "
                  "noise), or the camera moved between them" if chart.medium == "display" else
                  "a print cut off at the page edge or printed scaled (print chart.pdf at 100 %; check its 100 mm "
                  "bar)")
        raise BadInputError(
            f"the capture's noise pattern does not match {chart.path or 'the chart spec'} (chart id {chart.chart_id}; "
            f"explained variance {med:.2f}). Likely causes: {causes}; no chart, or another chart or seed, in view "
            "(compare the id printed under the chart); or a capture far out of focus"
        )
    borders = [(t.border, key) for key, t in pilot.items() if t.kernel_half is not None]
    worst, key = max(borders)
    if worst > 0.05:
        raise FitError(
            f"the PSF is wider than the kernel: {100 * worst:.0f} % of its mass lies beyond the kernel's radius in "
            f"tile (row {key[0]}, column {key[1]}); refocus (strong defocus?), or use a larger `kernel_size`"
        )


def evidence_lambda(Q: np.ndarray, q: np.ndarray, D: np.ndarray, n_rows: int, bwb_red: float) -> float:
    """Regularisation weight maximising the marginal likelihood of a Gaussian linear model.

    Model: weighted data with noise scale ``s^2`` (profiled out), conjugate prior
    ``kappa ~ N(0, s^2 (lam D)^-1)``; ``Q``, ``q``, ``bwb_red`` are the normal equations with the
    nuisance parameters eliminated. With the generalised eigen-decomposition ``Q v = mu D v``
    everything is a function of ``mu`` and the projections of ``q``.
    """
    from scipy.linalg import eigh

    mu, V = eigh(Q, D, driver="gvd")  # divide and conquer: several times faster here
    mu = np.maximum(mu, 0)
    z2 = (V.T @ q) ** 2  # V is D-orthonormal
    n = len(q)
    best = (-np.inf, 1.0)
    scale = np.median(mu[mu > 0]) if np.any(mu > 0) else 1.0
    for lam in scale * np.logspace(-7, 1, 81):
        # b^T (I + A (lam D)^-1 A^T)^-1 b, and log det(I + (lam D)^-1 Q) = sum log(mu + lam) - n log lam
        fit_term = bwb_red - np.sum(z2 / (mu + lam))
        if fit_term <= 0:
            continue
        # log evidence with the noise scale profiled out (conjugate prior, n_rows data)
        ev = -0.5 * n_rows * np.log(fit_term) - 0.5 * np.sum(np.log(mu + lam)) + 0.5 * n * np.log(lam)
        if ev > best[0]:
            best = (ev, lam)
    return float(best[1])


def reduce_nuisance(ne: NormalEquations):
    """Schur complement eliminating the nuisance parameters: (Q, q, b^T W b reduced)."""
    k2 = ne.s * ne.s
    G = ne.G
    if ne.n_nuis:
        Gnn_inv = np.linalg.pinv(G[k2:, k2:])
        Q = G[:k2, :k2] - G[:k2, k2:] @ Gnn_inv @ G[k2:, :k2]
        q = ne.r[:k2] - G[:k2, k2:] @ Gnn_inv @ ne.r[k2:]
        bwb = ne.bwb - ne.r[k2:] @ Gnn_inv @ ne.r[k2:]
    else:
        Q, q, bwb = G[:k2, :k2], ne.r[:k2], ne.bwb
    return 0.5 * (Q + Q.T), q, float(bwb)


def rows_im2col(u_reg: np.ndarray, s: int, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Windows (n, s*s) of ``u_reg`` whose top-left corners are at (ys, xs), as float32."""
    from numpy.lib.stride_tricks import sliding_window_view

    sw = sliding_window_view(u_reg, (s, s))
    return np.ascontiguousarray(sw[ys, xs].reshape(len(ys), s * s), dtype=np.float32)


def _support_radius(k: np.ndarray, limit: float, noise: float | None = None) -> tuple[int, float]:
    """Support radius of a (noisy) kernel estimate, and its mass share beyond ``limit``.

    The kernel is smoothed (3x3 mean) so single noise speckles fall below the threshold
    ``max(2 x noise, 1 % of the peak)`` (``noise``: the coefficients' posterior standard
    deviation, else the RMS of the outer quarter of the support); the radius is the
    largest Chebyshev distance from the centre of an above-threshold pixel. The second value is
    the share of the above-threshold mass farther than ``limit`` from the centre (a PSF wider
    than the kernel to be estimated: defocus).
    """
    from scipy.ndimage import uniform_filter

    s = k.shape[0]
    c = s // 2
    yy, xx = np.mgrid[0:s, 0:s]
    ring = np.maximum(np.abs(yy - c), np.abs(xx - c))
    sm = uniform_filter(k, 3, mode="constant")
    if noise is None:
        outer = ring >= max(1, int(round(0.75 * c)))
        noise = 1.5 * float(np.sqrt(np.mean(sm[outer] ** 2))) if outer.any() else 0.0
    thr = max(2 * noise, 0.01 * sm.max())
    above = sm > thr
    if not above.any():
        return 1, 0.0
    r = int(ring[above].max())
    kk = np.where(above, k, 0.0)
    beyond = float(kk[ring > limit].sum() / max(kk.sum(), 1e-30))
    return min(r, c), beyond


@dataclasses.dataclass
class TileData:
    """One capture's data for one tile: the chart region and the rows of each plane."""

    ry0: int  # region origin (sensor px); the region is the tile plus a margin of K // 2
    rx0: int
    u: np.ndarray  # sharp chart over the region (0 off the chart; rows never reach it)
    rows: list  # per plane: (ry, rx) region coordinates of the rows
    w: list  # per plane: row weights
    nuis: list  # per plane: nuisance columns (n, N_NUIS)


@dataclasses.dataclass
class TileSolution:
    """One tile and plane's kernel estimate with the equations it solved."""

    solution: KernelSolution
    equations: NormalEquations  # with the nuisance columns (``N_NUIS``)
    total_ss: float  # weighted total sum of squares of the data (for the explained variance)
    lam: float  # regularisation weight


@dataclasses.dataclass
class TileProblem:
    """Everything known about one tile after :func:`estimate_tile_kernels`."""

    size: int  # estimated support (odd, <= kernel_size)
    radius: int
    solutions: list  # per plane: TileSolution, or None without enough data
    data: list  # per capture: TileData (rows, weights, nuisance columns, chart region)
    prior: np.ndarray  # smoothness operator of the support size


def estimate_tile_kernels(prepared, pilot, ex, ey, xs_nodes, ys_nodes, K, pattern, regularization, max_rows, progress,
          prior_order: int = 2) -> dict[tuple[int, int], TileProblem]:
    """Per-tile, per-plane normal equations, first (per-tile) kernel solutions, and row data."""
    import cv2

    gx, gy = len(ex) - 1, len(ey) - 1
    h, w = prepared[0].b.shape
    R = K // 2
    radii = [t.radius for t in pilot.values() if t.radius >= 0]
    default_r = max(radii) if radii else R
    fallback = np.mean([t.kernel_full for t in pilot.values() if t.kernel_full is not None], axis=0)
    offs = plane_offsets(pattern)
    rng = np.random.default_rng(1)
    out = {}
    tiles = [(j, i) for j in range(gy) for i in range(gx)]
    it = tiles
    if progress:
        from tqdm import tqdm

        it = tqdm(tiles, desc="fit-psf: tiles", file=sys.stderr, leave=False)
    Ds: dict[int, np.ndarray] = {}
    for (j, i) in it:
        pt = pilot[(j, i)]
        r = pt.radius if pt.radius >= 0 else default_r
        s = 2 * r + 1
        if s not in Ds:
            Ds[s] = smoothness_operator(s, prior_order)
        kpil = (pt.kernel_full if pt.kernel_full is not None else fallback).astype(np.float32)
        x0, x1, y0, y1 = ex[i], ex[i + 1], ey[j], ey[j + 1]
        nes = [NormalEquations.empty(s, N_NUIS, gx * gy) for _ in PLANES]
        tot = [0.0] * 4
        datas = []
        for p in prepared:
            ry0, ry1, rx0, rx1 = y0 - R, y1 + R, x0 - R, x1 + R
            u_reg = np.full((ry1 - ry0, rx1 - rx0), np.nan, np.float32)
            sy0, sy1, sx0, sx1 = max(ry0, 0), min(ry1, h), max(rx0, 0), min(rx1, w)
            u_reg[sy0 - ry0 : sy1 - ry0, sx0 - rx0 : sx1 - rx0] = p.u[sy0:sy1, sx0:sx1]
            u_reg = np.where(np.isfinite(u_reg), u_reg, 0.0).astype(np.float32)
            # Predicted signal (pilot kernel) for the weights and the gain-ramp columns.
            pred = cv2.filter2D(u_reg, -1, kpil[::-1, ::-1].copy(), borderType=cv2.BORDER_CONSTANT)
            td = TileData(ry0, rx0, u_reg, [], [], [])
            for c, name in enumerate(PLANES):
                dy, dx = offs[name]
                ly0, lx0 = (dy - y0) % 2, (dx - x0) % 2
                vy, vx = np.nonzero(p.valid[y0 + ly0 : y1 : 2, x0 + lx0 : x1 : 2])
                ty = ly0 + 2 * vy  # tile-local rows
                tx = lx0 + 2 * vx
                if max_rows and len(ty) > max_rows:
                    sel = np.sort(rng.choice(len(ty), max_rows, replace=False))
                    ty, tx = ty[sel], tx[sel]
                if len(ty) == 0:
                    td.rows.append((ty, tx))
                    td.w.append(np.zeros(0, np.float32))
                    td.nuis.append(np.zeros((0, N_NUIS), np.float32))
                    continue
                bb = p.b[y0 + ty, x0 + tx]
                sp = pred[ty + R, tx + R]
                scale = p.scale[y0 + ty, x0 + tx]
                blk = p.black[y0 + ty, x0 + tx]
                nz = p.noise[name]
                ypred = np.maximum(blk + scale * sp, 0)
                wts = (scale**2 / (nz["alpha"] * ypred + nz["sigma"] ** 2)).astype(np.float32)
                xt = ((x0 + tx) - xs_nodes[i]) / max(x1 - x0, 1)
                yt = ((y0 + ty) - ys_nodes[j]) / max(y1 - y0, 1)
                nuis = np.stack([xt * sp, yt * sp], 1).astype(np.float32)
                hx = local_field_weights(xs_nodes, i, (x0 + tx).astype(float))
                hy = local_field_weights(ys_nodes, j, (y0 + ty).astype(float))
                hats = (hy[:, None, :] * hx[None, :, :]).reshape(gy * gx, -1).T
                # Gram in chunks of rows (bounded memory, cache-friendly).
                chunk = max(1024, 2_000_000 // (s * s))
                for a in range(0, len(ty), chunk):
                    sl = slice(a, a + chunk)
                    A = rows_im2col(u_reg, s, ty[sl] + R - r, tx[sl] + R - r)
                    A = np.concatenate([A, nuis[sl]], 1)
                    nes[c].add(A, bb[sl], wts[sl], hats[sl])
                tot[c] += float(np.sum(wts * (bb - np.average(bb, weights=wts)) ** 2))
                td.rows.append((ty + R, tx + R))
                td.w.append(wts)
                td.nuis.append(nuis)
            datas.append(td)
        sols: list = [None] * 4
        D = Ds[s]
        # One regularisation weight per tile, by maximum evidence on the plane with the most data
        # weight: it is a prior precision on the (normalised) kernel, the same for all planes.
        usable = [c for c in range(4) if nes[c].n >= 4 * s * s]
        lam = float(regularization) if regularization is not None else None
        if lam is None and usable:
            ref = max(usable, key=lambda c: nes[c].wsum)
            Q, q, bwb = reduce_nuisance(nes[ref])
            lam = EVIDENCE_FACTOR * evidence_lambda(Q, q, D, nes[ref].n, bwb)
        for c in usable:
            sol = solve_kernel(nes[c], lam, D)
            sols[c] = TileSolution(sol, nes[c], tot[c], lam)
        out[(j, i)] = TileProblem(s, r, sols, datas, D)
    return out
