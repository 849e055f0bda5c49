import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DPCAL_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    """The real-data folder ../shared/data; tests using it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} not present (set DPCAL_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


def run_cli(*args: str, check: int | None = 0):
    """Run the dpcal CLI in a subprocess (real exit codes, real stdout/stderr)."""
    import subprocess

    r = subprocess.run([sys.executable, "-m", "dpcal", *args], capture_output=True, text=True, cwd=ROOT)
    if check is not None:
        assert r.returncode == check, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    return r
