"""Import PSFs in the Dirty Pixels reference code's MATLAB format into a :class:`PSFField`.

The format: a ``.mat`` file with a struct array ``bloc`` whose field ``PSF`` holds one
``h x w x 3`` (RGB) kernel per image block of 256 x 256 pixels. A 2-D struct array is laid out
like the blocks (rows = block rows); a 1-D one needs the grid (``grid`` or ``image_size``) and is
read row by row (x fastest) unless ``order="column"`` (MATLAB's linear order).

Conventions applied: negative values are clipped, each channel is normalised to sum 1, kernels
are padded to an odd square with MATLAB's centre (index ``floor(h/2)``, that of ``conv2(...,
'same')``) moved to the centre, and kept as true convolution kernels (``flip=True`` if a file
holds correlation kernels). Nodes sit at the block centres; G becomes both Gr and Gb.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dpcal.cfa import PLANES
from dpcal.errors import BadInputError
from dpcal.physics.optics import PSFField


def _odd_square(k: np.ndarray) -> np.ndarray:
    """Pad an ``h x w`` kernel to an odd square, MATLAB's centre (floor(d/2)) to the middle."""
    h, w = k.shape
    S = max(h, w)
    S += 1 - S % 2
    out = np.zeros((S, S), np.float64)
    oy = (S - 1) // 2 - h // 2
    ox = (S - 1) // 2 - w // 2
    out[oy : oy + h, ox : ox + w] = k
    return out


def import_bloc_mat(
    path: str | os.PathLike,
    *,
    image_size: tuple[int, int] | None = None,
    block: int = 256,
    grid: tuple[int, int] | None = None,
    order: str = "row",
    channels: str = "RGB",
    flip: bool = False,
) -> PSFField:
    """Read a reference-code ``bloc`` PSF file.

    Parameters
    ----------
    path : path-like
        The ``.mat`` file (MATLAB v5/v7; v7.3/HDF5 files are not supported by SciPy).
    image_size : (width, height), optional
        Image the blocks tile; sets the sensor size and the centres of partial edge blocks.
    block : int
        Block size in pixels (256 in the reference code).
    grid : (gx, gy), optional
        Block grid for a 1-D struct array (else from ``image_size``).
    order : {"row", "column"}
        Linear order of a 1-D struct array: row by row (x fastest) or MATLAB's column order.
    channels : str
        Channel order of the kernels' third axis (``"RGB"`` or ``"BGR"``).
    flip : bool
        Rotate kernels by 180 degrees (for files holding correlation kernels).

    Returns
    -------
    PSFField
        Planes ``R, Gr, Gb, B``; ``meta["source"]`` records the file.

    Raises
    ------
    BadInputError
        Not a readable .mat, no ``bloc`` with ``PSF``, inconsistent kernel shapes, or a
        channel without positive mass.

    Examples
    --------
    >>> import tempfile, os, numpy as np, scipy.io
    >>> k = np.zeros((4, 6, 3)); k[2, 3] = 1.0; k[2, 4, 0] = -0.1    # even-sized, a negative
    >>> bloc = np.empty((1, 2), dtype=[("PSF", object)])
    >>> bloc[0, 0]["PSF"] = k; bloc[0, 1]["PSF"] = k
    >>> p = os.path.join(tempfile.mkdtemp(), "psf.mat"); scipy.io.savemat(p, {"bloc": bloc})
    >>> f = import_bloc_mat(p)
    >>> f.psf.shape, f.node_xy[0, 1].tolist(), float(f.psf[0, 0, 0, 3, 3])
    ((1, 2, 4, 7, 7), [383.5, 127.5], 1.0)
    """
    import scipy.io

    p = Path(path)
    if not p.is_file():
        raise BadInputError(f"{p}: no such file")
    try:
        m = scipy.io.loadmat(str(p), squeeze_me=False, struct_as_record=True)
    except (ValueError, NotImplementedError, OSError) as e:
        raise BadInputError(f"{p}: not a readable MATLAB file ({e}); v7.3 files must be re-saved with -v7") from None
    if "bloc" not in m:
        found = ", ".join(k for k in m if not k.startswith("__")) or "nothing"
        raise BadInputError(f"{p}: no struct array 'bloc' (found {found})")
    bloc = m["bloc"]
    if bloc.dtype.names is None or "PSF" not in bloc.dtype.names:
        raise BadInputError(f"{p}: 'bloc' has no field PSF")
    if order not in ("row", "column"):
        raise BadInputError(f"order must be 'row' or 'column', got {order!r}")
    if sorted(channels.upper()) != ["B", "G", "R"]:
        raise BadInputError(f"channels must be a permutation of RGB, got {channels!r}")
    arr = bloc["PSF"]
    if arr.ndim == 2 and min(arr.shape) > 1:
        gy, gx = arr.shape
        items = [[arr[j, i] for i in range(gx)] for j in range(gy)]
    else:
        flat = arr.ravel(order="F" if arr.ndim == 2 and arr.shape[0] > 1 else "C")
        n = len(flat)
        if grid is None:
            if image_size is None:
                gx, gy = n, 1
            else:
                gx, gy = -(-image_size[0] // block), -(-image_size[1] // block)
        else:
            gx, gy = grid
        if gx * gy != n:
            raise BadInputError(f"{p}: {n} blocks do not fill a {gx}x{gy} grid; give grid= or image_size=")
        items = [[None] * gx for _ in range(gy)]
        for k, v in enumerate(flat):
            j, i = divmod(k, gx) if order == "row" else (k % gy, k // gy)
            items[j][i] = v
    kernels = []
    size = 0
    for j in range(gy):
        row = []
        for i in range(gx):
            k = np.asarray(items[j][i], dtype=np.float64)
            while k.dtype == object or (k.ndim > 3 and 1 in k.shape):
                k = np.squeeze(k)
                if k.dtype == object:
                    k = np.asarray(k.item(), dtype=np.float64)
            if k.ndim != 3 or k.shape[2] != 3:
                raise BadInputError(f"{p}: block ({j}, {i}) PSF has shape {k.shape}; expected h x w x 3")
            chans = []
            for name in "RGB":
                c = k[:, :, channels.upper().index(name)]
                c = np.maximum(np.nan_to_num(c, nan=0.0), 0)
                tot = c.sum()
                if not tot > 0:
                    raise BadInputError(f"{p}: block ({j}, {i}) channel {name} has no positive PSF mass")
                c = _odd_square(c / tot)
                chans.append(c[::-1, ::-1] if flip else c)
            size = max(size, chans[0].shape[0])
            row.append(chans)
        kernels.append(row)
    psf = np.zeros((gy, gx, 4, size, size), np.float32)
    for j in range(gy):
        for i in range(gx):
            r, g, b = kernels[j][i]
            for c, kern in zip(range(4), (r, g, g, b)):
                o = (size - kern.shape[0]) // 2
                psf[j, i, c, o : o + kern.shape[0], o : o + kern.shape[0]] = kern
    if image_size is not None:
        w, h = int(image_size[0]), int(image_size[1])
    else:
        w, h = gx * block, gy * block
    xs = np.array([(i * block + min((i + 1) * block, w) - 1) / 2 for i in range(gx)], float)
    ys = np.array([(j * block + min((j + 1) * block, h) - 1) / 2 for j in range(gy)], float)
    node = np.stack(np.meshgrid(xs, ys), -1)
    return PSFField(psf, node, PLANES, (w, h), {"source": str(p), "format": "dirtypixels-matlab-bloc",
                                                "block": block, "flipped": flip})
