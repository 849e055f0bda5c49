"""Data for training and evaluation: clean image folders simulated on the fly, or folders
written by ``dpcal simulate``.

Two sources, one batch format (a dict of tensors):

``images`` (class folders ``SRC/<label>/<images>`` or a ``path,label`` CSV)
    Each image is decoded, cropped and resized by the simulator's rules
    (:func:`dpcal.sim.geometry.load_image`), then the camera's image formation model
    (:class:`dpcal.sim.Simulator`, an ``nn.Module``) turns the batch into noisy mosaics: in the
    loader workers on the CPU (:class:`SimulateCollate`), or on the training device.
``simulated`` (a folder with ``dataset.json`` from ``dpcal simulate``)
    The stored mosaics (16-bit PNG or DNG) with their per-image noise parameters from the
    manifest.

Batch keys: ``label`` (B,), ``seed`` (B,), and ``image`` (B, 3, H, W) (clean source images, the
linearisation's tone curve applied) for ``images``; after simulation, or for ``simulated``:
``mosaic`` (B, 1, H, W), ``alpha``/``sigma`` (B, 4) (in the mosaic's dtype), ``lux`` (B,), and for simulated-on-the-fly
batches the reconstruction target ``linear`` (B, 3, H, W).

Seeds. Every random choice of an image derives from one 63-bit seed per image
(:func:`dpcal.sim.layout.derive_seed`): for evaluation it is ``derive_seed(seed, key)``, the
same rule ``dpcal simulate`` uses, so evaluating on the fly and evaluating a simulated folder
give the same noise; for training it also depends on the epoch
(``derive_seed(seed, f"{key}#epoch{epoch}")``), so every epoch draws fresh crops and noise and a
resumed run draws exactly what the uninterrupted one did.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from dpcal.cfa import PLANES
from dpcal.errors import BadInputError

__all__ = [
    "DataSource",
    "ImageDataset",
    "MosaicDataset",
    "SimulateCollate",
    "open_source",
    "sample_seed",
    "collate",
]


@dataclasses.dataclass
class DataSource:
    """A labelled set of images or simulated mosaics.

    Attributes
    ----------
    kind : {"images", "simulated"}
    root : str
    classes : list of str
        Labels in class-index order (sorted).
    keys, paths : list of str
        Per item: the key (source path relative to the root; seeds derive from it) and the file.
    labels : ndarray of int64
        Class index of each item in ``classes``.
    card : dict or None
        ``dataset.json`` of a simulated folder.
    noise : ndarray (N, 9) or None
        Simulated folders: ``alpha`` (4), ``sigma`` (4) per plane and ``lux`` per item.
    """

    kind: str
    root: str
    classes: list[str]
    keys: list[str]
    paths: list[str]
    labels: np.ndarray
    card: dict | None = None
    noise: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def pattern(self) -> str | None:
        return self.card["settings"]["simulator"]["pattern"] if self.card else None

    def subset(self, n: int | None) -> "DataSource":
        """The first ``n`` items of an evenly spread selection (every k-th), all if ``n`` is None."""
        if n is None or n >= len(self):
            return self
        idx = np.linspace(0, len(self) - 1, n).round().astype(int)
        pick = lambda seq: [seq[i] for i in idx]  # noqa: E731
        return dataclasses.replace(self, keys=pick(self.keys), paths=pick(self.paths), labels=self.labels[idx],
                                   noise=None if self.noise is None else self.noise[idx])


def open_source(src: str | os.PathLike) -> DataSource:
    """Open ``src``: a ``dpcal simulate`` folder (it has ``dataset.json``), class folders or a CSV.

    Raises
    ------
    BadInputError
        Missing or empty sources, unlabelled data, an incomplete simulated folder.
    """
    p = Path(src)
    if not p.exists():
        raise BadInputError(f"{p}: no such folder or CSV file")
    if p.is_dir() and (p / "dataset.json").is_file():
        return _open_simulated(p)
    from dpcal.sim.layout import discover

    s = discover(p)
    classes = sorted({it.label for it in s.items} | set(s.empty_classes))
    index = {c: i for i, c in enumerate(classes)}
    return DataSource("images", str(p.resolve()), classes, [it.key for it in s.items], [it.source for it in s.items],
                      np.array([index[it.label] for it in s.items], dtype=np.int64))


def _open_simulated(p: Path) -> DataSource:
    from dpcal.sim.layout import MANIFEST, read_card

    card = read_card(p)
    if not card.get("complete"):
        raise BadInputError(f"{p} is an unfinished `dpcal simulate` folder; rerun the simulate command to complete it")
    try:
        with open(p / MANIFEST, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("status") == "ok"]
    except OSError as e:
        raise BadInputError(f"{p}: cannot read {MANIFEST} ({e.strerror})") from None
    if not rows:
        raise BadInputError(f"{p}: the manifest lists no simulated images")
    if any(not r.get("label") for r in rows):
        raise BadInputError(f"{p}: the manifest has images without a label; training and evaluation need labels")
    classes = sorted({r["label"] for r in rows})
    index = {c: i for i, c in enumerate(classes)}
    noise = np.array([[float(r[f"alpha_{q}"]) for q in PLANES] + [float(r[f"sigma_{q}"]) for q in PLANES]
                      + [float(r["lux"])] for r in rows])
    return DataSource("simulated", str(p.resolve()), classes, [r["source"] for r in rows],
                      [str(p / r["path"]) for r in rows], np.array([index[r["label"]] for r in rows], dtype=np.int64),
                      card=card, noise=noise)


def sample_seed(seed: int, key: str, epoch: int | None = None) -> int:
    """The one seed of an image: ``derive_seed(seed, key)`` for evaluation (as ``dpcal simulate``),
    with the epoch mixed in for training.

    Examples
    --------
    >>> from dpcal.sim.layout import derive_seed
    >>> sample_seed(0, "a/b.JPEG") == derive_seed(0, "a/b.JPEG")
    True
    >>> sample_seed(0, "a/b.JPEG", 0) != sample_seed(0, "a/b.JPEG", 1)
    True
    """
    from dpcal.sim.layout import derive_seed

    return derive_seed(seed, key if epoch is None else f"{key}#epoch{int(epoch)}")


class ImageDataset(torch.utils.data.Dataset):
    """Clean images of a :class:`DataSource`, cropped and resized by the simulator's rules.

    Parameters
    ----------
    source : DataSource (kind ``images``)
    size : int
    crop : {"train", "eval"}
    sim_mode : {"reference", "realistic"}
        Crop/resize rules (:mod:`dpcal.sim.geometry`).
    tone : {"none", "gamma", "unprocess"}
        The linearisation's pointwise tone curve, applied at decode time (see
        :func:`dpcal.sim.geometry.load_image`).
    seed : int
    epoch : int or None
        ``None`` for evaluation seeds; set :attr:`epoch` before each training epoch.

    Items are ``(image (3, H, W) float32, label, seed)``. Unreadable images raise
    :class:`~dpcal.errors.BadInputError` naming the file (training data should be clean: run
    ``dpcal simulate`` once to list and skip bad files).
    """

    def __init__(self, source: DataSource, size: int, crop: str, sim_mode: str, tone: str, seed: int,
                 epoch: int | None = None):
        self.source, self.size, self.crop, self.sim_mode, self.tone, self.seed = source, size, crop, sim_mode, tone, seed
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int):
        from dpcal.sim.geometry import ImageSkip, load_image

        key = self.source.keys[i]
        s = sample_seed(self.seed, key, self.epoch)
        try:
            img, _ = load_image(self.source.paths[i], self.size, mode=self.sim_mode, crop=self.crop,
                                rng=np.random.default_rng([s, 1]), tone=self.tone)
        except ImageSkip as e:
            raise BadInputError(f"{self.source.paths[i]}: {e}") from None
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))), int(self.source.labels[i]), s


class MosaicDataset(torch.utils.data.Dataset):
    """Mosaics of a ``dpcal simulate`` folder: ``(mosaic (1, H, W) float32, alpha (4), sigma (4), lux, label, seed)``."""

    def __init__(self, source: DataSource):
        if source.kind != "simulated":
            raise ValueError("MosaicDataset needs a simulated source")
        self.source = source
        self.levels = source.card["settings"].get("dng_levels")

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int):
        path = self.source.paths[i]
        if path.lower().endswith(".dng"):
            from dpcal.io.raw import read_raw

            m = read_raw(path).normalized()
        else:
            import cv2

            a = cv2.imread(path, cv2.IMREAD_UNCHANGED)
            if a is None or a.dtype != np.uint16 or a.ndim != 2:
                raise BadInputError(f"{path}: not a 16-bit single-channel mosaic written by `dpcal simulate`")
            m = a.astype(np.float32) / 65535.0
        n = self.source.noise[i]
        from dpcal.sim.layout import derive_seed

        return (torch.from_numpy(np.ascontiguousarray(m[None], dtype=np.float32)), torch.from_numpy(n[:4].astype(np.float32)),
                torch.from_numpy(n[4:8].astype(np.float32)), float(n[8]), int(self.source.labels[i]),
                derive_seed(int(self.source.card["settings"].get("seed", 0)), self.source.keys[i]))


def collate(batch: Sequence[tuple]) -> dict:
    """Stack :class:`ImageDataset` or :class:`MosaicDataset` items into a batch dict."""
    if len(batch[0]) == 3:
        return {"image": torch.stack([b[0] for b in batch]), "label": torch.tensor([b[1] for b in batch]),
                "seed": torch.tensor([b[2] for b in batch], dtype=torch.int64)}
    return {"mosaic": torch.stack([b[0] for b in batch]), "alpha": torch.stack([b[1] for b in batch]),
            "sigma": torch.stack([b[2] for b in batch]), "lux": torch.tensor([b[3] for b in batch], dtype=torch.float64),
            "label": torch.tensor([b[4] for b in batch]), "seed": torch.tensor([b[5] for b in batch], dtype=torch.int64)}


class SimulateCollate:
    """Collate clean images and simulate them with the camera model (in the loader workers).

    Picklable: the simulator is built lazily in each process from ``profile`` and ``sim``
    (:class:`~dpcal.sim.config.SimConfig` fields). Each image's noise comes from its own seed,
    so batches do not depend on the number of workers or the batch size.
    """

    def __init__(self, profile: dict | str, sim: dict, lux=None):
        self.profile, self.sim, self.lux = profile, sim, lux
        self._model = None

    def simulator(self):
        if self._model is None:
            from dpcal.profile import Profile, load_profile
            from dpcal.sim import Simulator
            from dpcal.sim.config import SimConfig

            prof = Profile.from_dict(self.profile) if isinstance(self.profile, dict) else load_profile(self.profile)
            self._model = Simulator(prof, SimConfig(**{**self.sim, "lux": tuple(self.sim["lux"])}))
        return self._model

    def __getstate__(self):
        return {"profile": self.profile, "sim": self.sim, "lux": self.lux, "_model": None}

    def __call__(self, batch: Sequence[tuple]) -> dict:
        out = collate(batch)
        return simulate_batch(self.simulator(), out, lux=self.lux)


def simulate_batch(sim, batch: dict, lux=None) -> dict:
    """Add ``mosaic``, ``alpha``, ``sigma``, ``lux``, ``linear`` to a clean batch (per-image seeds)."""
    with torch.no_grad():
        res = sim(batch["image"], seeds=[int(s) for s in batch["seed"]], lux=lux, tone_applied=True)
    dt = res.mosaic.dtype
    batch.update(mosaic=res.mosaic, alpha=res.alpha.to(dt), sigma=res.sigma.to(dt), lux=res.lux, linear=res.linear)
    return batch
