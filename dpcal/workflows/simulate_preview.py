"""A picture of what the simulator does: clean image, mosaic, and the noisy result at each light
level after a simple (bilinear) demosaic, one row per example image."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from dpcal.cfa import demosaic_bilinear
from dpcal.io.atomic import write_bytes_atomic
from dpcal.sim.geometry import ImageSkip, load_image

__all__ = ["preview_lux_levels", "render_preview", "preview_dataset"]


def preview_lux_levels(lux: tuple[float, float]) -> list[float]:
    """The light levels a preview shows: the one lux, or low / geometric middle / high.

    Examples
    --------
    >>> preview_lux_levels((2.0, 200.0))
    [2.0, 20.0, 200.0]
    """
    lo, hi = lux
    if hi <= lo:
        return [lo]
    return [lo, float(f"{np.sqrt(lo * hi):.3g}"), hi]


def _display(rgb, sim, res, i: int) -> np.ndarray:
    """Linear simulator colours -> displayable sRGB (H, W, 3) float in [0, 1]."""
    import torch

    from dpcal.physics.color import UnprocessParams, forward_tone, reprocess

    x = torch.as_tensor(rgb).permute(2, 0, 1)[None].to(torch.float32)
    method = sim.config.linearize
    if method == "gamma":
        x = forward_tone(x, method)
    elif method == "unprocess":
        p = res.unprocess
        one = UnprocessParams(p.rgb2cam[i : i + 1], p.rgb_gain[i : i + 1], p.red_gain[i : i + 1], p.blue_gain[i : i + 1])
        x = reprocess(x.clamp(0, 1), one)
    return x[0].permute(1, 2, 0).clamp(0, 1).numpy()


def render_preview(images, sim, lux_levels: Sequence[float], seeds: Sequence[int], *, scale: int = 2,
                   labels: Sequence[str] | None = None, tone_applied: bool = False) -> np.ndarray:
    """Render the preview grid as an 8-bit RGB image.

    Parameters
    ----------
    images : Tensor (B, 3, H, W)
        Clean sRGB inputs in [0, 1].
    sim : Simulator
    lux_levels : sequence of float
    seeds : sequence of int
        Per-image seeds (the same image gets the same unprocessing at every light level).
    scale : int
        Nearest-neighbour enlargement, so that single CFA sites stay visible.
    labels : sequence of str, optional
        Row labels.
    tone_applied : bool
        ``images`` already went through the inverse tone curve (as ``load_image(tone=...)``
        returns them); the clean column then shows them through the forward curve.

    Returns
    -------
    ndarray (rows, cols, 3), uint8
        Columns: clean, mosaic (the noiseless CFA samples in their colours), then the noisy
        mosaic demosaicked (``dpcal.cfa.demosaic_bilinear``) at each light level, shown through
        the inverse of the linearisation.
    """
    import cv2

    from dpcal.physics.color import forward_tone

    b, _, h, w = images.shape
    results = [sim(images, seeds=seeds, lux=lx, tone_applied=tone_applied) for lx in lux_levels]
    clean = forward_tone(images, sim.config.linearize) if tone_applied else images
    titles = ["clean", "mosaic"] + [f"{lx:g} lux" for lx in lux_levels]
    rows = []
    for i in range(b):
        tiles = [clean[i].permute(1, 2, 0).clamp(0, 1).numpy()]
        r0 = results[0]
        clean3 = (r0.clean[i : i + 1] * _mask(r0.pattern, h, w))[0].permute(1, 2, 0).numpy()
        tiles.append(_display(clean3, sim, r0, i))
        for res in results:
            rgb = demosaic_bilinear(res.mosaic[i, 0].detach().cpu().numpy(), res.pattern)
            tiles.append(_display(rgb, sim, res, i))
        rows.append(np.concatenate([np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=1.0) for t in tiles], 1))
    grid = np.concatenate(rows, 0)
    grid = (np.clip(grid, 0, 1) * 255 + 0.5).astype(np.uint8)
    grid = np.repeat(np.repeat(grid, scale, 0), scale, 1)
    # Header with column titles (and row labels on the left, if given).
    tile_w = (w + 4) * scale
    head = np.full((28, grid.shape[1], 3), 255, np.uint8)
    for j, t in enumerate(titles):
        cv2.putText(head, t, (j * tile_w + 6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    out = np.concatenate([head, grid], 0)
    if labels:
        tile_h = (h + 4) * scale
        for i, lab in enumerate(labels[:b]):
            cv2.putText(out, str(lab)[:24], (6, 28 + i * tile_h + tile_h - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                        (255, 255, 255), 1, cv2.LINE_AA)
    return out


def _mask(pattern: str, h: int, w: int):
    from dpcal.physics.cfa import cfa_mask

    return cfa_mask(pattern, h, w)[None]


def write_png_rgb(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write an 8-bit RGB image as PNG, atomically."""
    import cv2


    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:  # pragma: no cover
        raise OSError("PNG encoding failed")
    write_bytes_atomic(path, buf.tobytes())


def preview_dataset(dst, path, *, source, task_cfg, n: int = 4) -> None:
    """Preview of the first ``n`` usable images of a dataset run (same crops and seeds)."""
    import torch

    from dpcal.sim.simulator import Simulator

    sim = Simulator(task_cfg["profile"], task_cfg["sim"], psf_field=task_cfg.get("psf_field"))
    imgs, seeds, labels = [], [], []
    for it in source.items:
        try:
            img, _ = load_image(it.source, task_cfg["size"], mode=task_cfg["mode"], crop=task_cfg["crop"],
                                rng=np.random.default_rng([it.seed, 1]), min_size=task_cfg["min_size"],
                                tone=sim.config.linearize)
        except ImageSkip:
            continue
        imgs.append(img.transpose(2, 0, 1))
        seeds.append(it.seed)
        labels.append(it.label)
        if len(imgs) == n:
            break
    if not imgs:
        return
    x = torch.from_numpy(np.stack(imgs))
    with torch.no_grad():
        grid = render_preview(x, sim, preview_lux_levels(sim.config.lux), seeds, labels=labels, tone_applied=True)
    write_png_rgb(Path(path), grid)
