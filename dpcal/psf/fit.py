"""``fit_psf``: a spatially varying PSF field from RAW captures of a dpcal PSF chart.

Per capture (a printed chart: one photo each; a display: the frame sequence with the camera
still), on the linear RAW mosaic:

1. **Registration** (:func:`dpcal.chart.locate.locate_chart`): the chart's X-corners, refined to
   a few hundredths of a pixel, fit a homography plus radial lens distortion; its RMS is the
   registration RMS. Estimating against a model of known low order keeps lens distortion and the
   PSF's own shifts apart (a free local warp would absorb the PSFs' off-axis displacements);
   after the kernel fit, the part of the kernels' mean centroid field this model can express is
   moved into it (:func:`dpcal.psf.fieldmodel.recentre`), since the chart cannot tell the two apart.
2. **Photometry** per CFA plane: black and white levels as smooth fields over the sensor
   (print: fitted to the chart's flat black and white areas with a vignetting model; display:
   the black and white frames), the normalised data ``b = (y - black) / (white - black)``, and
   the noise model ``var(y) = alpha y + sigma^2`` measured on the same flat areas (or taken from
   a profile), which gives the inverse-variance weights. Saturation is refused.
3. **Sharp chart** ``u``: the chart averaged over each sensor pixel's footprint, at full-sensor
   sampling (:func:`dpcal.chart.render.rasterize`), so the CFA sub-sampling stays in the
   forward model, and band-limited to the sensor's Nyquist frequency
   (:func:`dpcal.chart.render.band_limit`).
4. **Pilot** per tile on the half-resolution luminance: a coarse kernel that sets the support
   size (from the data: the radius holding 99 % of the kernel's mass above its noise floor),
   the predicted signal for the noise weights, and the check that the capture matches the chart.
5. **Kernels** per tile and plane (:mod:`dpcal.psf.estimate`): non-negative, sum one,
   smoothness-regularised, noise-weighted least squares with exact normal equations; the
   regularisation weight is a fixed multiple of the one maximising the marginal likelihood
   (evidence) of the tile's data (``EVIDENCE_FACTOR``).
6. **Field model**: tile estimates are mixtures of the grid's node kernels under a local
   field model (:func:`dpcal.psf.tiles.local_field_weights`: quadratic through each inner node and its
   neighbours, linear at the border; it reproduces smooth variation, where bilinear hats would
   over-correct); unmixing them gives the node kernels as samples of the
   field, then a thin-plate smoother across the grid (weight by generalised cross-validation),
   extrapolation to tiles the chart does not cover, and projection onto the simplex. The output
   field is applied bilinearly between these samples (``docs/conventions.md``).
7. **QA** per tile and plane: weighted residual (reduced chi^2), explained variance, MTF50,
   centroid, support, samples used.

One module per stage, with typed state between them: :mod:`dpcal.psf.prepare` (steps 1-3, a
:class:`~dpcal.psf.prepare.PreparedCapture` per capture, photometry in :mod:`dpcal.psf.photometry`),
:mod:`dpcal.psf.tiles` (steps 4-5, a :class:`~dpcal.psf.tiles.TileProblem` per tile),
:mod:`dpcal.psf.fieldmodel` (step 6) and :mod:`dpcal.psf.qa` (step 7); :func:`fit_psf` below
reads as the outline.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Sequence

import numpy as np

from dpcal.cfa import PLANES
from dpcal.chart.spec import ChartSpec
from dpcal.errors import BadInputError
from dpcal.io.raw import RawImage, read_raw
from dpcal.physics.optics import PSFField
from dpcal.profile import load_profile
from dpcal.psf.fieldmodel import joint_field, node_kernels, recentre, shift_kernels, smooth_field
from dpcal.psf.prepare import coverage_box, prepare_captures
from dpcal.psf.qa import kernel_qa, tile_qa
from dpcal.psf.tiles import check_match, estimate_tile_kernels, node_grid, pilot_kernels, tile_bounds

__all__ = ["FitPSFResult", "fit_psf"]

log = logging.getLogger("dpcal")


@dataclasses.dataclass
class FitPSFResult:
    """What :func:`fit_psf` returns: the field, per-tile QA and the registration."""

    field: PSFField
    qa: list[dict]
    registration: list[dict]
    noise: dict
    summary: dict

    def to_dict(self) -> dict:
        return {**self.summary, "registration": self.registration, "noise": self.noise, "tiles": self.qa}


def fit_psf(
    captures: Sequence,
    chart: ChartSpec,
    *,
    kernel_size: int = 31,
    grid: tuple[int, int] = (8, 6),
    nodes: str = "coverage",
    profile=None,
    distortion: tuple[str, ...] = ("k1", "k2"),
    regularization: float | None = None,
    prior: str = "laplacian",
    field_iterations: int = 3,
    smooth: bool = True,
    pool_green: bool = True,
    pilot_rows: int = 6000,
    max_rows: int | None = None,
    supersample: int | None = None,
    band_limited: bool = True,
    progress: bool = False,
) -> FitPSFResult:
    """Estimate a PSF field (one kernel per grid node and CFA plane) from chart captures.

    Parameters
    ----------
    captures : sequence of RawImage or paths
        Print charts: one or more photos of the chart (each registered separately). Display
        charts: the frame sequence in the spec's order (geometry, black, white, noise...).
    chart : ChartSpec
        The chart's spec (:func:`dpcal.chart.load_chart`); must be a PSF chart.
    kernel_size : int
        Output kernel size (odd); the estimated support is chosen per tile from the data and
        is at most this.
    grid : (gx, gy)
        Number of nodes along x and y; nodes sit at the centres of an even partition of
        ``nodes``.
    nodes : {"coverage", "sensor"}
        Partition the bounding box of the sensor area that sees the chart (default: every node
        has data around it; the field extends constantly beyond the outer nodes), or the whole
        sensor (nodes the chart does not reach are extrapolated).
    profile : Profile or str, optional
        Take the noise model for the weights from this profile at each capture's ISO instead
        of measuring it on the chart's flat areas.
    distortion : tuple of str
        Lens distortion terms of the registration model.
    regularization : float, optional
        Fixed regulariser weight (relative to the data); default: per tile,
        ``EVIDENCE_FACTOR`` times the maximum-evidence weight.
    prior : {"laplacian", "gradient"}
        Tikhonov smoothness prior on each kernel (second or first derivatives).
    field_iterations : int
        Sweeps of the field-model solve that makes tile kernels consistent with the bilinear
        field (0: independent tiles).
    smooth : bool
        Smooth the node kernels across the grid (thin-plate penalty, weight by generalised
        cross-validation; GCV keeps it off where the field is not smooth).
    pool_green : bool
        Shrink the Gr and Gb kernels toward their mean by the empirical-Bayes factor (no
        pooling when they differ by more than their noise).
    pilot_rows : int
        Rows per tile for the half-resolution pilot.
    max_rows : int, optional
        Cap on rows per tile and plane (default: all).
    supersample : int, optional
        Pixel footprint subdivision for rendering the sharp chart (default: from the pose).
    band_limited : bool
        Fit the kernels against the sharp chart band-limited to the sensor's Nyquist frequency
        (default), not its plain pixel averages, whose aliases widen sharp kernels
        (``docs/psf.md``, "Kernel convention").
    progress : bool
        Show a progress bar on stderr.

    Returns
    -------
    FitPSFResult

    Raises
    ------
    BadInputError
        Wrong kind of chart, no chart in view, chart out of frame, saturated capture,
        inconsistent captures, or a chart that does not match the capture.
    FitError
        Kernels that do not fit (defocus beyond ``kernel_size``), or too little data.
    """
    if chart.kind != "psf":
        raise BadInputError(f"{chart.path or 'the chart'} is a {chart.kind} chart; fit-psf needs a PSF chart "
                            "(`dpcal make-chart psf`)")
    K = int(kernel_size)
    if K < 3 or K % 2 == 0:
        raise BadInputError(f"`kernel_size` must be odd and at least 3, got {K}", param="kernel_size")
    gx, gy = int(grid[0]), int(grid[1])
    if gx < 1 or gy < 1:
        raise BadInputError(f"`grid` must be at least 1 1, got {gx} {gy}", param="grid")
    raws = [c if isinstance(c, RawImage) else read_raw(c) for c in captures]
    if not raws:
        raise BadInputError("give at least one capture")
    h, w = raws[0].dn.shape
    pattern = raws[0].pattern
    for r in raws[1:]:
        if r.dn.shape != (h, w) or r.pattern != pattern:
            raise BadInputError(f"{r.path}: captures differ in size or CFA pattern ({r.dn.shape[1]}x{r.dn.shape[0]} "
                                f"{r.pattern} vs {w}x{h} {pattern})")
    R = K // 2
    prof = None
    if profile is not None:
        prof = load_profile(profile)

    # --- registration, photometry, sharp chart ------------------------------------------
    prepared = prepare_captures(raws, chart, pattern, R, distortion, supersample, prof, band_limited)
    noise_report = {p.name: p.noise for p in prepared}

    # --- tiles -----------------------------------------------------------------------------
    if nodes == "sensor":
        box = (0, 0, w, h)
    elif nodes == "coverage":
        box = coverage_box(prepared)
    else:
        raise BadInputError(f"nodes must be 'coverage' or 'sensor', got {nodes!r}")
    bw, bh = box[2] - box[0], box[3] - box[1]
    xs_nodes, ys_nodes = node_grid(bw, bh, gx, gy, box[:2])
    ex, ey = tile_bounds(bw, bh, gx, gy, box[:2])
    order = {"laplacian": 2, "gradient": 1}.get(prior)
    if order is None:
        raise BadInputError(f"prior must be 'laplacian' or 'gradient', got {prior!r}")
    pilot = pilot_kernels(prepared, ex, ey, K, pilot_rows, order)
    check_match(pilot, chart)
    tiles = estimate_tile_kernels(prepared, pilot, ex, ey, xs_nodes, ys_nodes, K, pattern, regularization, max_rows,
                                  progress, order)

    # --- field model ----------------------------------------------------------------------
    kernels, joint = joint_field(tiles, gx, gy, xs_nodes, ys_nodes, K, iterations=field_iterations, progress=progress)
    solved = {key: joint.get(key) or t.solutions for key, t in tiles.items()}
    delta = recentre(tiles, prepared, xs_nodes, ys_nodes, chart, distortion)
    psf = node_kernels(kernels, gx, gy, K)
    qa = tile_qa(tiles, solved)
    smoothing = smooth_field(psf, solved, gx, gy, pool_green=pool_green, enabled=smooth)
    shift_kernels(psf, delta)
    kernel_qa(psf, qa)
    node_xy = np.stack(np.meshgrid(xs_nodes, ys_nodes), -1)
    reg = [dict(capture=p.name, **p.loc.summary()) for p in prepared]
    rms = float(np.sqrt(np.mean([r["registration_rms_px"] ** 2 for r in reg])))
    summary = {
        "registration_rms_px": rms,
        "registration_model_rms_px": float(np.sqrt(np.mean([r["registration_model_rms_px"] ** 2 for r in reg]))),
        "kernel_size": K,
        "grid": [gx, gy],
        "planes": list(PLANES),
        "sensor_size": [w, h],
        "pattern": pattern,
        "captures": [p.name for p in prepared],
        "median_reduced_chi2": float(np.median([t["reduced_chi2"] for t in qa if t["reduced_chi2"] is not None]))
        if any(t["reduced_chi2"] is not None for t in qa) else None,
        "tiles_extrapolated": int(sum(1 for t in qa if t["extrapolated"])),
        "node_region": list(box),
        "field_model": smoothing,
        "prior": prior,
        "recentred_px": float(np.abs(delta).max()),
    }
    meta = {"method": "dpcal fit-psf", "chart": str(chart.path) if chart.path else None,
            "registration_rms_px": rms, "captures": summary["captures"], "pattern": pattern}
    field = PSFField(psf.astype(np.float32), node_xy, PLANES, (w, h), meta)
    return FitPSFResult(field, qa, reg, noise_report, summary)
