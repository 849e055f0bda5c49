"""Flat regions of a capture (gray-chart patches) found from the image itself, as level sets.

No chart description is needed: on a block-averaged copy of the four CFA planes, a block is
flat when its centred differences in x and y stay within ``tau`` times their noise std (from
the preliminary noise curve) in every plane. Flat blocks, eroded away from edges, form
connected regions; a capture is a *chart* when several compact (patch-like) regions of
similar size cover a good part of the frame, and then only those patches give level sets
(background regions such as a light booth's walls are textured and shaded, and would
outnumber the patches). Each region is cut into tiles, one level set each (see
:class:`RegionSets` for the choice between a plane-fit residual and the Haar detail).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dpcal.noise.levelsets import KAPPA_HAAR, LevelSets, block_index, clipped_group_sums, unbiased_std

#: target long side (in blocks) of the block-averaged image used for segmentation
TARGET_BLOCKS = 256
#: minimum number of compact regions for a capture to count as a chart
MIN_PATCHES = 6
#: ... and the share of the frame they must cover
MIN_PATCH_COVERAGE = 0.05
#: non-flat specks of at most this many blocks inside flat areas are texture, not edges
SPECK_BLOCKS = 8
#: a flat region larger than this many times the median patch is background, not a patch
PATCH_AREA_SPREAD = 3.0


@dataclasses.dataclass
class FlatRegions:
    """Segmentation of a capture into flat regions (block grid)."""

    labels: np.ndarray  # (hb, wb) int, 0 = not flat, k = region k
    factor: int  # block size in plane pixels
    n_regions: int
    n_patches: int  # compact, patch-like regions
    coverage: float  # share of the frame in flat regions
    patch_coverage: float
    levels: np.ndarray  # (n_regions, 4) mean level per plane
    is_chart: bool
    background: int = 0  # flat regions of a chart capture left out (not patches: walls, frame)

    def summary(self) -> dict:
        return {
            "regions": self.n_regions,
            "patches": self.n_patches,
            "coverage": round(self.coverage, 4),
            "patch_coverage": round(self.patch_coverage, 4),
            "block": self.factor,
            "is_chart": self.is_chart,
            "background_regions_ignored": self.background,
        }


def block_mean(p: np.ndarray, f: int) -> np.ndarray:
    """Mean over non-overlapping ``f x f`` blocks (trailing rows/columns dropped)."""
    h, w = p.shape[-2] // f * f, p.shape[-1] // f * f
    q = p[..., :h, :w].reshape(p.shape[:-2] + (h // f, f, w // f, f))
    return q.mean(axis=(-3, -1), dtype=np.float64).astype(np.float32)


def detect_flat_regions(
    P: np.ndarray,
    curves: dict,
    lo4: np.ndarray,
    hi4: np.ndarray,
    *,
    valid: np.ndarray | None = None,
    tau: float = 5.0,
    min_pixels: int = 256,
) -> FlatRegions:
    """Find flat regions of a capture (planes ``P`` of shape ``(4, h, w)``).

    Parameters
    ----------
    P : ndarray (4, h, w)
        Normalised planes.
    curves : dict plane index -> (levels, stds)
        Preliminary noise curves (planes not in it are ignored).
    lo4, hi4 : 4 floats
        Clipping bounds.
    tau : float
        Flatness threshold in noise std of the block differences.
    min_pixels : int
        Smallest region kept (plane pixels).

    Returns
    -------
    FlatRegions
    """
    from scipy import ndimage

    h, w = P.shape[-2:]
    f = max(1, int(np.ceil(max(h, w) / TARGET_BLOCKS)))
    idx = sorted(curves)
    B = block_mean(P[idx], f)
    hb, wb = B.shape[-2:]
    flat = np.ones((hb, wb), dtype=bool)
    flat[0, :] = flat[-1, :] = False
    flat[:, 0] = flat[:, -1] = False
    for j, i in enumerate(idx):
        b = B[j]
        lv, sd = curves[i]
        noise = np.interp(b, lv, sd).astype(np.float32) * np.float32(np.sqrt(2.0) / f)
        noise = np.maximum(noise, np.float32(1e-7 * (hi4[i] - lo4[i])))
        gx = np.zeros_like(b)
        gy = np.zeros_like(b)
        gx[:, 1:-1] = np.abs(b[:, 2:] - b[:, :-2])
        gy[1:-1, :] = np.abs(b[2:, :] - b[:-2, :])
        flat &= (gx <= tau * noise) & (gy <= tau * noise)
    if valid is not None:
        # A block with many defect pixels is not used for segmentation decisions.
        bad = block_mean((~valid[idx]).astype(np.float32), f).max(axis=0)
        flat &= bad < 0.25
    # Texture and PRNU fail the test in isolated blocks inside a patch (a single block's outlier
    # spoils the centred differences of its 4 neighbours): such specks are not edges, whose
    # non-flat blocks form long lines. Filling them keeps textured patches whole.
    nf_lab, n_nf = ndimage.label(~flat, structure=np.ones((3, 3), bool))
    if n_nf:
        speck = np.bincount(nf_lab.ravel(), minlength=n_nf + 1) <= SPECK_BLOCKS
        speck[0] = False
        flat |= speck[nf_lab]
    margin = max(1, int(np.ceil(4 / f)))
    flat = ndimage.binary_erosion(flat, iterations=margin)
    labels, n = ndimage.label(flat)
    if n == 0:
        return FlatRegions(labels, f, 0, 0, 0.0, 0.0, np.zeros((0, 4)), False)
    area = np.bincount(labels.ravel(), minlength=n + 1)[1:].astype(np.float64)
    keep = area * f * f >= min_pixels
    objs = ndimage.find_objects(labels)
    bbox = np.array([(o[0].stop - o[0].start) * (o[1].stop - o[1].start) for o in objs], dtype=np.float64)
    aspect = np.array(
        [max(o[0].stop - o[0].start, o[1].stop - o[1].start) / max(1, min(o[0].stop - o[0].start, o[1].stop - o[1].start)) for o in objs]
    )
    fill = area / np.maximum(bbox, 1)
    patch = keep & (fill >= 0.6) & (aspect <= 6)  # 0.6: patches seen at an angle
    if patch.any():
        # A chart's patches share one size; a flat region several times larger is background
        # (a wall, the chart's frame), whose texture and shading must not outweigh the patches.
        patch &= area <= PATCH_AREA_SPREAD * np.median(area[patch])
    total = hb * wb
    n_patch = int(patch.sum())
    patch_cov = float(area[patch].sum() / total)
    is_chart = n_patch >= MIN_PATCHES and patch_cov >= MIN_PATCH_COVERAGE
    background = int((keep & ~patch).sum()) if is_chart else 0
    if is_chart:
        keep = patch  # level sets of a chart come from its patches only
    # Renumber the kept regions 1..k.
    remap = np.zeros(n + 1, dtype=np.int32)
    remap[1:][keep] = np.arange(1, int(keep.sum()) + 1)
    labels = remap[labels]
    k = int(keep.sum())
    levels = np.zeros((k, 4))
    flat_lab = labels.ravel()
    cnt = np.bincount(flat_lab, minlength=k + 1)[1:]
    for j, i in enumerate(idx):
        levels[:, i] = np.bincount(flat_lab, weights=B[j].ravel(), minlength=k + 1)[1:] / np.maximum(cnt, 1)
    coverage = float(area[keep].sum() / total)
    return FlatRegions(labels, f, k, n_patch, coverage, patch_cov, levels, is_chart, background)


class RegionSets:
    """The (region, tile) level sets of a capture, shared by its four planes.

    Each set gets two noise estimates: the residual std about a least-squares plane fitted to
    its pixels (``n - 3`` degrees of freedom, fully efficient; removes illumination gradients),
    and the std of the unit-norm diagonal Haar detail of its coefficients (a third of the
    efficiency, but blind to anything of the form ``f(x) + g(y)`` and to smooth structure). The
    plane-fit estimate is used unless it exceeds the Haar one by more than 3 standard errors of
    their difference, pooled over a region (a patch) or over the whole plane: then the patch
    (or the chart) holds structure (print texture, a stray edge, a gradient that is not planar)
    and the Haar estimate is used there. Both are unbiased for pure noise, which switches with
    probability about 1e-3, so the choice does not bias it.

    Everything that does not depend on pixel values (the set of every pixel and coefficient,
    plane-fit geometry, jackknife blocks) is computed once here.
    """

    SWITCH_Z = 3.0

    def __init__(self, regions: FlatRegions, shape: tuple[int, int], tile: int | None = None):
        f = regions.factor
        hb, wb = regions.labels.shape
        self.h, self.w = h, w = hb * f, wb * f
        lab = np.repeat(np.repeat(regions.labels, f, axis=0), f, axis=1)
        self.mask = lab > 0
        npx = int(self.mask.sum())
        if tile is None:
            tile = int(np.clip(np.sqrt(max(npx, 1) / 600.0), 16, 128)) // 2 * 2
        self.tile = tile
        ntx = (w + tile - 1) // tile
        nty = (h + tile - 1) // tile
        ys, xs = np.nonzero(self.mask)
        key = (lab[ys, xs].astype(np.int64) * nty + ys // tile) * ntx + xs // tile
        # Dense relabelling of the keys through bincount (linear time, no sort).
        present = np.bincount(key) > 0 if npx else np.zeros(0, bool)
        remap = np.cumsum(present) - 1
        self.ids = remap[key]
        self.k = k = int(present.sum())
        # Jackknife block of each set: the block of its first pixel (tiles are small).
        blk = np.zeros(k, dtype=np.int64)
        blk[self.ids[::-1]] = block_index(ys[::-1], xs[::-1], (h, w))
        self.set_block = blk
        reg = np.zeros(k, dtype=np.int64)
        reg[self.ids] = lab[ys, xs]
        self.set_region = reg
        self.x = ((xs % tile) - (tile - 1) / 2.0) * (2.0 / tile)
        self.y = ((ys % tile) - (tile - 1) / 2.0) * (2.0 / tile)
        x, y, ids = self.x, self.y, self.ids
        self.geo = np.stack([np.bincount(ids, weights=v, minlength=k) for v in (np.ones_like(x), x, y, x * x, x * y, y * y)])
        # Coefficients whose 2x2 block lies inside one region, with the set of that block.
        lc = lab[:-1, :-1]
        inside = (lc > 0) & (lc == lab[1:, 1:]) & (lc == lab[:-1, 1:]) & (lc == lab[1:, :-1])
        cy, cx = np.nonzero(inside)
        ckey = (lc[cy, cx].astype(np.int64) * nty + cy // tile) * ntx + cx // tile
        ok = ckey < len(remap)
        ok[ok] &= present[ckey[ok]]
        self.cids = remap[ckey[ok]]
        self.cpos = cy[ok].astype(np.int64) * (shape[1] - 1) + cx[ok]  # flat index in the coefficient grid

    def levelsets(self, plane: np.ndarray, A: np.ndarray, D: np.ndarray, lo: float, hi: float, *,
                  valid: np.ndarray | None = None, min_n: int = 64, source: int = 0) -> LevelSets:
        """Level sets of one plane (its pixels and its Haar split ``A, D``)."""
        k = self.k
        if k == 0:
            return LevelSets.empty("chart")
        n_p, mean_p, var_p = self._plane_fit(plane, valid)
        n_h, mean_h, var_h = self._haar(A, D, valid)
        dof_p = n_p - 3
        dof_h = (n_h - 1) / KAPPA_HAAR
        use_h = self._structured(var_p, dof_p, var_h, dof_h, (n_p >= min_n) & (n_h >= min_n)) & (n_h >= min_n)
        n = np.where(use_h, n_h, n_p)
        level = np.where(use_h, mean_h, mean_p)
        var = np.where(use_h, var_h, var_p)
        dof = np.where(use_h, dof_h, dof_p)
        kappa = np.where(use_h, KAPPA_HAAR, 1.0)
        good = (n >= min_n) & np.isfinite(var) & (dof > 8)
        n, level, var, dof, kappa = n[good], level[good], var[good], dof[good], kappa[good]
        kk = len(n)
        return LevelSets(
            level=level, std=unbiased_std(np.maximum(var, 0.0), dof), n=n, c=1.0 / n, d=1.0 / (2 * dof),
            lo=np.full(kk, lo), hi=np.full(kk, hi), source=np.full(kk, source), kind="chart",
            parts={"block": self.set_block[good]},
        )

    def _structured(self, var_p, dof_p, var_h, dof_h, ok) -> np.ndarray:
        """Sets whose plane-fit variance exceeds the Haar one significantly, judged per region
        and over the whole plane (relative differences pooled with inverse-variance weights)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            r = var_p / var_h - 1.0
            vr = 2.0 / dof_p + 2.0 / dof_h  # variance of r for pure noise (covariance ignored: conservative)
        ok = ok & np.isfinite(r) & np.isfinite(vr) & (vr > 0)
        w = np.where(ok, 1.0 / np.where(ok, vr, 1.0), 0.0)
        rw = np.where(ok, r, 0.0) * w

        def z(num, den):
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(den > 0, num / np.sqrt(den), 0.0)

        if z(rw.sum(), w.sum()) > self.SWITCH_Z:
            return np.ones(len(r), dtype=bool)
        nreg = int(self.set_region.max()) + 1
        zr = z(np.bincount(self.set_region, weights=rw, minlength=nreg), np.bincount(self.set_region, weights=w, minlength=nreg))
        return zr[self.set_region] > self.SWITCH_Z

    def _plane_fit(self, plane, valid):
        """Per set: pixel count, mean and residual variance about a least-squares plane."""
        k, ids, x, y = self.k, self.ids, self.x, self.y
        z = plane[: self.h, : self.w][self.mask].astype(np.float64)
        n0 = self.geo[0]
        mz = np.bincount(ids, weights=z, minlength=k) / np.maximum(n0, 1)
        zc = z - mz[ids]  # centred per set: the sums below lose no precision
        sums = np.concatenate([self.geo, np.stack([np.bincount(ids, weights=v, minlength=k) for v in (zc, x * zc, y * zc, zc * zc)])])
        dropped = np.zeros(len(z), dtype=bool)
        if valid is not None:
            dropped |= ~valid[: self.h, : self.w][self.mask]
            sums = sums - self._sums(dropped, zc)
        for _ in range(3):
            beta, var = _plane_fit(sums)
            # Hot/dead pixels and stray edges: drop residuals beyond 7 std of their set.
            r = zc - (beta[ids, 0] + beta[ids, 1] * x + beta[ids, 2] * y)
            thr = 7.0 * np.sqrt(np.nan_to_num(var, nan=np.inf))
            new = (np.abs(r) > thr[ids]) & ~dropped
            if not new.any():
                break
            sums = sums - self._sums(new, zc)
            dropped |= new
        beta, var = _plane_fit(sums)
        n = sums[0]
        return n, mz + sums[6] / np.maximum(n, 1), var

    def _sums(self, sel: np.ndarray, zc: np.ndarray) -> np.ndarray:
        """The 10 per-set sums of the plane fit restricted to the pixels ``sel`` (to subtract them)."""
        ii, xx, yy, zz = self.ids[sel], self.x[sel], self.y[sel], zc[sel]
        vals = (np.ones_like(xx), xx, yy, xx * xx, xx * yy, yy * yy, zz, xx * zz, yy * zz, zz * zz)
        return np.stack([np.bincount(ii, weights=v, minlength=self.k) for v in vals])

    def _haar(self, A, D, valid):
        """Per set: coefficient count, mean of ``A`` and variance of ``D`` (7-std clipped)."""
        k, ids, pos = self.k, self.cids, self.cpos
        if valid is not None:
            vc = (valid[:-1, :-1] & valid[:-1, 1:] & valid[1:, :-1] & valid[1:, 1:]).ravel()[pos]
            ids, pos = ids[vc], pos[vc]
        n, s1, s2, sa = clipped_group_sums(ids, D.ravel()[pos], A.ravel()[pos], k)
        with np.errstate(invalid="ignore", divide="ignore"):
            return n, sa / n, (s2 - s1 * s1 / n) / (n - 1)


def _plane_fit(sums: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-set least-squares plane from the sums; returns (beta (k, 3), residual variance)."""
    n, sx, sy, sxx, sxy, syy, sz, sxz, syz, szz = sums
    M = np.stack([np.stack([n, sx, sy], -1), np.stack([sx, sxx, sxy], -1), np.stack([sy, sxy, syy], -1)], -2)
    rhs = np.stack([sz, sxz, syz], -1)
    M = M + np.eye(3) * 1e-9 * np.maximum(n, 1)[:, None, None]
    beta = np.linalg.solve(M, rhs[..., None])[..., 0]
    rss = szz - np.sum(beta * rhs, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = np.where(n > 3, np.maximum(rss, 0.0) / (n - 3), np.nan)
    return beta, var
