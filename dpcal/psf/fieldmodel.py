"""The field model: from tile kernels to node kernels of a smooth PSF field (``docs/psf.md``, step 6).

Tile estimates are mixtures of the grid's node kernels under a local field model
(:func:`dpcal.psf.tiles.local_field_weights`: quadratic through each inner node and its
neighbours, linear at the border; it reproduces smooth variation, where bilinear hats would
over-correct). :func:`joint_field` unmixes them into node kernels that are samples of the field;
:func:`recentre` moves the part of the kernels' centroid field that the camera model can express
into the registration; :func:`smooth_field` applies a thin-plate smoother across the grid
(weight by generalised cross-validation), extrapolates to tiles the chart does not cover and
projects onto the simplex.
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np

from dpcal.cfa import PLANES
from dpcal.chart.geometry import fit_lens_mapping
from dpcal.chart.spec import ChartSpec
from dpcal.physics.optics import hat_weights
from dpcal.psf.estimate import embed_kernel, kernel_centroid, project_simplex, solve_kernel
from dpcal.psf.prepare import PreparedCapture
from dpcal.psf.tiles import N_NUIS, TileProblem, TileSolution, local_field_weights

Key = tuple[int, int]  # (row j, column i) of a tile / grid node


def joint_field(tiles: dict[Key, TileProblem], gx: int, gy: int, xs_nodes, ys_nodes, K: int, iterations: int = 6,
                progress: bool = False) -> tuple[dict[Key, list[np.ndarray]], dict[Key, list]]:
    """Node kernels consistent with the field model: ``(kernels, joint)``.

    ``kernels[key]`` holds the node's four kernels (``K x K``); ``joint[key]`` the tile's
    per-plane :class:`~dpcal.psf.tiles.TileSolution` of the last sweep (tiles that took part).

    For each tile the moment equations of its local field model are solved (weights
    :func:`local_field_weights`, source-indexed like the bilinear field): the residual of
    ``y = sum_g h_g * (w_g . u)`` over the tile's rows must be orthogonal to the tile's
    regressors (up to the regulariser). With the neighbours' kernels fixed, that is the tile's
    own problem with the linear term corrected by ``U^T W d``, where
    ``d = sum_{g' != g} (w_g' u) * (kappa_g' - kappa_g)`` is computed by FFT over the tile's
    region. Relaxed block-Jacobi sweeps (relaxation 1 / mean own weight) converge in a few
    iterations; at the fixed point the equations hold exactly, also at the chart's border where
    the data are not stationary.
    """
    from scipy import fft as sfft

    R = K // 2
    # Current kernels (normalised), per node and plane; nodes without a solution stay None.
    cur: dict = {}
    for key, t in tiles.items():
        for c in range(4):
            e = t.solutions[c]
            cur[(key, c)] = embed_kernel(e.solution.kernel, K) if e is not None else None
    _fill_missing(cur, gx, gy)
    joint: dict[Key, list] = {}
    shapes = [t.data[0].u.shape for t in tiles.values() if t.data]
    if not shapes:
        return {key: [cur[(key, c)] for c in range(4)] for key in tiles}, joint
    P = (sfft.next_fast_len(max(s[0] for s in shapes)), sfft.next_fast_len(max(s[1] for s in shapes)))

    def kfft(k):
        pad = np.zeros(P, np.float32)
        pad[:K, :K] = k
        return sfft.rfft2(np.roll(pad, (-R, -R), axis=(0, 1)), workers=-1)

    # Transforms that do not change across sweeps: the chart region and its hat-windowed parts.
    cache: dict = {}
    for (j, i), t in tiles.items():
        if all(e is None for e in t.solutions):
            continue
        nbrs = [(jj, ii) for jj in range(max(0, j - 1), min(gy, j + 2)) for ii in range(max(0, i - 1), min(gx, i + 2))
                if (jj, ii) != (j, i)]
        per_capture = []
        for td in t.data:
            hr, wr = td.u.shape
            up = np.zeros(P, np.float32)
            up[:hr, :wr] = td.u
            UF = sfft.rfft2(up, workers=-1)
            hx = local_field_weights(xs_nodes, i, td.rx0 + np.arange(wr, dtype=float))
            hy = local_field_weights(ys_nodes, j, td.ry0 + np.arange(hr, dtype=float))
            XF = {}
            for (jj, ii) in nbrs:
                if not (np.any(hx[ii]) and np.any(hy[jj])):
                    continue
                wu = np.zeros(P, np.float32)
                wu[:hr, :wr] = td.u * np.outer(hy[jj], hx[ii]).astype(np.float32)
                XF[(jj, ii)] = sfft.rfft2(wu, workers=-1)
            per_capture.append((UF, XF))
        cache[(j, i)] = per_capture

    it = range(iterations)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="fit-psf: field model", file=sys.stderr, leave=False)
    for _ in it:
        KF = {key: kfft(k.astype(np.float32)) for key, k in cur.items()}
        new = dict(cur)
        for (j, i), t in tiles.items():
            if (j, i) not in cache:
                continue
            s, r = t.size, t.radius
            corr = [np.zeros(s * s) for _ in range(4)]
            corr_n = [np.zeros(N_NUIS) for _ in range(4)]
            lag = np.arange(s) - r
            for td, (UF, XF) in zip(t.data, cache[(j, i)]):
                for c in range(4):
                    e = t.solutions[c]
                    ry, rx = td.rows[c]
                    if e is None or len(ry) == 0 or not XF:
                        continue
                    own = KF[((j, i), c)]
                    acc = None
                    for key, X in XF.items():
                        term = X * (KF[(key, c)] - own)
                        acc = term if acc is None else acc + term
                    dimg = sfft.irfft2(acc, s=P, workers=-1)
                    z = (td.w[c] * e.solution.gain * dimg[ry, rx]).astype(np.float32)
                    zimg = np.zeros(P, np.float32)
                    zimg[ry, rx] = z
                    cimg = sfft.irfft2(np.conj(sfft.rfft2(zimg, workers=-1)) * UF, s=P, workers=-1)
                    corr[c] += cimg[np.ix_(lag % P[0], lag % P[1])].ravel()
                    corr_n[c] += td.nuis[c].T.astype(np.float64) @ z
            for c in range(4):
                e = t.solutions[c]
                if e is None:
                    continue
                ne, tot, lam = e.equations, e.total_ss, e.lam
                # r - [U^T W d; N^T W d], then the tile's own solve
                ne2 = dataclasses.replace(ne, r=ne.r - np.concatenate([corr[c], corr_n[c]]))
                prev_sol = ((joint.get((j, i)) or [None] * 4)[c] or e).solution
                sol2 = solve_kernel(ne2, lam, t.prior, warm=prev_sol)
                cself = float(ne.hat_sum[j * gx + i] / max(ne.wsum, 1e-30))
                omega = min(1.0 / max(cself, 0.3), 2.5)
                prev = cur[((j, i), c)]
                step = prev + omega * (embed_kernel(sol2.kernel, K) - prev)
                new[((j, i), c)] = project_simplex(step)
                joint.setdefault((j, i), [None] * 4)[c] = TileSolution(sol2, ne2, tot, lam)
        _fill_missing(new, gx, gy, keep=lambda key: tiles[key[0]].solutions[key[1]] is not None)
        cur = new
    return {key: [cur[(key, c)] for c in range(4)] for key in tiles}, joint


def _fill_missing(cur: dict, gx: int, gy: int, keep=None) -> None:
    """Kernels for nodes without data: harmonic extension over the grid from nodes with data."""
    for c in range(4):
        known = {k[0]: v for k, v in cur.items() if k[1] == c and v is not None and (keep is None or keep(k))}
        if len(known) == gx * gy or not known:
            continue
        nodes = [(j, i) for j in range(gy) for i in range(gx)]
        idx = {n: a for a, n in enumerate(nodes)}
        Lm = np.zeros((len(nodes), len(nodes)))
        rhs = np.zeros((len(nodes),) + next(iter(known.values())).shape)
        for n in nodes:
            a = idx[n]
            if n in known:
                Lm[a, a] = 1
                rhs[a] = known[n]
                continue
            j, i = n
            nb = [(j + dj, i + di) for dj, di in ((0, 1), (0, -1), (1, 0), (-1, 0)) if 0 <= j + dj < gy and 0 <= i + di < gx]
            Lm[a, a] = len(nb)
            for m in nb:
                Lm[a, idx[m]] = -1
        sol = np.linalg.solve(Lm, rhs.reshape(len(nodes), -1)).reshape(rhs.shape)
        for n in nodes:
            if n not in known:
                cur[(n, c)] = project_simplex(sol[idx[n]])


def recentre(tiles: dict[Key, TileProblem], prepared: list[PreparedCapture], xs_nodes, ys_nodes, chart: ChartSpec,
              distortion) -> np.ndarray:
    """Displacement ``(gy, gx, 2)`` to take out of the node kernels: the part of the PSFs'
    centroid field that the camera model can express.

    The X-corners locate the chart as blurred by the PSF, so an asymmetric (e.g. comatic) PSF
    moves them by an amount between its peak and its centroid, and the kernels keep the rest.
    A chart cannot observe absolute shifts that the camera model (homography + distortion)
    can express, so dpcal's convention is that these are zero on average: the camera model is
    refitted to the corner-based mapping displaced by the tile kernels' mean centroid field,
    and the kernels are later shifted by the resulting displacement (smooth, from a dozen model
    parameters, so it adds almost no noise). Lateral colour and displacements the model cannot
    express stay in the kernels.
    """
    gy, gx = len(ys_nodes), len(xs_nodes)
    cent = np.zeros((gy, gx, 2))
    have = np.zeros((gy, gx), bool)
    for (j, i), t in tiles.items():
        cs = [kernel_centroid(e.solution.kernel) for e in t.solutions if e is not None]
        if cs:
            cent[j, i] = np.mean(cs, axis=0)
            have[j, i] = True
    if have.sum() < 2:
        return np.zeros((gy, gx, 2))
    m = prepared[0].loc.mapping
    x0, y0, x1, y1 = chart.noise["rect"]
    P = np.stack(np.meshgrid(np.linspace(x0, x1, 32), np.linspace(y0, y1, 24)), -1).reshape(-1, 2)
    X = m.forward(P)
    # the centroid field between tile centres, from the tiles with data only
    wx = hat_weights(xs_nodes, X[:, 0])
    wy = hat_weights(ys_nodes, X[:, 1])
    wgt = np.einsum("jn,in,ji->n", wy, wx, have.astype(float))
    c = np.einsum("jn,in,jic->nc", wy, wx, cent * have[..., None]) / np.maximum(wgt, 1e-12)[:, None]
    keep = wgt > 0.5
    fit = fit_lens_mapping(P[keep], X[keep] + c[keep], m.image_size, distortion=tuple(distortion), init=m,
                           outlier_px=1e9)
    nodes = np.stack(np.meshgrid(xs_nodes, ys_nodes), -1)
    return fit.mapping.forward(m.inverse(nodes)) - nodes


def shift_kernels(psf: np.ndarray, delta: np.ndarray) -> None:
    """Shift every node's kernels by ``-delta`` (sub-pixel, Fourier; in place, kept on the simplex)."""
    from scipy.ndimage import fourier_shift

    k = psf.shape[-1]
    pad = k // 2
    for j in range(psf.shape[0]):
        for i in range(psf.shape[1]):
            dx, dy = delta[j, i]
            for c in range(psf.shape[2]):
                big = np.pad(psf[j, i, c], pad)
                sh = np.real(np.fft.ifft2(fourier_shift(np.fft.fft2(big), (-dy, -dx))))[pad:pad + k, pad:pad + k]
                psf[j, i, c] = project_simplex(sh)


def node_kernels(kernels: dict[Key, list[np.ndarray]], gx: int, gy: int, K: int) -> np.ndarray:
    """The node kernels of :func:`joint_field` as one array ``(gy, gx, 4, K, K)``."""
    psf = np.zeros((gy, gx, 4, K, K))
    for (j, i), ks in kernels.items():
        for c in range(len(PLANES)):
            psf[j, i, c] = ks[c]
    return psf


def _second_difference_penalty(gx: int, gy: int) -> np.ndarray:
    """Thin-plate penalty on a grid: squared second differences along x, y and mixed."""
    rows = []
    G = gx * gy
    for j in range(gy):
        for i in range(1, gx - 1):
            v = np.zeros(G)
            v[j * gx + i - 1], v[j * gx + i], v[j * gx + i + 1] = 1, -2, 1
            rows.append(v)
    for i in range(gx):
        for j in range(1, gy - 1):
            v = np.zeros(G)
            v[(j - 1) * gx + i], v[j * gx + i], v[(j + 1) * gx + i] = 1, -2, 1
            rows.append(v)
    for j in range(gy - 1):
        for i in range(gx - 1):
            v = np.zeros(G)
            v[j * gx + i], v[j * gx + i + 1], v[(j + 1) * gx + i], v[(j + 1) * gx + i + 1] = 1, -1, -1, 1
            rows.append(np.sqrt(2) * v)
    L = np.asarray(rows) if rows else np.zeros((0, G))
    return L.T @ L


def smooth_field(psf: np.ndarray, solved: dict[Key, list], gx: int, gy: int, *, pool_green: bool,
                 enabled: bool) -> dict:
    """Smooth field model across the grid (in place on ``psf``); returns what was done.

    ``solved[key]``: the tile's per-plane :class:`~dpcal.psf.tiles.TileSolution` (or None),
    whose data weight weighs the node.

    1. Gr/Gb pooling: shrink both toward their mean by ``rho = 1 - noise / observed`` of their
       difference (empirical Bayes; the noise comes from the spatial smoothing residuals).
    2. Per plane, a thin-plate smoother over the grid, ``(W + mu P)^-1 W`` applied to every
       kernel coefficient (``W``: the tiles' data weights, 0 for tiles without data), with
       ``mu`` minimising generalised cross-validation.
    3. Projection of every kernel onto the simplex.
    """
    G = gx * gy
    gyx = psf.shape[:2]
    kk = psf.shape[-1]
    flat = psf.reshape(G, 4, kk * kk).copy()
    wts = np.zeros((4, G))
    for (j, i), sols in solved.items():
        for c in range(4):
            e = sols[c]
            if e is not None:
                wts[c, j * gx + i] = e.equations.wsum
    wts /= np.maximum(wts.max(axis=1, keepdims=True), 1e-30)
    P = _second_difference_penalty(gx, gy)
    report: dict = {"smoothing": {}, "green_pooling": None}

    def smoother(c, mu):
        W = np.diag(wts[c])
        return np.linalg.solve(W + mu * P + 1e-9 * np.eye(G), W)

    def gcv(c, X):
        have = wts[c] > 0
        best = (np.inf, 0.0, None)
        if not enabled or P.size == 0 or have.sum() < 4:
            return 0.0, np.eye(G), None
        for mu in np.concatenate([[0.0], np.logspace(-4, 3, 36)]):
            S = smoother(c, mu)
            fit = S @ X
            res = ((X - fit) ** 2).sum(1)[have] @ wts[c][have]
            tr = np.trace(S[np.ix_(have, have)])
            n = have.sum()
            if tr >= n - 0.5:
                continue
            score = res / (1 - tr / n) ** 2
            if score < best[0]:
                best = (score, mu, S)
        mu, S = best[1], best[2]
        have_res = ((X - S @ X) ** 2).sum(1)[have]
        dof = max(have.sum() - np.trace(S[np.ix_(have, have)]), 1.0)
        noise = float((have_res @ wts[c][have]) / dof / max(wts[c][have].mean(), 1e-30))
        return mu, S, noise

    # 1. Gr/Gb pooling, using the noise level the smoothing residuals imply.
    noise = {}
    for c in range(4):
        _, _, noise[c] = gcv(c, flat[:, c])
    if pool_green and noise.get(1) is not None and noise.get(2) is not None:
        both = (wts[1] > 0) & (wts[2] > 0)
        if both.any():
            d = flat[both, 1] - flat[both, 2]
            observed = float((d**2).sum(1).mean())
            expected = noise[1] + noise[2]
            rho = float(np.clip(1 - expected / max(observed, 1e-30), 0.0, 1.0))
            m = 0.5 * (flat[:, 1] + flat[:, 2])
            flat[:, 1] = m + rho * (flat[:, 1] - m)
            flat[:, 2] = m + rho * (flat[:, 2] - m)
            report["green_pooling"] = {"rho": rho, "observed": observed, "expected_from_noise": expected}
    # 2. Spatial smoothing per plane.
    for c, name in enumerate(PLANES):
        mu, S, _ = gcv(c, flat[:, c])
        have = wts[c] > 0
        if S is not None:
            out = S @ flat[:, c]
            # Nodes without data keep their extrapolated kernels unless the smoother reaches them.
            flat[:, c] = np.where(have[:, None] | (mu > 0), out, flat[:, c])
        report["smoothing"][name] = float(mu)
    # 3. Back onto the simplex.
    psf[...] = project_simplex(flat.reshape(gyx + (4, kk, kk)))
    return report
