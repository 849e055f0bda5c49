"""Do fit-noise's error bars cover the truth on captures that break its model?

Synthetic single captures with a known Poisson-Gaussian noise plus what real captures add,
each fitted through the whole ``fit-noise`` route (reading, hygiene, chart detection, PRNU
term, honesty checks, uncertainty widening):

* ``prnu``: a gray chart, every pixel's gain off by 1 % (photo-response non-uniformity);
* ``texture``: a gray chart printed on textured paper (1.5 % multiplicative grain, 1.5 px);
* ``pedestal``: a gray chart whose black level is 24 DN above the one the fitter is told;
* ``dominant``: a gray chart in front of a textured white wall covering half the frame;
* ``bernoulli``: a PSF noise chart (Bernoulli cells, blurred) fitted as if it were a gray
  chart, rendered by ``dpcal render-chart`` (profile ``nexus6p-rear`` at ISO 400).

Per case and plane: the relative alpha error, the pull ``(alpha - truth) / alpha_std`` and
whether ``|pull| < 2`` (95 % coverage when the error bars are honest), and the findings the
checks raise. Run from the repository root::

    python benchmarks/coverage_fit_noise.py --seeds 3
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dpcal.cfa import PLANES  # noqa: E402
from dpcal.workflows.fit_noise import run_fit_noise  # noqa: E402
from dpcal.testing.captures import gray_chart, synthetic_capture  # noqa: E402

H, W = 816, 1088
ALPHA = {"R": 2.4e-4, "Gr": 1.5e-4, "Gb": 1.5e-4, "B": 3.0e-4}
SIGMA = {"R": 1.1e-3, "Gr": 8.0e-4, "Gb": 8.0e-4, "B": 1.3e-3}
LEVELS = np.linspace(0.03, 0.92, 24)


def _grain(rng, shape, rms, blur):
    from scipy.ndimage import gaussian_filter

    g = gaussian_filter(rng.standard_normal(shape), blur)
    return 1.0 + rms * g / g.std()


def make_case(case: str, seed: int, folder: Path) -> tuple[Path, dict, dict]:
    """Write the capture; return (file, fit-noise keywords, true alpha per plane in the fit's units)."""
    rng = np.random.default_rng(1000 + seed)
    clean, _ = gray_chart(H, W, LEVELS, background=0.1)
    black, told = 64.0, 64.0
    if case == "prnu":
        clean = clean * (1.0 + 0.01 * rng.standard_normal(clean.shape))
    elif case == "texture":
        clean = clean * _grain(rng, clean.shape, 0.015, 1.5)
    elif case == "pedestal":
        told = 40.0
    elif case == "dominant":
        small, _ = gray_chart(H // 2, W, LEVELS, background=0.1)
        wall = 0.85 * _grain(rng, (H - H // 2, W), 0.03, 1.5)
        clean = np.vstack([small, wall])
    dn = synthetic_capture(clean, "RGGB", ALPHA, SIGMA, black_level=black, white_level=4095, rng=seed)
    p = folder / f"{case}_{seed}.npy"
    np.save(p, dn.astype(np.uint16))
    kw = {"raw_kw": {"pattern": "RGGB", "bits": 12, "black_level": told}}
    # The fit's units run from the black level it is told to white.
    truth = {k: v * (4095 - black) / (4095 - told) for k, v in ALPHA.items()}
    return p, kw, truth


def make_bernoulli(seed: int, folder: Path) -> tuple[Path, dict, dict]:
    chart = folder / "psfchart"
    if not (chart / "chart.json").exists():
        subprocess.run([sys.executable, "-m", "dpcal", "make-chart", "psf", "--out", str(chart), "--no-pdf"],
                       check=True, capture_output=True, cwd=ROOT)
    out = folder / f"bernoulli_{seed}.dng"
    subprocess.run([sys.executable, "-m", "dpcal", "render-chart", "--chart", str(chart / "chart.json"), "-o", str(out),
                    "--size", "1600", "1200", "--iso", "400", "--seed", str(seed)], check=True, capture_output=True,
                   cwd=ROOT)
    from dpcal.profile import load_profile

    a = load_profile("nexus6p-rear").noise(400.0).alpha
    truth = {p: float(a[p]) for p in PLANES}
    return out, {"raw_kw": {}}, truth


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--cases", nargs="+", default=["prnu", "texture", "pedestal", "dominant", "bernoulli"])
    args = ap.parse_args()
    import os

    os.environ["DPCAL_QUIET"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for case in args.cases:
            errs, pulls, codes = [], [], Counter()
            for seed in range(args.seeds):
                if case == "bernoulli":
                    path, kw, truth = make_bernoulli(seed, folder)
                else:
                    path, kw, truth = make_case(case, seed, folder)
                rep = run_fit_noise([str(path)], iso=400.0 if case == "bernoulli" else 100.0, **kw)
                for f in rep["fits"]:
                    t = truth[f["plane"]]
                    errs.append(f["alpha"] / t - 1)
                    pulls.append((f["alpha"] - t) / f["alpha_std"])
                codes.update(w["code"] for w in rep.get("warnings", []))
                if seed == 0:
                    print(f"{case}: {rep['summary'][0]['scene']}")
            e, z = np.array(errs), np.array(pulls)
            print(f"  {case:<10} {len(e)} plane fits: alpha error mean {e.mean():+.1%}, worst {e[np.argmax(abs(e))]:+.1%}; "
                  f"pull std {z.std():.2f}, |pull| < 2 in {np.mean(abs(z) < 2):.0%}; findings {dict(codes) or '-'}")


if __name__ == "__main__":
    main()
