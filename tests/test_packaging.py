import re
import subprocess
import sys
import zipfile

import pytest

from tests.conftest import ROOT


def test_every_package_is_listed_in_pyproject():
    text = (ROOT / "pyproject.toml").read_text()
    listed = set(re.search(r"packages = \[(.*?)\]", text, re.S).group(1).replace('"', "").replace(" ", "").split(","))
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "dpcal").rglob("__init__.py")}
    found.discard("dpcal._bundled")
    missing = found - listed
    assert not missing, f"add {sorted(missing)} to [tool.setuptools] packages in pyproject.toml"


def test_wheel_ships_bundled_profiles(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {r.stderr[-300:]}")
    wheel = next(tmp_path.glob("dpcal-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "dpcal/_bundled/nexus6p-rear.json" in names
    assert sum(n.startswith("dpcal/_bundled/") and n.endswith(".json") for n in names) >= 15
