"""Build the bundled profiles from published noise parameters.

Run ``python -m dpcal.profile.published DATA/published_noise profiles/`` to regenerate
``profiles/*.json``; ``tests/test_profiles.py`` checks the bundled files against this code when
the data folder is present. Conversions (all documented in ``docs/profiles.md``):

* **Dirty Pixels** (``sensor_noise_params.json``): alpha, sigma at ISO 100 in [0, 1] units, with
  the reference code's linear ISO scaling.
* **ELD** (Wei et al. 2020): the overall system gain ``K`` (DN/e-) spans ``[Kmin, Kmax]``; we take
  ``Kmin`` at ISO 100 (consistent with each sensor's full-well capacity at base ISO) and ``K``
  proportional to ISO. Then ``alpha = K / (white - black)`` and the Gaussian read noise
  ``sigma = exp(slope * ln K + bias) / (white - black)`` (the ``g_scale`` fit of Profile-1).
* **SIDD** (Abdelhamed et al. 2018, via Noise Flow): ``var = beta1 * x + beta2`` in [0, 1]
  units, so ``alpha = beta1`` and ``sigma = sqrt(beta2)``.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

from dpcal.cfa import PLANES
from dpcal.profile import REFERENCE_LIGHT, Profile, new_profile

DIRTYPIXELS = {
    # id: (key in sensor_noise_params.json, maker, model)
    "nexus6p-rear": ("Nexus_6P_rear", "Huawei", "Nexus 6P rear camera (Sony IMX377)"),
    "nexus6p-front": ("Nexus_6P_front", "Huawei", "Nexus 6P front camera"),
    "semco": ("SEMCO", "Samsung Electro-Mechanics", "SEMCO phone camera module"),
    "ov2740": ("OV2740", "OmniVision", "OV2740"),
    "pixel": ("Pixel", "Google", "Pixel (captured-data calibration)"),
}
DIRTYPIXELS_CITE = (
    "Diamond et al., Dirty Pixels: Towards End-to-end Image Processing and Perception, ACM TOG 40(3), 2021; "
    "reference code github.com/princeton-computational-imaging/DirtyPixels @ 6c82b124, preprocessing/sensor_model.py"
)

# ELD cameras: (maker, model, black, white) -- 14-bit raw levels of each camera.
ELD = {
    "SonyA7S2": ("Sony", "ILCE-7SM2 (A7S II)", 512, 16383),
    "NikonD850": ("Nikon", "D850", 600, 16383),
    "CanonEOS5D4": ("Canon", "EOS 5D Mark IV", 512, 16383),
    "CanonEOS70D": ("Canon", "EOS 70D", 2048, 16383),
    "CanonEOS700D": ("Canon", "EOS 700D", 2048, 16383),
}
ELD_CITE = (
    "Wei et al., A Physics-based Noise Formation Model for Extreme Low-light Raw Denoising, CVPR 2020; "
    "camera_params from github.com/Vandermode/ELD @ 53d5408 (MIT)"
)

SIDD = {
    "IP": ("Apple", "iPhone 7"),
    "GP": ("Google", "Pixel"),
    "S6": ("Samsung", "Galaxy S6 Edge"),
    "N6": ("Motorola", "Nexus 6"),
    "G4": ("LG", "G4"),
}
SIDD_CITE = (
    "Abdelhamed et al., A High-Quality Denoising Dataset for Smartphone Cameras (SIDD), CVPR 2018; "
    "NLF table from Noise Flow (Abdelhamed et al., ICCV 2019), github.com/BorealisAI/noise_flow cam_iso_nlf.txt"
)


def _same(v: float) -> dict[str, float]:
    return {p: float(v) for p in PLANES}


def dirtypixels_profiles(params_json: Path) -> list[Profile]:
    doc = json.loads(Path(params_json).read_text())["sensors_iso100"]
    out = []
    for pid, (key, maker, model) in DIRTYPIXELS.items():
        a, s = doc[key]["alpha_poisson_scale"], doc[key]["sigma_gauss_std"]
        out.append(
            new_profile(
                pid,
                maker,
                model,
                # The reference code mosaics every sensor as BGGR.
                pattern="BGGR",
                bit_depth=10,
                black_level=[64] * 4,
                white_level=1023,
                table=[{"iso": 100.0, "alpha": _same(a), "sigma": _same(s)}],
                iso_model="linear",
                light=REFERENCE_LIGHT,
                provenance={
                    "method": "published",
                    "source": f"sensor_noise_params.json: sensors[{key!r}] (alpha, sigma at ISO 100)",
                    "citation": DIRTYPIXELS_CITE,
                    "notes": "Same alpha/sigma for all CFA planes (as published). CFA BGGR as in the reference "
                    "code's mosaic; levels are nominal 10-bit values (the noise is in normalised units).",
                },
                description=f"{maker} {model}: noise as calibrated in the Dirty Pixels paper.",
            )
        )
    return out


def eld_profiles(eld_json: Path) -> list[Profile]:
    doc = json.loads(Path(eld_json).read_text())["cameras"]
    out = []
    for key, (maker, model, black, white) in ELD.items():
        cam = doc[key]
        kmin, kmax = cam["Kmin"], cam["Kmax"]
        g = cam["Profile-1"]["g_scale"]
        rng = white - black
        table = []
        iso = 100.0
        while True:
            k = kmin * iso / 100.0
            if k > kmax * 1.0001:
                break
            sig_dn = math.exp(g["slope"] * math.log(k) + g["bias"])
            table.append({"iso": iso, "alpha": _same(k / rng), "sigma": _same(sig_dn / rng)})
            iso *= 2
        out.append(
            new_profile(
                f"eld-{key.lower()}",
                maker,
                model,
                pattern="RGGB",
                bit_depth=14,
                black_level=[black] * 4,
                white_level=white,
                table=table,
                iso_model="cts",
                provenance={
                    "method": "published",
                    "source": f"eld_camera_params.json: cameras[{key!r}] (Kmin={kmin:.4g}, Kmax={kmax:.4g} DN/e-, "
                    "Profile-1 g_scale)",
                    "citation": ELD_CITE,
                    "notes": "Converted from system gain: K(ISO) = Kmin*ISO/100 (Kmin taken at base ISO 100), "
                    "alpha = K/(white-black), sigma = exp(slope*ln K + bias)/(white-black). Row noise and the "
                    "Tukey-lambda tail of ELD are not part of the Poisson-Gaussian model. Levels are the "
                    "camera's usual 14-bit values; CFA nominal.",
                },
                description=f"{maker} {model}: Poisson-Gaussian noise converted from the ELD calibration.",
            )
        )
    return out


def sidd_profiles(nlf_csv: Path) -> list[Profile]:
    rows: dict[str, list] = {}
    with open(nlf_csv, newline="") as f:
        for r in csv.DictReader(f):
            cam, iso = r["cam_iso"].split("_")
            rows.setdefault(cam, []).append((float(iso), float(r["beta1"]), float(r["beta2"])))
    out = []
    for cam, (maker, model) in SIDD.items():
        table = [{"iso": iso, "alpha": _same(b1), "sigma": _same(math.sqrt(b2))} for iso, b1, b2 in rows[cam]]
        out.append(
            new_profile(
                f"sidd-{cam.lower()}",
                maker,
                model,
                pattern="RGGB",
                bit_depth=10,
                black_level=[64] * 4,
                white_level=1023,
                table=table,
                iso_model="cts",
                provenance={
                    "method": "published",
                    "source": f"sidd_cam_iso_nlf.csv rows {cam}_*: var = beta1*x + beta2 -> alpha = beta1, "
                    "sigma = sqrt(beta2)",
                    "citation": SIDD_CITE,
                    "notes": "Published per ISO for the whole image (same for all planes). Levels and CFA nominal.",
                },
                description=f"{maker} {model}: noise level functions of the SIDD dataset.",
            )
        )
    return out


def build_all(data_dir: Path) -> list[Profile]:
    """All bundled profiles from a ``published_noise``-style folder (see ``docs/data.md``)."""
    d = Path(data_dir)
    return (
        dirtypixels_profiles(d / "sensor_noise_params.json")
        + eld_profiles(d / "eld_camera_params" / "eld_camera_params.json")
        + sidd_profiles(d / "sidd_cam_iso_nlf.csv")
    )


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m dpcal.profile.published PUBLISHED_NOISE_DIR OUT_DIR", file=sys.stderr)
        return 2
    out = Path(argv[1])
    for p in build_all(Path(argv[0])):
        # Fixed date so that regenerating gives identical files.
        p.doc["provenance"]["date"] = "2026-11-25"
        p.doc["provenance"].pop("dpcal_version", None)
        p.save(out / f"{p.id}.json")
        print(out / f"{p.id}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
