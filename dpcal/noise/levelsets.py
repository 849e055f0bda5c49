"""Level sets: the data every noise fit works on.

A level set is a group of samples sharing one (unknown) true level: a bin of smooth wavelet
coefficients (Foi's single-image route), a tile of a flat chart patch, or the pixels of a
frame pair at one level (photon transfer). Each set carries

* ``level``: the sample mean ``y_i`` (of the clipped data),
* ``std``: the unbiased sample standard deviation ``s_i`` of its noise,
* ``c``, ``d``: the sampling variances of ``y_i`` and ``s_i`` divided by ``sigma^2`` of the
  set, i.e. ``var(y_i) = c_i sigma_i^2`` and ``var(s_i) = d_i sigma_i^2`` (``docs/method.md`` section 2a),
* ``lo``, ``hi``: the clipping bounds of the capture it came from (normalised units),
* ``n`` samples and a ``source`` index (which capture).
"""

from __future__ import annotations

import dataclasses

import numpy as np

#: variance inflation of the sample variance of overlapping (undecimated) Haar HH coefficients:
#: sum of squared autocorrelations (1 + 2 * (1/2)^2)^2
KAPPA_HAAR = 2.25


def haar_split(plane: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Undecimated one-level Haar split: ``(A, D)``, both ``(h-1, w-1)`` float32.

    ``A`` is the 2x2 block mean (local level), ``D`` the unit-norm diagonal detail.

    Examples
    --------
    >>> A, D = haar_split(np.add.outer(np.arange(4.0), np.arange(5.0)))  # a ramp: f(y) + g(x)
    >>> float(np.abs(D).max()), A.shape
    (0.0, (3, 4))
    """
    p = np.asarray(plane, dtype=np.float32)
    a, b, c, d = p[:-1, :-1], p[:-1, 1:], p[1:, :-1], p[1:, 1:]
    A = (a + b) + (c + d)
    A *= np.float32(0.25)
    D = (a - b) - (c - d)
    D *= np.float32(0.5)
    return A, D


_FIELDS = ("level", "std", "n", "c", "d", "lo", "hi", "source")


@dataclasses.dataclass
class LevelSets:
    """Per-set statistics of one CFA plane (arrays of equal length)."""

    level: np.ndarray
    std: np.ndarray
    n: np.ndarray
    c: np.ndarray
    d: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    source: np.ndarray
    kind: str = "levelset"
    #: for the block jackknife, either per spatial block partial sums ``{"n", "s1", "s2", "sa"}``
    #: (arrays of shape (blocks, sets)) with ``"dof_loss"`` and ``"kappa"`` (sets that span the
    #: image), or ``{"block": (sets,)}`` (each set lies in one block); None if absent
    parts: dict | None = None

    def __post_init__(self):
        for f in _FIELDS:
            setattr(self, f, np.atleast_1d(np.asarray(getattr(self, f), dtype=np.int64 if f == "source" else np.float64)))
        k = {len(getattr(self, f)) for f in _FIELDS}
        if len(k) != 1:
            raise ValueError(f"level-set arrays differ in length: {k}")

    def __len__(self) -> int:
        return len(self.level)

    @classmethod
    def empty(cls, kind: str = "levelset") -> "LevelSets":
        z = np.zeros(0)
        return cls(z, z, z, z, z, z, z, np.zeros(0, np.int64), kind)

    def select(self, mask: np.ndarray) -> "LevelSets":
        parts = None
        if self.parts is not None:
            parts = {k: ((v[mask] if v.ndim == 1 else v[:, mask]) if isinstance(v, np.ndarray) else v)
                     for k, v in self.parts.items()}
        return LevelSets(*(getattr(self, f)[mask] for f in _FIELDS), kind=self.kind, parts=parts)

    @staticmethod
    def concat(parts: list["LevelSets"]) -> "LevelSets":
        parts = [p for p in parts if p is not None]
        if not parts:
            return LevelSets.empty()
        kinds = {p.kind for p in parts}
        jk = None
        if all(p.parts is not None and "block" in p.parts for p in parts):
            jk = {"block": np.concatenate([p.parts["block"] for p in parts])}
        elif all(p.parts is not None and "n" in p.parts for p in parts) and len({p.parts["n"].shape[0] for p in parts}) == 1 \
                and len({(p.parts["dof_loss"], p.parts.get("kappa")) for p in parts}) == 1:
            jk = {k: np.concatenate([p.parts[k] for p in parts], axis=1) for k in ("n", "s1", "s2", "sa")}
            jk["dof_loss"] = parts[0].parts["dof_loss"]
            jk["kappa"] = parts[0].parts.get("kappa", 1.0)
        return LevelSets(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in _FIELDS),
            kind=kinds.pop() if len(kinds) == 1 else "mixed", parts=jk,
        )

    def without_block(self, b: int, kappa: float = 1.0) -> "LevelSets":
        """The sets recomputed without spatial block ``b`` (block jackknife replicate)."""
        P = self.parts
        if "block" in P:
            return self.select(P["block"] != b)
        n = P["n"].sum(0) - P["n"][b]
        s1 = P["s1"].sum(0) - P["s1"][b]
        s2 = P["s2"].sum(0) - P["s2"][b]
        sa = P["sa"].sum(0) - P["sa"][b]
        dl = P["dof_loss"]
        kappa = P.get("kappa", kappa)
        ok = n > dl + 8
        n, s1, s2, sa = n[ok], s1[ok], s2[ok], sa[ok]
        var = np.maximum(s2 - s1 * s1 / n, 0.0) / (n - dl)
        std = unbiased_std(var, (n - dl) / kappa)
        return LevelSets(
            level=sa / n, std=std, n=n, c=1.0 / n, d=kappa / (2 * (n - dl)), lo=self.lo[ok], hi=self.hi[ok],
            source=self.source[ok], kind=self.kind,
        )


def unbiased_std(var: np.ndarray, dof: np.ndarray) -> np.ndarray:
    """Unbiased standard deviation from an unbiased variance with ``dof`` degrees of freedom.

    ``E[sqrt(chi2_nu / nu)] = 1 - 1/(4 nu) + O(nu^-2)``; dividing by it removes the bias of the
    square root (0.5 % at 50 degrees of freedom, which matters for a 1 % target).

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> x = rng.normal(0, 2.0, (200_000, 20))
    >>> s = unbiased_std(x.var(axis=1, ddof=1), np.full(len(x), 19))
    >>> bool(abs(s.mean() - 2.0) < 0.005)
    True
    """
    var = np.maximum(np.asarray(var, dtype=np.float64), 0.0)
    dof = np.maximum(np.asarray(dof, dtype=np.float64), 1.0)
    return np.sqrt(var) / (1.0 - 1.0 / (4.0 * dof) + 1.0 / (32.0 * dof * dof))


def clipped_group_sums(key: np.ndarray, d: np.ndarray, a: np.ndarray, size: int, ngroups: int | None = None,
                       k_std: float = 7.0):
    """Per-key count and sums of ``d``, ``d^2`` and ``a`` after dropping outliers of ``d``.

    Keys map to groups by ``key % ngroups`` (default: each key is its group); a value of ``d``
    farther than ``k_std`` std from its group's mean is dropped (hot and dead pixels, stray
    edges) and the sums recomputed once. Returns ``(n, s1, s2, sa)`` per key (float64).

    Examples
    --------
    >>> d = np.r_[np.random.default_rng(0).normal(0, 1, 999), 50.0].astype(np.float32)
    >>> n, s1, s2, sa = clipped_group_sums(np.zeros(1000, int), d, d, 1)
    >>> int(n[0])
    999
    """
    ng = ngroups or size
    for it in range(2):
        n = np.bincount(key, minlength=size).astype(np.float64)
        s1 = np.bincount(key, weights=d, minlength=size)  # float64 accumulation
        s2 = np.bincount(key, weights=d * d, minlength=size)
        if it == 1:
            break
        gn, g1, g2 = (x.reshape(-1, ng).sum(0) for x in (n, s1, s2))
        with np.errstate(invalid="ignore", divide="ignore"):
            mu = g1 / gn
            var = (g2 - g1 * mu) / (gn - 1)
        thr = np.minimum(k_std * np.sqrt(np.nan_to_num(np.maximum(var, 0.0), nan=np.inf)), 3e38).astype(np.float32)
        grp = key % ng if ng != size else key
        keep = np.abs(d - np.nan_to_num(mu).astype(np.float32)[grp]) <= thr[grp]
        if keep.all():
            break
        key, d, a = key[keep], d[keep], a[keep]
    return n, s1, s2, np.bincount(key, weights=a, minlength=size)


#: spatial blocks of the jackknife (columns x rows along the long and short side)
JACKKNIFE_GRID = (4, 2)


def block_index(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Jackknife block of each (row, col) position: a 4 x 2 grid along the long side."""
    h, w = shape
    gx, gy = JACKKNIFE_GRID if w >= h else JACKKNIFE_GRID[::-1]
    by = np.minimum(rows * gy // max(h, 1), gy - 1)
    bx = np.minimum(cols * gx // max(w, 1), gx - 1)
    return (by * gx + bx).astype(np.int64)


def n_blocks() -> int:
    return JACKKNIFE_GRID[0] * JACKKNIFE_GRID[1]


def has_block(sets: "LevelSets", b: int) -> bool:
    """Whether spatial block ``b`` contributes to any set (jackknife replicates skip empty blocks)."""
    P = sets.parts
    return bool(np.any(P["block"] == b)) if "block" in P else bool(P["n"][b].any())
