"""Accuracy of the single-image noise fit on synthetic 2-megapixel captures with known noise.

For gray charts (30 patches from -0.06 to 1.06, clipped at both ends, vignetted) and for
natural-ish scenes (forced through Foi's wavelet route), at ISO 100 / 800 / 3200 / 6400 and
several seeds: the worst relative alpha error, the worst mean relative error of the sigma(y)
curve on [0.05, 0.95], and the spread of (error / reported alpha_std). Run from the repository
root (about 1 s per capture)::

    python benchmarks/accuracy_fit_noise.py --seeds 4
    python benchmarks/accuracy_fit_noise.py --scene natural --seeds 3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dpcal.cfa import PLANES, join_planes  # noqa: E402
from dpcal.noise.hygiene import prepare_capture  # noqa: E402
from dpcal.testing.scenes import natural_scene  # noqa: E402
from dpcal.noise.single import fit_noise_single  # noqa: E402
from dpcal.testing.captures import synthetic_capture  # noqa: E402
from tests._noise_data import capture, chart_clean, curve_error, truth  # noqa: E402

CASES = [(100, "RGGB"), (800, "GBRG"), (3200, "BGGR"), (6400, "GRBG")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scene", choices=["chart", "natural"], default="chart")
    ap.add_argument("--seeds", type=int, default=4)
    args = ap.parse_args()
    chart = chart_clean()
    worst_a = worst_c = 0.0
    pulls = []
    for seed in range(args.seeds):
        for iso, pat in CASES:
            alpha, sigma = truth(iso)
            if args.scene == "chart":
                dn = capture(chart, pat, iso, seed=100 + seed)
            else:
                clean = natural_scene(1224, 1632, rng=seed * 7 + iso)
                dn = synthetic_capture(clean, pat, alpha, sigma, black_level=64, white_level=4095, rng=seed)
            prep = prepare_capture(dn, pat, [64] * 4, 4095)
            fits = fit_noise_single(join_planes(prep.planes, pat), pat, lo=prep.lo, hi=prep.hi,
                                    scene="auto" if args.scene == "chart" else "natural")
            errs = []
            for p in PLANES:
                e = fits[p].alpha / alpha[p] - 1
                c = curve_error(fits[p], alpha[p], sigma[p])
                pulls.append(e * alpha[p] / fits[p].alpha_std)
                worst_a, worst_c = max(worst_a, abs(e)), max(worst_c, c)
                errs.append(f"{p} {e:+.2%}/{c:.2%}")
            print(f"seed {seed} ISO {iso:>4} {pat}: alpha err / curve err  " + "  ".join(errs))
    print(f"{args.scene}: {len(pulls)} plane fits; worst alpha error {worst_a:.2%}; worst sigma(y) curve error "
          f"{worst_c:.2%}; pull std {np.std(pulls):.2f}, mean {np.mean(pulls):+.2f}")


if __name__ == "__main__":
    main()
