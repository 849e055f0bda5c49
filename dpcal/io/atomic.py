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
import tempfile
from pathlib import Path
from typing import Any, Iterator

from dpcal.errors import BadInputError


def check_writable(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Refuse to replace an existing ``path`` unless ``overwrite``; check that its folder exists
    and takes files (a real write, which also catches read-only file systems, where root's
    ``os.access`` still says yes)."""
    p = Path(path)
    if p.is_dir():
        raise BadInputError(f"cannot write to {p}: it is a folder")
    if p.exists() and not overwrite:
        raise BadInputError(f"{p} already exists; pass `overwrite=True` to replace it")
    parent = p.parent if str(p.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise BadInputError(f"cannot write to {p}: {parent} is a file, not a folder")
    if not parent.is_dir():
        raise BadInputError(f"folder {parent} does not exist; create it first")
    _probe(parent, p)
    return p


def check_folder(path: str | os.PathLike) -> Path:
    """Check that files can be written into folder ``path`` (created with its parents if need
    be): it is not a file and its nearest existing ancestor is a writable folder."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise BadInputError(f"cannot write to {p}: it exists and is not a folder")
    anc = p
    while not anc.exists():
        anc = anc.parent
    if not anc.is_dir():
        raise BadInputError(f"cannot write to {p}: {anc} is a file, not a folder")
    _probe(anc, p)
    return p


def _probe(folder: Path, target: Path) -> None:
    try:
        fd, name = tempfile.mkstemp(prefix=".dpcal-probe-", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise BadInputError(f"cannot write to {target}: {e.strerror or e}") from None


class OutputSet:
    """The outputs of one command: checked before the work starts, removed again if it fails.

    A command that fails half-way (a full disk, a figure that cannot be drawn, Ctrl-C) then
    leaves no new file behind that a rerun would refuse as existing or a user could take for a
    result: on an exception, files that did not exist when they were checked are deleted
    (:meth:`file`, and anything new in a :meth:`folder`) and the folders created on the way are
    removed when empty. Files that existed before (``overwrite``, a profile being updated) are
    left alone, so a command should write its most valuable output last, atomically.

    Examples
    --------
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> try:
    ...     with OutputSet() as outs:
    ...         prof = outs.file(os.path.join(d, "cam.json"))
    ...         figs = outs.folder(os.path.join(d, "figs"))
    ...         figs.mkdir()
    ...         _ = (figs / "a.png").write_bytes(b"")
    ...         raise RuntimeError("the plot failed")
    ... except RuntimeError:
    ...     pass
    >>> os.listdir(d)
    []
    """

    def __init__(self) -> None:
        self._files: list[Path] = []
        self._folders: list[tuple[Path, set[Path]]] = []
        self._missing_dirs: list[Path] = []

    def file(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Check an output file (see :func:`check_writable`); own it if it is new."""
        p = check_writable(path, overwrite)
        if not p.exists():
            self._files.append(p)
        return p

    def folder(self, path: str | os.PathLike) -> Path:
        """Check an output folder (see :func:`check_folder`; the writer creates it) and own
        the folders missing on the way and what is new in it."""
        p = check_folder(path)
        anc = p
        while not anc.exists():
            self._missing_dirs.append(anc)
            anc = anc.parent
        self._folders.append((p, set(p.rglob("*")) if p.is_dir() else set()))
        return p

    def __enter__(self) -> "OutputSet":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.discard()

    def discard(self) -> None:
        """Delete the new files and the folders created (if empty)."""
        for p in self._files:
            p.unlink(missing_ok=True)
        for folder, before in self._folders:
            if folder.is_dir():
                new = [f for f in folder.rglob("*") if f not in before]
                for f in sorted(new, key=lambda f: len(f.parts), reverse=True):
                    if f.is_dir() and not f.is_symlink():
                        with contextlib.suppress(OSError):
                            f.rmdir()
                    else:
                        f.unlink(missing_ok=True)
        for d in self._missing_dirs:  # deepest first
            with contextlib.suppress(OSError):
                d.rmdir()


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
