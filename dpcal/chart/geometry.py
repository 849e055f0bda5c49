"""Where a chart point lands on the sensor: a homography plus lens distortion.

Chart coordinates are chart pixels (integers on pixel edges, see :mod:`dpcal.chart.spec`);
sensor coordinates are full-sensor pixels with pixel *centres* on integers. The model
(Brown-Conrady, as in OpenCV's camera model but written out here)::

    u = H [X, Y, 1]                         (undistorted sensor position, homogeneous)
    n = (u - c) / R                         (c: distortion centre, R: half-diagonal)
    d = n (1 + k1 |n|^2 + k2 |n|^4) + tangential(p1, p2)
    x = c + R d

:func:`fit_lens_mapping` fits it to point correspondences (Levenberg-Marquardt, robust loss),
and :func:`pose_mapping` builds one from a camera pose for rendering synthetic captures.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dpcal.errors import FitError

DISTORTION_PARAMS = ("k1", "k2", "p1", "p2")


@dataclasses.dataclass
class LensMapping:
    """Chart -> sensor mapping: homography ``H`` then radial/tangential distortion.

    Attributes
    ----------
    H : ndarray (3, 3)
        Chart pixels -> undistorted sensor pixels.
    image_size : (width, height)
        Sensor size in pixels (sets the default distortion centre and the radius ``R``).
    k1, k2, p1, p2 : float
        Distortion coefficients in units of the half-diagonal ``R``.
    centre : (cx, cy) or None
        Distortion centre; default the image centre ``((W-1)/2, (H-1)/2)``.

    Examples
    --------
    >>> m = LensMapping(np.eye(3), (101, 81), k1=-0.05)
    >>> p = np.array([[10.0, 20.0], [90.0, 70.0]])
    >>> bool(np.allclose(m.inverse(m.forward(p)), p, atol=1e-9))
    True
    """

    H: np.ndarray
    image_size: tuple[int, int]
    k1: float = 0.0
    k2: float = 0.0
    p1: float = 0.0
    p2: float = 0.0
    centre: tuple[float, float] | None = None

    def __post_init__(self):
        self.H = np.asarray(self.H, float).reshape(3, 3)
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))

    @property
    def c(self) -> np.ndarray:
        if self.centre is not None:
            return np.asarray(self.centre, float)
        w, h = self.image_size
        return np.array([(w - 1) / 2, (h - 1) / 2])

    @property
    def R(self) -> float:
        w, h = self.image_size
        return 0.5 * float(np.hypot(w, h))

    @property
    def has_distortion(self) -> bool:
        return any(v != 0 for v in (self.k1, self.k2, self.p1, self.p2))

    # ------------------------------------------------------------------------------------
    def homography(self, P: np.ndarray) -> np.ndarray:
        P = np.asarray(P, float)
        h = self.H
        x, y = P[..., 0], P[..., 1]
        w = h[2, 0] * x + h[2, 1] * y + h[2, 2]
        return np.stack([(h[0, 0] * x + h[0, 1] * y + h[0, 2]) / w, (h[1, 0] * x + h[1, 1] * y + h[1, 2]) / w], -1)

    def distort(self, u: np.ndarray) -> np.ndarray:
        if not self.has_distortion:
            return np.asarray(u, float)
        c, R = self.c, self.R
        n = (np.asarray(u, float) - c) / R
        nx, ny = n[..., 0], n[..., 1]
        r2 = nx * nx + ny * ny
        rad = 1 + self.k1 * r2 + self.k2 * r2 * r2
        dx = nx * rad + 2 * self.p1 * nx * ny + self.p2 * (r2 + 2 * nx * nx)
        dy = ny * rad + self.p1 * (r2 + 2 * ny * ny) + 2 * self.p2 * nx * ny
        return np.stack([c[0] + R * dx, c[1] + R * dy], -1)

    def undistort(self, x: np.ndarray, iterations: int = 8) -> np.ndarray:
        """Invert :meth:`distort` (Newton iterations; exact to ~1e-9 px for usual lenses)."""
        x = np.asarray(x, float)
        if not self.has_distortion:
            return x
        c, R = self.c, self.R
        t = (x - c) / R
        n = t.copy()
        k1, k2, p1, p2 = self.k1, self.k2, self.p1, self.p2
        for _ in range(iterations):
            nx, ny = n[..., 0], n[..., 1]
            r2 = nx * nx + ny * ny
            rad = 1 + k1 * r2 + k2 * r2 * r2
            drad = 2 * k1 + 4 * k2 * r2  # d rad / d (nx) = drad * nx
            fx = nx * rad + 2 * p1 * nx * ny + p2 * (r2 + 2 * nx * nx) - t[..., 0]
            fy = ny * rad + p1 * (r2 + 2 * ny * ny) + 2 * p2 * nx * ny - t[..., 1]
            a = rad + nx * drad * nx + 2 * p1 * ny + 6 * p2 * nx
            b = nx * drad * ny + 2 * p1 * nx + 2 * p2 * ny
            cc = ny * drad * nx + 2 * p1 * nx + 2 * p2 * ny
            d = rad + ny * drad * ny + 6 * p1 * ny + 2 * p2 * nx
            det = a * d - b * cc
            n = n - np.stack([(d * fx - b * fy) / det, (a * fy - cc * fx) / det], -1)
        return c + R * n

    def forward(self, P: np.ndarray) -> np.ndarray:
        """Chart points ``(..., 2)`` -> sensor points ``(..., 2)``."""
        return self.distort(self.homography(P))

    def inverse(self, x: np.ndarray) -> np.ndarray:
        """Sensor points ``(..., 2)`` -> chart points ``(..., 2)``."""
        u = self.undistort(x)
        hi = np.linalg.inv(self.H)
        ux, uy = u[..., 0], u[..., 1]
        w = hi[2, 0] * ux + hi[2, 1] * uy + hi[2, 2]
        return np.stack([(hi[0, 0] * ux + hi[0, 1] * uy + hi[0, 2]) / w, (hi[1, 0] * ux + hi[1, 1] * uy + hi[1, 2]) / w], -1)

    def scale_at(self, P: np.ndarray) -> np.ndarray:
        """Sensor pixels per chart pixel at chart points (square root of the Jacobian's determinant)."""
        P = np.asarray(P, float)
        e = 0.5
        fx = (self.forward(P + [e, 0]) - self.forward(P - [e, 0])) / (2 * e)
        fy = (self.forward(P + [0, e]) - self.forward(P - [0, e])) / (2 * e)
        return np.sqrt(np.abs(fx[..., 0] * fy[..., 1] - fx[..., 1] * fy[..., 0]))

    # ------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"H": self.H.tolist(), "image_size": list(self.image_size), "k1": self.k1, "k2": self.k2,
                "p1": self.p1, "p2": self.p2, "centre": list(self.c)}

    @classmethod
    def from_dict(cls, d: dict) -> "LensMapping":
        return cls(np.asarray(d["H"]), tuple(d["image_size"]), d.get("k1", 0.0), d.get("k2", 0.0),
                   d.get("p1", 0.0), d.get("p2", 0.0), tuple(d["centre"]) if d.get("centre") else None)


@dataclasses.dataclass
class MappingFit:
    """Result of :func:`fit_lens_mapping`.

    Attributes
    ----------
    mapping : LensMapping
    residuals : ndarray (n, 2)
        Measured minus model positions (sensor px).
    inliers : ndarray of bool (n,)
    rms_px : float
        RMS of the inlier residual vector lengths (sensor px).
    model_rms_px : float
        Standard error of the fitted model's positions, averaged over the inlier points: how
        well the *model* is known, as opposed to how noisy a single point is.
    """

    mapping: LensMapping
    residuals: np.ndarray
    inliers: np.ndarray
    rms_px: float
    model_rms_px: float


def dlt_homography(P: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Normalised DLT homography P -> x (at least 4 points)."""

    def norm(p):
        m = p.mean(0)
        s = np.sqrt(2) / max(np.mean(np.linalg.norm(p - m, axis=1)), 1e-12)
        return np.array([[s, 0, -s * m[0]], [0, s, -s * m[1]], [0, 0, 1]])

    Tp, Tx = norm(P), norm(x)
    Pn = (Tp @ np.c_[P, np.ones(len(P))].T).T
    xn = (Tx @ np.c_[x, np.ones(len(x))].T).T
    rows = []
    for (X, Y, _), (u, v, _) in zip(Pn, xn):
        rows.append([-X, -Y, -1, 0, 0, 0, u * X, u * Y, u])
        rows.append([0, 0, 0, -X, -Y, -1, v * X, v * Y, v])
    _, _, vt = np.linalg.svd(np.asarray(rows))
    Hn = vt[-1].reshape(3, 3)
    H = np.linalg.inv(Tx) @ Hn @ Tp
    return H / H[2, 2]


def fit_lens_mapping(
    chart_pts: np.ndarray,
    image_pts: np.ndarray,
    image_size: tuple[int, int],
    *,
    distortion: tuple[str, ...] = ("k1", "k2"),
    init: LensMapping | None = None,
    outlier_px: float | None = None,
) -> MappingFit:
    """Fit a :class:`LensMapping` to correspondences (robust Levenberg-Marquardt).

    Parameters
    ----------
    chart_pts, image_pts : ndarray (n, 2)
        Chart positions (chart px) and their measured sensor positions (sensor px).
    image_size : (width, height)
    distortion : tuple of str
        Which of ``k1, k2, p1, p2`` to fit (the others stay 0, or at ``init``'s values).
    init : LensMapping, optional
        Starting point; default a DLT homography without distortion.
    outlier_px : float, optional
        Points whose residual exceeds this (default: 6 robust standard deviations, at least
        0.2 px) are dropped and the model refitted.

    Returns
    -------
    MappingFit

    Raises
    ------
    FitError
        Fewer points than parameters (plus 4), or a degenerate configuration.

    Examples
    --------
    >>> true = LensMapping(np.array([[1.1, 0.05, 20], [-0.04, 1.05, 10], [1e-5, 2e-5, 1]]), (400, 300), k1=-0.08)
    >>> P = np.stack(np.meshgrid(np.arange(0, 340, 40.0), np.arange(0, 260, 40.0)), -1).reshape(-1, 2)
    >>> fit = fit_lens_mapping(P, true.forward(P), (400, 300))
    >>> round(fit.mapping.k1, 4), fit.rms_px < 1e-6
    (-0.08, True)
    """
    from scipy.optimize import least_squares

    P = np.asarray(chart_pts, float).reshape(-1, 2)
    x = np.asarray(image_pts, float).reshape(-1, 2)
    dist = tuple(distortion)
    for d in dist:
        if d not in DISTORTION_PARAMS:
            raise ValueError(f"unknown distortion parameter {d!r}; use {DISTORTION_PARAMS}")
    n_par = 8 + len(dist)
    if len(P) < n_par // 2 + 4:
        raise FitError(f"only {len(P)} chart points found; the camera model needs at least {n_par // 2 + 4}")
    if init is None:
        H0 = dlt_homography(P, x)
        init = LensMapping(H0, image_size)
    # Normalise coordinates so the 8 homography entries are of similar size.
    pm, ps = P.mean(0), max(P.std(), 1e-9)
    Tp = np.array([[1 / ps, 0, -pm[0] / ps], [0, 1 / ps, -pm[1] / ps], [0, 0, 1]])
    w, h = image_size
    Tx = np.array([[2 / w, 0, -1], [0, 2 / w, -h / w], [0, 0, 1]])
    Hn0 = Tx @ init.H @ np.linalg.inv(Tp)
    Hn0 = Hn0 / Hn0[2, 2]
    base = {k: getattr(init, k) for k in DISTORTION_PARAMS}

    def unpack(v):
        Hn = np.append(v[:8], 1.0).reshape(3, 3)
        H = np.linalg.inv(Tx) @ Hn @ Tp
        vals = dict(base)
        vals.update({k: float(v[8 + i]) for i, k in enumerate(dist)})
        return LensMapping(H / H[2, 2], image_size, centre=init.centre, **vals)

    def resid(v, Pi, xi):
        return (unpack(v).forward(Pi) - xi).ravel()

    v0 = np.concatenate([Hn0.ravel()[:8], [base[k] for k in dist]])
    keep = np.ones(len(P), bool)
    for _ in range(3):
        if keep.sum() < n_par // 2 + 4:
            raise FitError(f"only {int(keep.sum())} chart points agree with one camera model; "
                           "check the chart spec and that the chart is flat")
        sol = least_squares(resid, v0, args=(P[keep], x[keep]), method="lm" if keep.sum() * 2 > n_par else "trf",
                            x_scale="jac", max_nfev=200 * n_par)
        v0 = sol.x
        r = (unpack(v0).forward(P) - x)
        d = np.linalg.norm(r, axis=1)
        # Residual lengths of 2-D Gaussian errors are Rayleigh: median = 1.1774 sigma.
        sigma = np.median(d[keep]) / 1.1774
        thr = outlier_px if outlier_px is not None else max(0.2, 6 * sigma)
        new = d < thr
        if np.array_equal(new, keep):
            break
        keep = new
    m = unpack(v0)
    r = m.forward(P) - x
    d = np.linalg.norm(r[keep], axis=1)
    rms = float(np.sqrt(np.mean(d**2)))
    # Model uncertainty: J (J^T J)^-1 J^T sigma^2 averaged over points.
    J = sol.jac
    dof = max(1, 2 * int(keep.sum()) - len(v0))
    s2 = float(np.sum(r[keep] ** 2) / dof)
    try:
        cov = np.linalg.pinv(J.T @ J) * s2
        lev = np.einsum("ij,jk,ik->i", J, cov, J)
        model_rms = float(np.sqrt(np.mean(lev.reshape(-1, 2).sum(1))))
    except np.linalg.LinAlgError:
        model_rms = float("nan")
    return MappingFit(m, r, keep, rms, model_rms)


def pose_mapping(
    chart_size: tuple[float, float],
    image_size: tuple[int, int],
    *,
    fill: float = 0.85,
    rotate_deg: float = 0.0,
    tilt_deg: tuple[float, float] = (0.0, 0.0),
    shift: tuple[float, float] = (0.0, 0.0),
    focal: float | None = None,
    k1: float = 0.0,
    k2: float = 0.0,
    p1: float = 0.0,
    p2: float = 0.0,
) -> LensMapping:
    """The mapping of a pinhole camera looking at a (tilted, rotated) flat chart.

    Parameters
    ----------
    chart_size : (width, height)
        Chart size in chart pixels.
    image_size : (width, height)
        Sensor size in pixels.
    fill : float
        Fraction of the image width (or height, whichever binds) the untilted chart spans.
    rotate_deg : float
        Rotation of the chart about the optical axis.
    tilt_deg : (about_x, about_y)
        Tilts of the chart plane (perspective), degrees.
    shift : (dx, dy)
        Offset of the chart centre from the image centre, as fractions of the image size.
    focal : float, optional
        Focal length in pixels (default: the image diagonal, a normal lens).
    k1, k2, p1, p2 : float
        Lens distortion (see :class:`LensMapping`).

    Examples
    --------
    >>> m = pose_mapping((300, 200), (640, 480), fill=0.5)
    >>> np.round(m.forward(np.array([[150.0, 100.0]])), 3)
    array([[319.5, 239.5]])
    """
    cw, ch = chart_size
    w, h = image_size
    f = float(focal or np.hypot(w, h))
    scale = fill * min(w / cw, h / ch)  # sensor px per chart px at the chart's distance
    Z = f / scale
    ax, ay = np.deg2rad(tilt_deg[0]), np.deg2rad(tilt_deg[1])
    rz = np.deg2rad(rotate_deg)
    Rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    Ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    Rz = np.array([[np.cos(rz), -np.sin(rz), 0], [np.sin(rz), np.cos(rz), 0], [0, 0, 1]])
    Rm = Rz @ Ry @ Rx
    corners = np.array([[0, 0], [cw, 0], [cw, ch], [0, ch]], float)
    local = np.c_[corners - [cw / 2, ch / 2], np.zeros(4)]
    cx, cy = (w - 1) / 2, (h - 1) / 2
    t = np.array([shift[0] * w / scale, shift[1] * h / scale, Z])
    cam = local @ Rm.T + t
    img = np.stack([f * cam[:, 0] / cam[:, 2] + cx, f * cam[:, 1] / cam[:, 2] + cy], -1)
    H = dlt_homography(corners, img)
    return LensMapping(H, image_size, k1=k1, k2=k2, p1=p1, p2=p2)
