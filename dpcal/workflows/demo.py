"""The built-in end-to-end demo (``dpcal demo``): runs on data it makes itself, no downloads.

Each step appends its results to the summary; later pipeline stages add steps here.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import numpy as np

from dpcal.chart import chart_raster, make_chart
from dpcal.chart.geometry import pose_mapping
from dpcal.chart.render import render_capture, write_capture
from dpcal.errors import BadInputError
from dpcal.io.atomic import write_bytes_atomic, write_json_atomic
from dpcal.io.dng import write_dng
from dpcal.io.raw import read_raw
from dpcal.physics.optics import PSFField, gaussian_kernel
from dpcal.profile import load_profile
from dpcal.psf.estimate import relative_l2
from dpcal.psf.fit import fit_psf
from dpcal.testing.captures import gray_chart, synthetic_capture
from dpcal.testing.shapes import make_shapes_dataset
from dpcal.workflows.fit_noise import run_fit_noise
from dpcal.workflows.fit_psf import attach_to_profile
from dpcal.workflows.simulate import simulate_dataset

log = logging.getLogger("dpcal")

DEMO_LUX = (3.0, 6.0, 20.0, 200.0)
DEMO_ISOS = (400.0, 1600.0, 6400.0)
#: Training light level, sizes and length: small enough for a few minutes on a laptop CPU.
DEMO_TRAIN_LUX = (20.0, 200.0)  # log-uniform per image
DEMO_SIZE = 32
DEMO_STEPS = 600
DEMO_TRAIN_PER_CLASS = 200
DEMO_VAL_PER_CLASS = 24


def run_demo(out_dir: str | Path, profile: str = "nexus6p-rear", *, seed: int = 0, overwrite: bool = False,
             steps: int = DEMO_STEPS, progress: bool = True) -> dict:
    """Run the demo into ``out_dir`` and return its summary (also written as ``summary.json``).

    The whole pipeline on data it makes itself: synthetic gray-chart captures of the camera
    ``profile`` at three ISOs -> ``fit-noise`` into a new profile (``camera/demo-camera.json``)
    -> a rendered PSF-chart capture -> ``fit-psf`` attached to that profile -> a labelled shapes
    data set (:mod:`dpcal.testing.shapes`) simulated with the *fitted* profile -> the joint model
    (Anscombe network + MobileNet-v1) and the classifier on RAW trained briefly -> both
    evaluated over light levels -> ``report.md``. ``progress`` shows the fit-noise progress bar
    on stderr (when it is a terminal). ``out_dir`` is checked first; if the demo fails, what it wrote
    there is removed again.
    """
    from dpcal.io.atomic import OutputSet

    with OutputSet() as outs:
        outs.folder(out_dir)
        return _run_demo(out_dir, profile, seed=seed, overwrite=overwrite, steps=steps, progress=progress)


def _run_demo(out_dir, profile, *, seed, overwrite, steps, progress) -> dict:
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise BadInputError(f"{out} is not empty; pass `overwrite=True` or choose another `out`")
    out.mkdir(parents=True, exist_ok=True)
    prof = load_profile(profile)
    summary: dict = {"profile": prof.id, "out": str(out), "timings_s": {}, "cpu_s": {}}
    clock, cpu = time.perf_counter(), time.process_time()

    def lap(name: str) -> None:
        # Wall and CPU time: on a busy machine the CPU time is what the step costs.
        nonlocal clock, cpu
        now, now_cpu = time.perf_counter(), time.process_time()
        summary["timings_s"][name] = round(now - clock, 1)
        summary["cpu_s"][name] = round(now_cpu - cpu, 1)
        clock, cpu = now, now_cpu

    # 1. Synthetic RAW captures of a gray chart at three ISOs, with the true camera's noise.
    captures = [_demo_capture(out, prof, iso, seed + i) for i, iso in enumerate(DEMO_ISOS)]
    summary["capture"] = read_raw(captures[1]).info()
    lap("captures")

    # 2. Calibrate the noise back from them into a new camera profile.
    camera = out / "camera" / "demo-camera.json"
    camera.parent.mkdir(exist_ok=True)
    summary["fit_noise"] = _demo_fit_noise(captures, prof, out / "noise_plots", camera, progress)
    lap("fit_noise")

    # 3. Lens PSFs: a small PSF chart, a rendered capture through a known lens, fit-psf back,
    #    attached to the fitted profile.
    summary["fit_psf"] = _demo_fit_psf(out / "psf", prof, seed, attach=camera)
    lap("fit_psf")

    # 4. The fitted profile's noise at the paper's light levels, next to the true camera's.
    fitted = load_profile(camera)
    summary["noise_by_lux"] = [
        {"lux": lux, **fitted.noise(lux=lux).to_dict(), "alpha_true": prof.noise(lux=lux).alpha}
        for lux in DEMO_LUX
    ]

    # 5. A labelled data set drawn by dpcal, and a stored simulation of its validation split.
    data = out / "shapes"
    for split, n, s in (("train", DEMO_TRAIN_PER_CLASS, seed), ("val", DEMO_VAL_PER_CLASS, seed + 1)):
        shutil.rmtree(data / split, ignore_errors=True)
        make_shapes_dataset(data / split, n, size=64, seed=s)
    summary["simulate"] = _demo_simulate(out, data / "val", camera, seed)
    lap("data")

    # 6. Train the joint model and the classifier on RAW briefly, with the fitted profile.
    summary["train"] = {mode: _demo_train(out / "runs" / mode, mode, data, camera, seed, steps)
                        for mode in ("joint", "raw")}
    lap("train")

    # 7. Evaluate both over light levels; the report.
    summary["eval"] = _demo_eval(out, [out / "runs" / "joint", out / "runs" / "raw"], data / "val", seed)
    lap("eval")
    summary["timings_s"]["total"] = round(sum(summary["timings_s"].values()), 1)
    summary["cpu_s"]["total"] = round(sum(summary["cpu_s"].values()), 1)
    write_json_atomic(out / "summary.json", summary)
    _demo_report(out, summary)
    summary["report"] = str(out / "report.md")
    write_json_atomic(out / "summary.json", summary)
    return summary


def _demo_capture(out: Path, prof, iso: float, seed: int) -> Path:
    """A synthetic gray-chart capture at ``iso`` with the profile's noise, as a DNG."""
    noise = prof.noise(iso=iso)
    clean, _ = gray_chart(480, 640, np.linspace(0.02, 1.0, 24))
    dn = synthetic_capture(clean, prof.pattern, noise.alpha, noise.sigma, black_level=prof.black_level,
                           white_level=prof.white_level(iso), rng=seed)
    path = out / f"graychart_iso{iso:g}.dng"
    write_dng(path, dn, prof.pattern, black_level=prof.black_level, white_level=prof.white_level(iso),
              iso=iso, exposure_time=1 / 30, make="dpcal", model=f"demo {prof.id}")
    log.info("wrote %s", path)
    return path


def _demo_fit_noise(captures: list[Path], truth_profile, plots: Path, camera: Path, progress: bool) -> list[dict]:
    """Fit the demo captures into the profile ``camera`` and compare with the true camera."""
    rep = run_fit_noise([str(c) for c in captures], plots=str(plots), output=str(camera), camera_id="demo-camera",
                        overwrite=True, progress=progress)
    rows = []
    for f in rep["fits"]:
        p = f["plane"]
        truth = truth_profile.noise(iso=f["iso"])
        rows.append({
            "iso": f["iso"], "plane": p, "alpha": f["alpha"], "alpha_std": f["alpha_std"],
            "alpha_profile": truth.alpha[p], "sigma": f["sigma"], "sigma_std": f["sigma_std"],
            "sigma_profile": truth.sigma[p], "alpha_rel_err": f["alpha"] / truth.alpha[p] - 1, "scene": f.get("scene"),
        })
    log.info("fit-noise on %d captures: alpha within %.1f%% of the true camera; profile %s", len(captures),
             100 * max(abs(r["alpha_rel_err"]) for r in rows), camera)
    return rows


def _demo_fit_psf(out: Path, prof, seed: int, attach: Path | None = None) -> dict:
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
    if attach is not None:
        attach_to_profile(attach, out / "field.npz")
    err = relative_l2(res.field.psf, lens)
    log.info("fit-psf on %s: registration RMS %.3f px, kernel error median %.1f %%", dng.name,
             res.summary["registration_rms_px"], 100 * float(np.median(err)))
    return {"capture": str(dng), "field": str(out / "field.npz"),
            "registration_rms_px": res.summary["registration_rms_px"],
            "kernel_rel_l2_median": float(np.median(err)), "kernel_rel_l2_max": float(err.max()),
            "mtf50_median": float(np.median([t["mtf50"] for t in res.qa]))}


def _demo_simulate(out: Path, src: Path, camera: Path, seed: int) -> dict:
    """``dpcal simulate`` of the validation images with the fitted profile (a stored data set)."""
    res = simulate_dataset(src, out / "sim_raw", str(camera), lux=DEMO_TRAIN_LUX, size=DEMO_SIZE,
                           seed=seed, workers=0, overwrite=True, preview=out / "sim_preview.png", progress=False)
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


def _demo_train(run: Path, mode: str, data: Path, camera: Path, seed: int, steps: int) -> dict:
    """``dpcal train`` of a tiny model (width 0.25, 32 px) on the shapes, simulated on the fly."""
    from dpcal.learn.config import resolve_config
    from dpcal.learn.trainer import train

    cfg = resolve_config({"mode": mode, "data": str(data / "train"), "val_data": str(data / "val"),
                          "profile": str(camera), "lux": DEMO_TRAIN_LUX, "sim_mode": "realistic",
                          "size": DEMO_SIZE, "steps": steps, "epochs": None, "batch_size": 16, "width": 0.25,
                          "lr": 4e-3, "seed": seed, "workers": 0, "checkpoint_every": steps, "val_every": steps})
    res = train(cfg, run, overwrite=True, progress=False)
    log.info("trained %s: %d steps in %.0f s, validation top-1 %.1f %%", mode, res["steps"], res["elapsed_s"],
             100 * (res.get("val") or {}).get("top1", float("nan")))
    return {"run": str(run), "model": res["model"], "steps": res["steps"], "elapsed_s": res["elapsed_s"],
            "val": res.get("val"), "curve": str(run / "curve.png")}


def _demo_eval(out: Path, runs: list[Path], val: Path, seed: int) -> dict:
    """``dpcal eval`` of the runs over the demo's light levels, with its report in ``eval/``."""
    from dpcal.evaluate import evaluate
    from dpcal.evaluate.report import write_report

    res = evaluate([str(r) for r in runs], val, lux_sweep=list(DEMO_LUX), seed=seed, panel_images=4,
                   panel_lux=DEMO_TRAIN_LUX[0])
    written = write_report(res, out / "eval", overwrite=True, title="dpcal demo: evaluation",
                           command=f"dpcal eval {' '.join(str(r) for r in runs)} --data {val} "
                                   f"--lux-sweep {','.join(f'{v:g}' for v in DEMO_LUX)} --seed {seed}")
    return {"results": [{k: r[k] for k in ("name", "model", "n", "top1", "top5", "per_lux", "params", "macs", "images_per_s")}
                        for r in res.results],
            "report": str(written["report.md"])}


def _lux_text() -> str:
    lo, hi = DEMO_TRAIN_LUX
    return f"{lo:g}-{hi:g} lux"


def _demo_report(out: Path, s: dict) -> None:
    """``report.md``: what the demo did, its numbers, and links to every plot."""
    from dpcal.evaluate.report import markdown_table, results_table

    ev = s["eval"]
    lines = ["# dpcal demo", "",
             f"The whole pipeline on data dpcal made itself (no download), in {s['timings_s']['total']:.0f} s. "
             "Every step is a library call that a `dpcal` command wraps; `summary.json` holds all numbers.", ""]
    lines += ["## 1. Calibration", "",
              f"Synthetic RAW captures of a gray chart at ISO {', '.join(f'{v:g}' for v in DEMO_ISOS)} with the noise "
              f"of the camera profile `{s['profile']}` (the \"true camera\"), fitted back with `dpcal fit-noise` into a new "
              "profile, `camera/demo-camera.json`:", ""]
    lines += ["| ISO | plane | alpha fitted | alpha true | sigma fitted | sigma true |", "|---|---|---|---|---|---|"]
    for r in s["fit_noise"]:
        lines.append(f"| {r['iso']:g} | {r['plane']} | {r['alpha']:.4g} ± {r['alpha_std']:.1g} | {r['alpha_profile']:.4g} "
                     f"| {r['sigma']:.4g} ± {r['sigma_std']:.1g} | {r['sigma_profile']:.4g} |")
    plots = sorted((out / "noise_plots").glob("*.png"))
    lines += ["", "Noise fits: " + ", ".join(f"[{p.name}](noise_plots/{p.name})" for p in plots) + ".", ""]
    p = s["fit_psf"]
    lines += [f"A PSF chart rendered through a known astigmatic lens and fitted back with `dpcal fit-psf`: registration "
              f"RMS {p['registration_rms_px']:.3f} px, kernel error median {100 * p['kernel_rel_l2_median']:.1f} %, "
              f"worst {100 * p['kernel_rel_l2_max']:.1f} %; the field is attached to the fitted profile.", ""]
    lines += ["Noise of the fitted profile at the paper's light levels (plane R):", "",
              "| lux | ISO | alpha | alpha (true camera) | sigma |", "|---|---|---|---|---|"]
    for r in s["noise_by_lux"]:
        lines.append(f"| {r['lux']:g} | {r['iso']:.0f} | {r['alpha']['R']:.4g} | {r['alpha_true']['R']:.4g} | "
                     f"{r['sigma']['R']:.4g} |")
    sim = s["simulate"]
    lines += ["", "## 2. Data", "",
              f"`shapes/`: {DEMO_TRAIN_PER_CLASS} training and {DEMO_VAL_PER_CLASS} validation images per class of four "
              "texture classes (dots, horizontal and vertical stripes, plain) that dpcal draws itself (`dpcal.testing.shapes`). "
              f"Training and evaluation simulate them on the fly with the fitted profile (realistic mode, {DEMO_SIZE} px); "
              f"`dpcal simulate` also stored the validation split at {_lux_text()} in `sim_raw/` "
              f"([preview](sim_preview.png)).", ""]
    lines += ["## 3. Training", ""]
    lines += ["| run | model | steps | time (s) | validation top-1 at "
              f"{_lux_text()} | learning curve |", "|---|---|---|---|---|---|"]
    for mode, t in s["train"].items():
        v = (t.get("val") or {}).get("top1")
        lines.append(f"| {mode} | {t['model']} | {t['steps']} | {t['elapsed_s']:.0f} | "
                     f"{'' if v is None else f'{100 * v:.1f} %'} | [curve](runs/{mode}/curve.png) |")
    lines += ["", f"Tiny models (MobileNet-v1 at width 0.25, {DEMO_SIZE} px) trained for a few hundred steps at "
              f"{_lux_text()}: a demonstration of the pipeline, not a measurement of the paper's claim "
              "(see docs/results.md for that). Chance is 25 %.", ""]
    lines += ["## 4. Evaluation", "", markdown_table(results_table(ev["results"])), "",
              "Top-1 / top-5 in percent on the validation images (four classes: top-5 counts every class). "
              "Full report: [eval/report.md](eval/report.md).", ""]
    if (out / "eval" / "accuracy_vs_lux.png").is_file():
        lines += ["![accuracy vs lux](eval/accuracy_vs_lux.png)", ""]
    if (out / "eval" / "panel.png").is_file():
        lines += ["What each pipeline hands its classifier (as the paper's Figure 5):", "", "![panel](eval/panel.png)", ""]
    lines += ["## Timings", "", "| step | wall (s) | CPU (s) |", "|---|---|---|"]
    lines += [f"| {k} | {v:g} | {s['cpu_s'].get(k, float('nan')):g} |" for k, v in s["timings_s"].items()]
    lines += ["", "CPU time of the demo's process (all threads); on a busy machine the wall time is longer.", ""]
    write_bytes_atomic(out / "report.md", ("\n".join(lines) + "\n").encode())
