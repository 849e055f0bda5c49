"""What each pipeline hands its classifier, for a few images (the paper's Figure 5)."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["make_panel"]

DISPLAY_GAMMA = 1 / 2.2


def _display(x: torch.Tensor, linear: bool) -> np.ndarray:
    """``(B, 3, H, W)`` -> ``(B, H, W, 3)`` in [0, 1] for display (a 2.2 gamma for linear data)."""
    x = x.detach().float().clamp(0, 1)
    if linear:
        x = x ** DISPLAY_GAMMA
    return x.permute(0, 2, 3, 1).cpu().numpy()


def _first_batches(loader, n: int) -> dict:
    parts: dict[str, list] = {}
    got = 0
    for b in loader:
        for k, v in b.items():
            if torch.is_tensor(v):
                parts.setdefault(k, []).append(v)
        got += len(b["label"])
        if got >= n:
            break
    return {k: torch.cat(v)[:n] for k, v in parts.items()}


def make_panel(models, passes, source, n: int, lux: float | None = None, device=None) -> dict | None:
    """For ``n`` evenly spread images: the clean image (when the data have one), the noisy mosaic
    demosaicked (Malvar-He-Cutler), and each model's stage output
    (:meth:`dpcal.learn.models.Pipeline.stage_output`; a clean-image classifier sees the clean
    image), at the pass of each model with illuminance ``lux`` (default, or when it has none:
    its first pass). See :class:`dpcal.evaluate.run.Evaluation`."""
    from dpcal.learn.data import ImageDataset, collate
    from dpcal.learn.models.conventional import demosaic_mhc

    first = {}
    for p in passes:
        first.setdefault(p.model_index, p)
    if lux is not None:
        for p in passes:
            if isinstance(p.lux, (int, float)) and abs(p.lux - lux) <= 1e-9 * lux:
                first[p.model_index] = p
    if not first:
        return None
    count = min(n, min(len(p.keys) for p in first.values()))
    if count == 0:
        return None
    idx = np.linspace(0, len(first[0].keys) - 1, count).round().astype(int).tolist()
    panel = {"clean": None, "noisy": None, "noisy_lux": None, "stages": {}, "lux": {}, "keys": [first[0].keys[i] for i in idx]}
    with torch.inference_mode():
        for i, m in enumerate(models):
            p = first.get(i)
            if p is None:
                continue
            b = _first_batches(p.make_loader(idx), count)
            if m.input_kind == "rgb":
                panel["stages"][m.name] = _display(b["image"], False)
                if panel["clean"] is None:
                    panel["clean"] = panel["stages"][m.name]
                continue
            linear = m.meta["sim"]["config"].get("linearize", "none") != "none"
            out = m.model.stage_output(*(b[k].to(device) for k in ("mosaic", "alpha", "sigma")))
            panel["stages"][m.name] = _display(out, linear)
            panel["lux"][m.name] = p.label
            if panel["noisy"] is None:
                panel["noisy"] = _display(demosaic_mhc(b["mosaic"], m.pattern), linear)
                panel["noisy_lux"] = p.label
            if panel["clean"] is None and source.kind == "images":
                crop = (m.meta.get("train") or {}).get("sim_mode") or "reference"
                ds = ImageDataset(source, m.size, "eval", crop, "none", 0, None)
                panel["clean"] = _display(collate([ds[j] for j in idx])["image"], False)
    return panel
