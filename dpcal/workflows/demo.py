"""The built-in end-to-end demo (``dpcal demo``): runs on data it makes itself, no downloads.

Each step appends its results to the summary; later pipeline stages add steps here.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from dpcal.chart import chart_raster, make_chart
from dpcal.chart.geometry import pose_mapping
from dpcal.chart.render import render_capture, write_capture
from dpcal.errors import BadInputError
from dpcal.io.atomic import write_json_atomic
from dpcal.io.dng import write_dng
from dpcal.io.raw import read_raw
from dpcal.physics.optics import PSFField, gaussian_kernel
from dpcal.profile import load_profile
from dpcal.psf.estimate import relative_l2
from dpcal.psf.fit import fit_psf
from dpcal.testing.captures import gray_chart, synthetic_capture
from dpcal.workflows.fit_noise import run_fit_noise
from dpcal.workflows.simulate import simulate_dataset

log = logging.getLogger("dpcal")

DEMO_LUX = (3.0, 6.0, 20.0, 200.0)


def run_demo(out_dir: str | Path, profile: str = "nexus6p-rear", *, seed: int = 0, overwrite: bool = False,
             progress: bool = True) -> dict:
    """Run the demo into ``out_dir`` and return its summary (also written as ``summary.json``).

    ``progress`` shows the fit-noise progress bar on stderr (when it is a terminal).
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise BadInputError(f"{out} is not empty; pass `overwrite=True` or choose another `out`")
    out.mkdir(parents=True, exist_ok=True)
    prof = load_profile(profile)
    summary: dict = {"profile": prof.id, "out": str(out)}

    # 1. A synthetic RAW capture of a gray chart at ISO 1600, with the profile's noise.
    iso = 1600.0
    noise = prof.noise(iso=iso)
    levels = np.linspace(0.02, 1.0, 24)
    clean, _ = gray_chart(480, 640, levels)
    dn = synthetic_capture(
        clean, prof.pattern, noise.alpha, noise.sigma,
        black_level=prof.black_level, white_level=prof.white_level(iso), rng=seed,
    )
    capture = out / f"graychart_iso{iso:g}.dng"
    write_dng(capture, dn, prof.pattern, black_level=prof.black_level, white_level=prof.white_level(iso),
              iso=iso, exposure_time=1 / 30, make="dpcal", model=f"demo {prof.id}")
    log.info("wrote %s", capture)

    # 2. Read it back as any RAW file.
    summary["capture"] = read_raw(capture).info()

    # 3. The profile's noise at the paper's light levels.
    summary["noise_by_lux"] = [
        {"lux": lux, **prof.noise(lux=lux).to_dict()} for lux in DEMO_LUX
    ]

    # 4. Calibrate the noise back from the capture (dpcal fit-noise, single-image route).
    summary["fit_noise"] = _demo_fit_noise(capture, noise, out / "noise_plots", progress)

    # 5. Lens PSFs: a small PSF chart, a rendered capture through a known lens, fit-psf back.
    summary["fit_psf"] = _demo_fit_psf(out / "psf", prof, seed)
    # 6. Simulate a small low-light RAW dataset from synthetic images in class folders.
    summary["simulate"] = _demo_simulate(out, prof, seed)
    write_json_atomic(out / "summary.json", summary)
    return summary


def _demo_fit_noise(capture: Path, truth, plots: Path, progress: bool) -> list[dict]:
    """Fit the demo capture and compare with the profile's noise it was made with."""
    rep = run_fit_noise([str(capture)], plots=str(plots), overwrite=True, progress=progress)
    rows = []
    for f in rep["fits"]:
        p = f["plane"]
        rows.append({
            "plane": p, "alpha": f["alpha"], "alpha_std": f["alpha_std"], "alpha_profile": truth.alpha[p],
            "sigma": f["sigma"], "sigma_std": f["sigma_std"], "sigma_profile": truth.sigma[p],
            "alpha_rel_err": f["alpha"] / truth.alpha[p] - 1, "scene": f.get("scene"),
        })
    log.info("fit-noise on %s: alpha within %.1f%% of the profile", capture.name,
             100 * max(abs(r["alpha_rel_err"]) for r in rows))
    return rows


def _demo_fit_psf(out: Path, prof, seed: int) -> dict:
    """make-chart -> render-chart -> fit-psf on an 800 x 600 sensor (a few seconds)."""
    spec = make_chart("psf", out / "chart", size_mm=(62, 46), dpi=300, square=24, pdf=False, overwrite=True)
    k = 15
    lens = gaussian_kernel(k, 1.4, 1.0, theta=0.5)  # an astigmatic lens
    truth = PSFField(np.broadcast_to(lens, (1, 1, 4, k, k)).copy(), np.zeros((1, 1, 2)), sensor_size=(800, 600))
    m = pose_mapping(spec.size_px, (800, 600), fill=0.9, rotate_deg=1.0, tilt_deg=(4, -3), k1=-0.04)
    cap = render_capture(chart_raster(spec), m, field=truth, profile=prof, iso=200, rng=seed)
    dng = out / "psf_chart_iso200.dng"
    write_capture(dng, cap)
    res = fit_psf([read_raw(dng)], spec, kernel_size=k, grid=(2, 2))
    res.field.save(out / "field.npz")
    err = relative_l2(res.field.psf, lens)
    log.info("fit-psf on %s: registration RMS %.3f px, kernel error median %.1f %%", dng.name,
             res.summary["registration_rms_px"], 100 * float(np.median(err)))
    return {"capture": str(dng), "field": str(out / "field.npz"),
            "registration_rms_px": res.summary["registration_rms_px"],
            "kernel_rel_l2_median": float(np.median(err)), "kernel_rel_l2_max": float(err.max()),
            "mtf50_median": float(np.median([t["mtf50"] for t in res.qa]))}


def demo_images(root: Path, n_per_class: int = 3, size: tuple[int, int] = (160, 120), seed: int = 0) -> Path:
    """Write small synthetic sRGB images in two class folders (``ROOT/<class>/*.png``)."""
    import cv2

    rng = np.random.default_rng(seed)
    h, w = size[1], size[0]
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    for cls in ("discs", "stripes"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            base = rng.uniform(0.1, 0.9, 3)[:, None, None] * (0.6 + 0.4 * xx[None])
            if cls == "discs":
                cy, cx, r = rng.uniform(0.2, 0.6), rng.uniform(0.2, 1.0), rng.uniform(0.1, 0.3)
                mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
            else:
                f = rng.uniform(8, 20)
                mask = np.sin(2 * np.pi * f * (xx + rng.uniform() * yy)) > 0
            img = np.where(mask[None], rng.uniform(0.0, 1.0, 3)[:, None, None], base)
            cv2.imwrite(str(root / cls / f"{cls}_{i}.png"),
                        (np.clip(img.transpose(1, 2, 0)[..., ::-1], 0, 1) * 255 + 0.5).astype(np.uint8))
    return root


def _demo_simulate(out: Path, prof, seed: int) -> dict:
    import shutil


    src = out / "sim_src"
    shutil.rmtree(src, ignore_errors=True)
    demo_images(src, seed=seed)
    res = simulate_dataset(src, out / "sim_raw", prof.id, lux=(3.0, 200.0), size=64, seed=seed, workers=0,
                           overwrite=True, preview=out / "sim_preview.png", progress=False)
    return {
        "src": str(src),
        "dst": res["run"]["dst"],
        "images": res["counts"]["images"],
        "ok": res["counts"]["ok"],
        "pattern": res["settings"]["simulator"]["pattern"],
        "lux": res["settings"]["simulator"]["lux"],
        "preview": res["preview"],
        "images_per_s": res["run"]["images_per_s"],
    }
