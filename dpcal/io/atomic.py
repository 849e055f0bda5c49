"""Atomic, overwrite-aware file writes.

Every output goes to a temporary name in the destination folder and is renamed into place
only when complete, so an interrupted job never leaves a file that looks finished.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any, Iterator

from dpcal.errors import BadInputError


def check_writable(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Refuse to replace an existing ``path`` unless ``overwrite``; check its folder exists."""
    p = Path(path)
    if p.exists() and not overwrite:
        raise BadInputError(f"{p} already exists; pass `overwrite=True` to replace it")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise BadInputError(f"folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise BadInputError(f"cannot write to folder {parent}: permission denied")
    return p


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` if the block succeeds.

    The temporary is named ``.<stem>.<unique>.part<suffix>`` (hidden, recognisably partial) and
    keeps the destination's suffix so that writers choosing a format from the name (OpenCV,
    numpy, matplotlib) still work. It is created with the usual permissions (0666 less the
    umask), not ``mkstemp``'s 0600, so outputs can be shared.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> with atomic_path(os.path.join(d, "a.npy")) as tmp:
    ...     np.save(tmp, np.zeros(3))
    >>> sorted(os.listdir(d))
    ['a.npy']
    """
    p = Path(path)
    folder = p.parent if str(p.parent) else Path(".")
    while True:
        tmp_path = folder / f".{p.stem}.{os.getpid()}-{secrets.token_hex(4)}.part{p.suffix}"
        try:
            os.close(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        yield tmp_path
        os.replace(tmp_path, p)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: str | os.PathLike, doc: Any) -> None:
    """Write ``doc`` as indented JSON, atomically."""
    write_bytes_atomic(path, (json.dumps(doc, indent=2, allow_nan=False) + "\n").encode())


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file (for provenance records)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
