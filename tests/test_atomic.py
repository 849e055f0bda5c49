import os
import stat

import pytest

from dpcal.errors import BadInputError
from dpcal.io.atomic import atomic_path, check_writable, write_json_atomic


def test_outputs_get_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644


def test_interrupted_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "b.png") as tmp:
            assert tmp.suffix == ".png" and tmp.name.startswith(".b.")
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_check_writable(tmp_path):
    (tmp_path / "x").write_text("")
    with pytest.raises(BadInputError, match="`overwrite=True`"):
        check_writable(tmp_path / "x")
    assert check_writable(tmp_path / "x", overwrite=True)
    with pytest.raises(BadInputError, match="does not exist"):
        check_writable(tmp_path / "nope" / "y")
