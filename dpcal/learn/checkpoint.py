"""Checkpoints: everything needed to resume a run exactly, or to evaluate its model alone.

A checkpoint is a ``torch.save`` dict (loaded with ``weights_only=True``: plain tensors and
containers, no pickled code)::

    format, version        "dpcal-checkpoint", 1
    model                  {"name", "kwargs"}: rebuilds the architecture (dpcal.learn.models.build_model)
    input                  "raw" (mosaic + per-plane alpha/sigma) or "rgb" (clean images)
    state_dict             the model's weights
    classes                labels in class-index order
    sim                    {"profile": the camera profile document, "config": SimConfig fields}
    train                  the resolved TrainConfig
    step, total_steps      optimiser steps done / planned
    optimizer, scheduler   their state (absent in the final model file)
    rng                    torch's global RNG state
    elapsed_s              training time so far

A run folder ``RUN`` holds ``checkpoints/last.pt`` (rewritten atomically every
``checkpoint_every`` steps) and, when complete, ``model.pt`` (the same without the optimiser
state); ``dpcal eval`` accepts the folder or either file.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from dpcal.errors import BadInputError
from dpcal.io.atomic import atomic_path

FORMAT = "dpcal-checkpoint"
VERSION = 1
LAST = Path("checkpoints") / "last.pt"
FINAL = Path("model.pt")

__all__ = ["FINAL", "LAST", "load_checkpoint", "load_model", "resolve_checkpoint", "save_checkpoint"]


def save_checkpoint(path: str | os.PathLike, doc: dict) -> None:
    """Write ``doc`` atomically (temporary file, then rename)."""
    doc = {"format": FORMAT, "version": VERSION, **doc}
    with atomic_path(path) as tmp:
        torch.save(doc, tmp)


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file, or the one a run folder holds (``model.pt``, else ``checkpoints/last.pt``)."""
    p = Path(path)
    if p.is_dir():
        for cand in (p / FINAL, p / LAST):
            if cand.is_file():
                return cand
        raise BadInputError(f"{p} holds no checkpoint (no {FINAL} or {LAST}); is it a `dpcal train` run folder?")
    if not p.is_file():
        raise BadInputError(f"{p}: no such checkpoint file or run folder")
    return p


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Read and check a checkpoint (file or run folder).

    Raises
    ------
    BadInputError
        Not a dpcal checkpoint, an unknown version, or an unreadable file.
    """
    p = resolve_checkpoint(path)
    try:
        doc = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for truncated or foreign files
        raise BadInputError(f"{p} is not a readable checkpoint ({type(e).__name__}: {str(e)[:120]})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BadInputError(f"{p} is not a dpcal checkpoint")
    if doc.get("version") != VERSION:
        raise BadInputError(f"{p}: checkpoint version {doc.get('version')!r} is not supported (this dpcal reads {VERSION})")
    doc["path"] = str(p)
    return doc


def load_model(path: str | os.PathLike, map_location="cpu"):
    """The model of a checkpoint, in eval mode, and the checkpoint's metadata (without weights).

    Examples
    --------
    >>> import tempfile, os
    >>> from dpcal.learn.models import build_model, model_spec
    >>> m = build_model({"name": "mobilenet_v1", "kwargs": {"num_classes": 3, "width": 0.25}})
    >>> p = os.path.join(tempfile.mkdtemp(), "m.pt")
    >>> save_checkpoint(p, {"model": model_spec(m), "input": "rgb", "state_dict": m.state_dict(),
    ...                     "classes": ["a", "b", "c"]})
    >>> m2, meta = load_model(p)
    >>> meta["classes"], m2.training
    (['a', 'b', 'c'], False)
    """
    from dpcal.learn.models import build_model

    doc = load_checkpoint(path, map_location)
    model = build_model(doc["model"])
    model.load_state_dict(doc["state_dict"])
    model.eval()
    meta = {k: v for k, v in doc.items() if k not in ("state_dict", "optimizer", "scheduler", "rng")}
    return model, meta
