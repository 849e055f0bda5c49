"""Read a RAW file and look up a camera's noise at a light level, with the library API.

Run: python examples/profiles_and_raw.py [RAW_FILE]
Without a file it makes a synthetic DNG first, so it runs anywhere.
"""

import sys
import tempfile
from pathlib import Path

import numpy as np

from dpcal.cfa import PLANES, split_planes
from dpcal.io.dng import write_dng
from dpcal.io.raw import read_raw
from dpcal.profile import load_profile
from dpcal.testing.captures import gray_chart, synthetic_capture

prof = load_profile("nexus6p-rear")
if len(sys.argv) > 1:
    path = Path(sys.argv[1])
else:
    # A gray chart captured at 20 lux by the default camera.
    noise = prof.noise(lux=20)
    clean, _ = gray_chart(256, 384, np.linspace(0.05, 0.95, 12))
    dn = synthetic_capture(clean, prof.pattern, noise.alpha, noise.sigma,
                           black_level=prof.black_level, white_level=prof.white_level(), rng=1)
    path = Path(tempfile.mkdtemp()) / "chart.dng"
    write_dng(path, dn, prof.pattern, black_level=prof.black_level, white_level=prof.white_level(), iso=noise.iso)

raw = read_raw(path)
print(f"{path.name}: {raw.width}x{raw.height} {raw.pattern}, black {raw.black_level}, white {raw.white_level:g}, ISO {raw.iso}")
for name, plane in zip(PLANES, split_planes(raw.normalized(), raw.pattern)):
    print(f"  {name:<3} mean {plane.mean():.4f}  std {plane.std():.4f}")

for lux in (3, 6, 20, 200):
    n = prof.noise(lux=lux)
    print(f"{prof.id} at {lux:>3} lux (ISO {n.iso:>7.0f}): alpha {n.alpha['R']:.4g}, sigma {n.sigma['R']:.4g}")
