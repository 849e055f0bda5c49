"""The on-disk format of simulated datasets, shared by their writer and their readers.

The writer is :mod:`dpcal.workflows.simulate` (``dpcal simulate``); the training data loaders
in :mod:`dpcal.learn` read the same layout and derive the same per-image seeds. This module
holds what both must agree on: source discovery (an ImageNet-style folder tree or a CSV) and
its :class:`Item` records, :func:`derive_seed`, the file names and columns, and the dataset
card (:func:`read_card`).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
from pathlib import Path
from typing import Iterable

from dpcal.cfa import PLANES
from dpcal.errors import BadInputError
from dpcal.sim.geometry import IMAGE_SUFFIXES

__all__ = [
    "CARD",
    "FORMATS",
    "JOURNAL",
    "MANIFEST",
    "MANIFEST_COLUMNS",
    "SCHEMA_VERSION",
    "STATE_DIR",
    "Item",
    "Source",
    "derive_seed",
    "discover",
    "imagenet_synsets",
    "read_card",
]

SCHEMA_VERSION = 1
CARD = "dataset.json"
MANIFEST = "manifest.csv"
STATE_DIR = ".dpcal-sim"
JOURNAL = "journal.jsonl"
FORMATS = ("png", "dng")
MANIFEST_COLUMNS = (
    ["path", "label", "class_index", "lux", "iso", "alpha", "sigma"]
    + [f"alpha_{p}" for p in PLANES]
    + [f"sigma_{p}" for p in PLANES]
    + ["seed", "source", "status", "detail"]
)


@dataclasses.dataclass(frozen=True)
class Item:
    """One source image: ``key`` (relative source path, seeds and identity), output ``out``
    (relative to ``DST``), label, class index and seed."""

    key: str
    source: str
    label: str
    class_index: int
    out: str
    seed: int


@dataclasses.dataclass
class Source:
    kind: str  # "folders" or "csv"
    root: str
    items: list[Item]
    classes: dict[str, int]
    class_index_source: str
    empty_classes: list[str]
    ignored_files: int


def imagenet_synsets() -> list[str]:
    """The 1000 ILSVRC wnids in class-index order (shipped with dpcal; MIT, Dirty Pixels code).

    Examples
    --------
    >>> s = imagenet_synsets()
    >>> len(s), s[0], s[-1]
    (1000, 'n01440764', 'n15075141')
    """
    from importlib.resources import files

    text = (files("dpcal.sim") / "data" / "imagenet_lsvrc_2015_synsets.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


def derive_seed(seed: int, key: str) -> int:
    """Per-image seed from the run seed and the image's key (63-bit, stable across platforms).

    Examples
    --------
    >>> derive_seed(0, "n01440764/a.JPEG") == derive_seed(0, "n01440764/a.JPEG")
    True
    >>> derive_seed(0, "a") != derive_seed(1, "a")
    True
    """
    h = hashlib.blake2b(f"dpcal-sim\0{int(seed)}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & (2**63 - 1)


def _class_indices(labels: Iterable[str]) -> tuple[dict[str, int], str]:
    labels = sorted(set(labels))
    syn = imagenet_synsets()
    if labels and all(lab in syn for lab in labels):
        pos = {w: i for i, w in enumerate(syn)}
        return {lab: pos[lab] for lab in labels}, "imagenet_lsvrc_2015_synsets"
    return {lab: i for i, lab in enumerate(labels)}, "sorted labels"


def _safe_label(label: str) -> str:
    s = label.strip().replace("/", "_").replace("\\", "_")
    if s in ("", ".", ".."):
        s = "_" + s.replace(".", "_")
    return s


def _assign_outputs(rows: list[tuple[str, str, str]], seed: int, fmt: str) -> tuple[list[Item], dict[str, int], str]:
    """rows: (key, absolute source, label) -> Items with unique output names per class folder."""
    classes, how = _class_indices(r[2] for r in rows)
    used: set[str] = set()
    items = []
    for key, source, label in sorted(rows, key=lambda r: r[0]):
        folder = _safe_label(label)
        stem = os.path.splitext(os.path.basename(key))[0]
        name = f"{folder}/{stem}.{fmt}"
        n = 2
        while name.lower() in used:
            name = f"{folder}/{stem}__{n}.{fmt}"
            n += 1
        used.add(name.lower())
        items.append(Item(key, source, label, classes[label], name, derive_seed(seed, key)))
    return items, classes, how


def discover(src: str | os.PathLike, *, seed: int = 0, fmt: str = "png") -> Source:
    """List the images of ``src``: class folders ``SRC/<label>/*`` or a CSV ``path,label``.

    Image files are recognised by extension (JPEG, PNG, TIFF, BMP, WebP, PPM/PGM, GIF); other
    files are ignored and counted. Class indices follow the ImageNet synset order when every
    label is an ILSVRC wnid, else the sorted labels (empty class folders included).

    Raises
    ------
    BadInputError
        Missing source, no class folders, no images, a malformed CSV.
    """
    p = Path(src)
    if not p.exists():
        raise BadInputError(f"{p}: no such folder or CSV file")
    if p.is_file():
        return _discover_csv(p, seed, fmt)
    root = os.path.abspath(p)
    with os.scandir(root) as it:
        entries = sorted(it, key=lambda e: e.name)
    class_dirs = [e.name for e in entries if e.is_dir() and not e.name.startswith(".")]
    if not class_dirs:
        raise BadInputError(f"{p} has no class folders; expected {p}/<class>/<image files> (ImageNet layout) or a CSV path,label")
    rows, empty = [], []
    ignored = sum(1 for e in entries if e.is_file())
    for name in class_dirs:
        n = 0
        # os.scandir, not pathlib: a million-image tree is listed in seconds.
        for rel, full in _walk_files(os.path.join(root, name), name):
            if os.path.splitext(rel)[1].lower() in IMAGE_SUFFIXES:
                rows.append((rel, full, name))
                n += 1
            else:
                ignored += 1
        if n == 0:
            empty.append(name)
    if not rows:
        raise BadInputError(f"no image files in the class folders of {p}")
    items, classes, how = _assign_outputs(rows, seed, fmt)
    if empty:
        all_classes, how = _class_indices(class_dirs)
        items = [dataclasses.replace(it, class_index=all_classes[it.label]) for it in items]
        classes = all_classes
    return Source("folders", str(p.resolve()), items, classes, how, empty, ignored)


def _walk_files(folder: str, rel: str):
    """(relative posix path, absolute path) of the non-hidden files under ``folder``, sorted."""
    with os.scandir(folder) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        if e.name.startswith("."):
            continue
        r = f"{rel}/{e.name}"
        if e.is_dir():
            yield from _walk_files(e.path, r)
        elif e.is_file():
            yield r, e.path


def _discover_csv(p: Path, seed: int, fmt: str) -> Source:
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise BadInputError(f"{p}: cannot read the CSV ({e})") from None
    rows = [r for r in csv.reader(io.StringIO(text)) if r and any(c.strip() for c in r)]
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["path", "label"]:
        rows = rows[1:]
    if not rows:
        raise BadInputError(f"{p}: the CSV has no rows; expected lines 'path,label'")
    out = []
    for i, r in enumerate(rows, 1):
        if len(r) < 2 or not r[0].strip() or not r[1].strip():
            raise BadInputError(f"{p}: row {i} is not 'path,label': {','.join(r)!r}")
        rel, label = r[0].strip(), r[1].strip()
        f = Path(rel) if Path(rel).is_absolute() else p.parent / rel
        out.append((rel, os.path.abspath(f), label))
    keys = [k for k, _, _ in out]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise BadInputError(f"{p}: {dup!r} is listed more than once")
    items, classes, how = _assign_outputs(out, seed, fmt)
    return Source("csv", str(p.resolve()), items, classes, how, [], 0)




def read_card(dst: str | os.PathLike) -> dict | None:
    """The ``dataset.json`` of ``dst`` (None if absent); refuses unknown schema versions."""
    p = Path(dst) / CARD
    if not p.is_file():
        return None
    try:
        card = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise BadInputError(f"{p}: unreadable dataset card ({e}); pass `overwrite=True` to rebuild") from None
    if card.get("schema_version") != SCHEMA_VERSION:
        raise BadInputError(f"{p}: dataset card schema_version {card.get('schema_version')!r} is not supported "
                            f"(this dpcal reads {SCHEMA_VERSION})")
    return card
