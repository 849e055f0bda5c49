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


def compare_fields(est: PSFField, truth: PSFField, truth_convention: str = "sampled") -> np.ndarray:
    """Relative L2 error ``[gy, gx, planes]`` of ``est`` against ``truth`` at ``est``'s nodes.

    Parameters
    ----------
    est : PSFField
        A field in dpcal's convention (the optical PSF sampled at pixel centres, acting on
        pixel-integrated images), e.g. from :func:`dpcal.psf.fit_psf`.
    truth : PSFField
        Evaluated where ``est`` has its nodes (:meth:`PSFField.kernel_at`: the bilinear blend
        the simulator applies there), so fields on different grids compare fairly.
    truth_convention : {"sampled", "integrated"}
        What ``truth``'s kernels are: ``sampled`` (dpcal's convention) or ``integrated``
        (system PSFs that include the pixel aperture); for ``integrated``, ``est`` is converted
        first (:meth:`PSFField.with_pixel_aperture`). Comparing across conventions mistakes
        the pixel box for an error (6-10 % for kernels of sigma 0.8-1 px).

    Returns
    -------
    ndarray, shape (gy, gx, planes)

    Examples
    --------
    >>> from dpcal.physics.optics import gaussian_kernel
    >>> node = np.zeros((1, 1, 2))
    >>> est = PSFField(gaussian_kernel(21, 1.0)[None, None, None], node, planes=("Y",))
    >>> truth = est.with_pixel_aperture()
    >>> [round(float(compare_fields(est, truth, c)[0, 0, 0]), 3) for c in ("sampled", "integrated")]
    [0.059, 0.0]
    """
    if truth_convention not in ("sampled", "integrated"):
        raise ValueError(f"truth_convention must be 'sampled' or 'integrated', got {truth_convention!r}")
    if truth_convention == "integrated":
        est = est.with_pixel_aperture()
    gy, gx = est.psf.shape[:2]
    out = np.zeros((gy, gx, len(est.planes)))
    for j in range(gy):
        for i in range(gx):
            x, y = est.node_xy[j, i]
            for c, p in enumerate(est.planes):
                out[j, i, c] = relative_l2(est.psf[j, i, c], truth.kernel_at(x, y, p))
    return out
