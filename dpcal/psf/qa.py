"""Quality figures of a fitted PSF field (``docs/psf.md``, step 7): per tile and plane the
weighted residual (reduced chi^2), explained variance, gain, samples and regularisation
(:func:`tile_qa`), and of each final kernel its MTF50 and centroid (:func:`kernel_qa`);
:func:`compare_fields` measures a field against a known one.
"""

from __future__ import annotations

import numpy as np

from dpcal.cfa import PLANES
from dpcal.physics.optics import PSFField
from dpcal.psf.estimate import kernel_centroid, mtf50, relative_l2
from dpcal.psf.tiles import TileProblem


def tile_qa(tiles: dict[tuple[int, int], TileProblem], solved: dict[tuple[int, int], list]) -> list[dict]:
    """One QA row per tile and plane from its final solution (``solved[key][c]``, None: extrapolated).

    The kernels' own figures (MTF50, centroid) are added by :func:`kernel_qa` once they are final.
    """
    qa = []
    for (j, i), t in tiles.items():
        sols = solved[(j, i)]
        for c, name in enumerate(PLANES):
            row = {"row": j, "col": i, "plane": name, "support": t.size}
            entry = sols[c]
            if entry is None:
                row.update(samples=0, reduced_chi2=None, explained_variance=None, gain=None, extrapolated=True)
            else:
                sol = entry.solution
                row.update(samples=int(sol.n), reduced_chi2=float(sol.reduced_chi2),
                           explained_variance=float(1 - sol.chi2 / max(entry.total_ss, 1e-30)), gain=float(sol.gain),
                           extrapolated=False, regularization=float(entry.lam))
            qa.append(row)
    return qa


def kernel_qa(psf: np.ndarray, qa: list[dict]) -> None:
    """Add MTF50 (radial, x, y) and centroid of each kernel as written to its QA row."""
    for row in qa:
        k = psf[row["row"], row["col"], PLANES.index(row["plane"])]
        m = mtf50(k)
        row.update(mtf50=m["radial"], mtf50_x=m["x"], mtf50_y=m["y"], centroid_px=list(kernel_centroid(k)))


def compare_fields(est: PSFField, truth: PSFField) -> np.ndarray:
    """Relative L2 error ``[gy, gx, planes]`` of ``est`` against ``truth`` at ``est``'s nodes.

    ``truth`` is evaluated where ``est`` has its nodes (:meth:`PSFField.kernel_at`: the bilinear
    blend the simulator applies there), so fields on different grids compare fairly.
    """
    gy, gx = est.psf.shape[:2]
    out = np.zeros((gy, gx, len(est.planes)))
    for j in range(gy):
        for i in range(gx):
            x, y = est.node_xy[j, i]
            for c, p in enumerate(est.planes):
                out[j, i, c] = relative_l2(est.psf[j, i, c], truth.kernel_at(x, y, p))
    return out
