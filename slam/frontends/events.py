"""The event term of tracking: pose updates from events against the last keyframe's brightness.

Model (brightness increment, as in event-based direct tracking): over a short window the events at
a pixel sum to the change of log intensity there, ``E(u) = C · Σ p ≈ ΔL(u)``, and a small camera motion
changes it by ``ΔL(u) ≈ -∇L(u) · Δu`` where ``Δu`` is the pixel flow of the scene point seen at ``u``.
The keyframe (the last tracked RGB-D frame: its colour as log intensity, its depth, its pose) gives
the points, their world positions and ``∇L``; the pose change gives the flow through the depth. For a
left increment ``T ← exp(ξ) T`` (the depth term's parametrisation, ξ = (v, ω) in the world frame)
the residual of one point is

    r = E(u) + ∇L · ∂u/∂p · ∂p/∂ξ · ξ,     p = T⁻¹ X,  ∂p/∂v = -Rᵀ,  ∂p/∂ω = Rᵀ [X]×

linear in ξ, solved in closed form per window (a few robust re-weightings, no re-projection). The
event image and the keyframe are both smoothed with the same Gaussian, which widens the range over
which the linear model holds to about the kernel's size; windows are short (``window_s``) so that
the flow inside one stays within it. Chaining the windows between two depth frames gives high-rate
poses (:meth:`EventOdometry.propagate`): each window starts from the constant-velocity motion of the
last depth frames and the events correct it, against a prior on the correction about the camera
centre (``motion_sigma_*``; the events observe rotation well and translation poorly, so the default
keeps translation close to constant velocity). The last window predicts the next depth frame's pose.

:class:`EventFrontend` (the RGB-D frontend plus this term) hands the tracker that prediction as a
:class:`~slam.core.observation.PosePrior`: the tracker registers the depth points from it and, to guard
against a bad one, also from plain constant velocity, keeping the fit with more inliers; the events'
orientation enters the depth term's normal equations as the prior's term, weighted by the windows' information (covariances added up, translation
marginalised out) against the depth term's residual scale. A window's information counts its independent
observations only (``decorrelate``): the smoothing correlates residuals within a few ``smoothing_px``,
so its thousands of points hold about image area / (4π smoothing_px²) independent ones; counted as
independent they made the prior some 30 times too confident, pulling the depth term's orientation to
the events' where the depth alone was as good. While the depth term reports frames lost
(e.g. too little fitted map in view), the events carry the pose from keyframe to keyframe.

The keyframe's colour is deblurred with the events inside its exposure when the exposure is known
(``exposure_s``; event-based double integral) and normalised to a fixed median (auto-gain), so a dark
frame predicts the same log-intensity gradients as a well-exposed one up to its noise.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import partial

import numpy as np
from pydantic import Field
from scipy.ndimage import gaussian_filter

from slam.core.config import StrictConfig
from slam.core.frames import CameraIntrinsics, EventPacket, Frame, RGBDFrame
from slam.core.geometry import se3_exp, se3_log, skew
from slam.core.observation import MotionHistory, Observation, PosePrior
from slam.core.robust import geman_mcclure_weight
from slam.frontends.rgbd import RgbdFrontend
from slam.map.kernels import jit

log = logging.getLogger(__name__)

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class EventTrackingConfig(StrictConfig):
    """The event term's settings (config section ``events.tracking``)."""

    enabled: bool = Field(
        True,
        description="track with the events whenever frames carry them (an RGB-D source with events.path, or "
        "the demo with source.options.events: true); frames without events are tracked from depth alone "
        "exactly as with false",
    )
    contrast_threshold: float = Field(0.2, gt=0, description="the sensor's contrast threshold C (log units)")
    window_s: float = Field(1.0 / 240.0, gt=0, description="duration of one event window (s)")
    min_events: int = Field(50, ge=1, description="windows with fewer events are merged into the next")
    points: int = Field(3000, ge=50, description="keyframe points (highest log-gradient) per window")
    smoothing_px: float = Field(8.0, ge=0, description="Gaussian sigma for the event image and keyframe (px)")
    binning: int = Field(
        2, ge=1, description="the event image is smoothed on a grid this many times coarser (speed)"
    )
    gradient_min: float = Field(0.01, ge=0, description="points need |∇L| above this (log units / px)")
    log_eps: float = Field(0.02, gt=0, description="L = log(I / 255 + eps) of the keyframe's grey image")
    target_median: float = Field(
        100.0, gt=0, description="the keyframe's grey median is scaled to this (auto-gain)"
    )
    robust_scale: float = Field(
        0.1, gt=0, description="Geman-McClure scale of the event residual (log units)"
    )
    reweight: int = Field(3, ge=1, description="robust re-weightings per window")
    damping: float = Field(1e-3, ge=0, description="Levenberg-Marquardt damping (relative to the trace)")
    depth_min: float = Field(0.1, ge=0, description="keyframe points need depth above this (m)")
    depth_max: float = Field(4.0, gt=0, description="keyframe points need depth below this (m)")
    prior_weight: float = Field(
        1.0,
        ge=0,
        description="weight of the events' pose prior against the depth term; 0 = initial guess only",
    )
    depth_sigma_m: float = Field(
        0.01, gt=0, description="the depth term's residual scale (m), to weigh the prior"
    )
    check_velocity: bool = Field(
        True, description="also register from the constant-velocity prediction and keep the better fit"
    )
    exposure_s: float = Field(
        0.0,
        ge=0,
        description="the colour camera's exposure (s), ending at the frame's timestamp; > 0: the keyframe is "
        "deblurred with the events inside it (event-based double integral); 0 = used as is",
    )
    deblur_samples: int = Field(8, ge=2, description="time samples of the exposure for deblurring")
    decorrelate: bool = Field(
        True,
        description="weigh the events' prior in the depth term by the independent observations a window "
        "holds: the smoothing correlates neighbouring residuals, so each window's information is scaled by "
        "N_eff / N, N_eff = image area / (4π smoothing_px²); false = every point independent",
    )
    motion_sigma_trans: float = Field(
        0.001, gt=0, description="how far the motion departs from constant velocity, translation (m / √s)"
    )
    motion_sigma_rot: float = Field(
        0.03, gt=0, description="how far the motion departs from constant velocity, rotation (rad / √s)"
    )


def _gaussian_weights(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """One half of scipy's Gaussian kernel (``gaussian_filter1d``): w[0] the centre, w[j] the taps at ±j."""
    radius = int(truncate * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / (sigma * sigma) * x**2)
    return np.ascontiguousarray((phi / phi.sum())[radius:])


@jit
def _reflect(i, n):
    """Index ``i`` into a line of ``n`` extended by mirroring about its ends (scipy's ``reflect`` mode)."""
    i = i % (2 * n)
    return 2 * n - 1 - i if i >= n else i


@jit
def _gaussian_smooth(image, w):
    """Separable Gaussian of the float32 ``image`` with half-kernel ``w``, along axis 0 then axis 1, as
    scipy's ``gaussian_filter`` computes it (each line in float64, the same order of sums, float32 in
    between: bit for bit the same). The inner loops run along rows over views of whole rows (no negative
    indices to wrap), which lets them vectorise: about 3 times scipy's speed."""
    h, wd = image.shape
    r = w.shape[0] - 1
    acc = np.empty(wd)
    tmp = np.empty((h, wd), dtype=np.float32)
    for i in range(h):  # axis 0: rows i ± j, whole rows at a time
        centre = image[i]
        for c in range(wd):
            acc[c] = np.float64(centre[c]) * w[0]
        for j in range(r, 0, -1):
            lo, hi, wj = image[_reflect(i - j, h)], image[_reflect(i + j, h)], w[j]
            for c in range(wd):
                acc[c] += (np.float64(lo[c]) + np.float64(hi[c])) * wj
        row = tmp[i]
        for c in range(wd):
            row[c] = acc[c]
    out = np.empty((h, wd), dtype=np.float32)
    line = np.empty(wd + 2 * r)  # one row with its reflected borders
    for i in range(h):  # axis 1
        for k in range(wd + 2 * r):
            line[k] = tmp[i, _reflect(k - r, wd)]
        centre = line[r : r + wd]
        for c in range(wd):
            acc[c] = centre[c] * w[0]
        for j in range(r, 0, -1):
            lo, hi, wj = line[r - j : r - j + wd], line[r + j : r + j + wd], w[j]
            for c in range(wd):
                acc[c] += (lo[c] + hi[c]) * wj
        row = out[i]
        for c in range(wd):
            row[c] = acc[c]
    return out


def gaussian_smooth(image: np.ndarray, sigma: float) -> np.ndarray:
    """``scipy.ndimage.gaussian_filter(image, sigma)`` of a 2-D float32 image (reflected borders, 4 σ
    truncation), bit for bit, compiled: the event term smooths every window's event image and every
    keyframe, and scipy's smoothing was the largest part of a window's cost once the rest was compiled."""
    if sigma <= 1e-15:  # as scipy: no smoothing
        return image.astype(np.float32)
    return _gaussian_smooth(np.ascontiguousarray(image, dtype=np.float32), _gaussian_weights(sigma))


def event_image_reference(
    x: np.ndarray,
    y: np.ndarray,
    p: np.ndarray,
    width: int,
    height: int,
    contrast: float,
    sigma: float,
    binning: int = 1,
) -> np.ndarray:
    """numpy reference of :func:`event_image`: C · Σ polarity per pixel (float32), smoothed with a Gaussian of ``sigma`` px; with ``binning`` b,
    on a b× coarser grid (each cell the mean over its b×b pixels; ``sigma`` still in full pixels), which
    is b² times cheaper to smooth. Cell (i, j) is centred on pixel (b·j + (b−1)/2, b·i + (b−1)/2)."""
    w, h = -(-width // binning), -(-height // binning)
    xs, ys = x.astype(np.int64), y.astype(np.int64)
    if binning > 1:
        xs, ys = xs // binning, ys // binning
    img = np.bincount(ys * w + xs, weights=p.astype(np.float64), minlength=w * h).reshape(h, w)
    img = (img * (contrast / binning**2)).astype(np.float32)
    return gaussian_filter(img, sigma / binning) if sigma > 0 else img


@jit
def _accumulate_events(x, y, p, w, h, binning, scale):
    """Σ polarity per cell in float64 in the events' order (as ``np.bincount``), × ``scale``, as float32."""
    acc = np.zeros((h, w), dtype=np.float64)
    for i in range(x.shape[0]):
        r, c = np.int64(y[i]) // binning, np.int64(x[i]) // binning
        if r < 0 or r >= h or c < 0 or c >= w:  # unchecked indexing would write outside the image
            raise ValueError("event coordinates outside the event camera's width × height")
        acc[r, c] += np.float64(p[i])
    out = np.empty((h, w), dtype=np.float32)
    for i in range(h):
        for j in range(w):
            out[i, j] = acc[i, j] * scale
    return out


def event_image(
    x: np.ndarray,
    y: np.ndarray,
    p: np.ndarray,
    width: int,
    height: int,
    contrast: float,
    sigma: float,
    binning: int = 1,
) -> np.ndarray:
    """C · Σ polarity per pixel (float32), smoothed with a Gaussian of ``sigma`` px; with ``binning`` b,
    on a b× coarser grid (each cell the mean over its b×b pixels; ``sigma`` still in full pixels), which
    is b² times cheaper to smooth. Cell (i, j) is centred on pixel (b·j + (b−1)/2, b·i + (b−1)/2).
    One compiled pass accumulates the events (no int64 index or float64 weight copies of the window);
    :func:`event_image_reference` is the numpy reference."""
    w, h = -(-width // binning), -(-height // binning)
    img = _accumulate_events(x, y, p, w, h, binning, contrast / binning**2)
    return gaussian_smooth(img, sigma / binning) if sigma > 0 else img


def _sample(image: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear samples at float pixel coordinates inside the image."""
    h, w = image.shape
    u0 = np.clip(np.floor(u).astype(np.int64), 0, w - 2)
    v0 = np.clip(np.floor(v).astype(np.int64), 0, h - 2)
    a, b = u - u0, v - v0
    flat = image.reshape(-1)
    i = v0 * w + u0
    return (flat[i] * (1 - a) + flat[i + 1] * a) * (1 - b) + (flat[i + w] * (1 - a) + flat[i + w + 1] * a) * b


def deblur_reference(
    grey: np.ndarray, events: EventPacket, t_end: float, exposure: float, contrast: float, samples: int = 8
) -> np.ndarray:
    """numpy reference of :func:`deblur`: the sharp image at ``t_end`` from one blurred over (t_end − exposure, t_end] and the events inside
    that exposure (event-based double integral, Pan et al. 2019): with E_j the log change from the
    sample time t_j to t_end, I(t_j) = I(t_end) · exp(−E_j), so I(t_end) = B / mean_j exp(−E_j)."""
    h, w = grey.shape
    t0 = t_end - exposure
    a, b = np.searchsorted(events.t, [t0, t_end], side="right")
    if b <= a:
        return grey
    t = events.t[a:b]
    bins = np.clip(((t - t0) / exposure * samples).astype(np.int64), 0, samples - 1)
    idx = events.y[a:b].astype(np.int64) * w + events.x[a:b].astype(np.int64)
    per_bin = np.bincount(
        bins * (h * w) + idx, weights=events.p[a:b].astype(np.float64), minlength=samples * h * w
    )
    per_bin = per_bin.reshape(samples, h * w) * contrast
    after = np.cumsum(per_bin[::-1], axis=0)[::-1]  # E_j: the events from the start of bin j to t_end
    # sample times at the bins' starts and the exposure's end (E = 0), trapezoid weights
    ex = np.exp(-np.concatenate([after, np.zeros((1, h * w))], axis=0))
    mean = (ex[1:-1].sum(axis=0) + 0.5 * (ex[0] + ex[-1])) / samples
    return (grey.reshape(-1) / mean).reshape(h, w).astype(np.float32)


@jit
def _deblur(grey, x, y, p, t, t0, exposure, samples, contrast):
    """:func:`deblur_reference` in two passes: the events' polarity sums per pixel and time bin (in the
    events' order, as ``np.bincount``), then per pixel the log changes to the exposure's end, their
    exponentials and trapezoid mean; pixels without events keep their value (mean 1) without any."""
    h, w = grey.shape
    per_bin = np.zeros((h * w, samples))
    touched = np.zeros(h * w, dtype=np.bool_)
    for i in range(t.shape[0]):
        r, c = np.int64(y[i]), np.int64(x[i])
        if r < 0 or r >= h or c < 0 or c >= w:  # unchecked indexing would write outside the image
            raise ValueError("event coordinates outside the colour image resized to the event camera")
        k = min(max(np.int64((t[i] - t0) / exposure * samples), 0), samples - 1)
        per_bin[r * w + c, k] += np.float64(p[i])
        touched[r * w + c] = True
    out = grey.copy()
    ex = np.empty(samples)
    for q in range(h * w):
        if not touched[q]:
            continue
        after = 0.0
        for k in range(samples - 1, -1, -1):  # E_k: the events from the start of bin k to t_end
            after += per_bin[q, k] * contrast
            ex[k] = np.exp(-after)
        inner = 0.0
        for k in range(1, samples):
            inner += ex[k]
        mean = (inner + 0.5 * (ex[0] + 1.0)) / samples
        out[q // w, q % w] = np.float64(grey[q // w, q % w]) / mean
    return out


def deblur(
    grey: np.ndarray, events: EventPacket, t_end: float, exposure: float, contrast: float, samples: int = 8
) -> np.ndarray:
    """The sharp image at ``t_end`` from one blurred over (t_end − exposure, t_end] and the events inside
    that exposure (event-based double integral, Pan et al. 2019): with E_j the log change from the
    sample time t_j to t_end, I(t_j) = I(t_end) · exp(−E_j), so I(t_end) = B / mean_j exp(−E_j).
    Compiled (no samples × pixels temporaries); :func:`deblur_reference` is the numpy reference."""
    t0 = t_end - exposure
    a, b = np.searchsorted(events.t, [t0, t_end], side="right")
    if b <= a:
        return grey
    return _deblur(
        np.ascontiguousarray(grey, dtype=np.float32),
        events.x[a:b],
        events.y[a:b],
        events.p[a:b],
        events.t[a:b],
        float(t0),
        float(exposure),
        int(samples),
        float(contrast),
    )


@jit
def _window_rows(
    points, grad, rot, trans, intr4, size, depth_min, image, binning, xi_cv, m, a_out, e_out, inside
):
    """:meth:`EventOdometry.window_system_reference` fused into one pass over the keyframe points, with
    the constant-velocity motion folded into the observations (e + A·xi_cv) and the rows taken to the
    camera-centre parametrisation (A·m); writes the visible points' rows to the front of ``a_out`` and
    ``e_out``, marks them in ``inside`` and returns how many there are."""
    fx, fy, cx, cy = intr4[0], intr4[1], intr4[2], intr4[3]
    width, height = size[0], size[1]
    ih, iw = image.shape
    half = (binning - 1) / 2
    row = np.empty(6)
    n = 0
    for i in range(points.shape[0]):
        dx, dy, dz = points[i, 0] - trans[0], points[i, 1] - trans[1], points[i, 2] - trans[2]
        p0 = dx * rot[0, 0] + dy * rot[1, 0] + dz * rot[2, 0]  # Rᵀ (X - t)
        p1 = dx * rot[0, 1] + dy * rot[1, 1] + dz * rot[2, 1]
        z = dx * rot[0, 2] + dy * rot[1, 2] + dz * rot[2, 2]
        zc = max(z, 1e-6)
        u = fx * p0 / zc + cx
        v = fy * p1 / zc + cy
        inside[i] = z > depth_min and u >= 0 and u <= width - 1 and v >= 0 and v <= height - 1
        if not inside[i]:
            continue
        su, sv = ((u - half) / binning, (v - half) / binning) if binning > 1 else (u, v)
        u0 = min(max(np.int64(np.floor(su)), 0), iw - 2)
        v0 = min(max(np.int64(np.floor(sv)), 0), ih - 2)
        a, b = su - u0, sv - v0
        top = np.float64(image[v0, u0]) * (1 - a) + np.float64(image[v0, u0 + 1]) * a
        bottom = np.float64(image[v0 + 1, u0]) * (1 - a) + np.float64(image[v0 + 1, u0 + 1]) * a
        e = top * (1 - b) + bottom * b
        g0, g1 = grad[i, 0], grad[i, 1]
        gp0, gp1 = g0 * fx / z, g1 * fy / z
        gp2 = -(g0 * fx * p0 + g1 * fy * p1) / z**2
        q0 = gp0 * rot[0, 0] + gp1 * rot[0, 1] + gp2 * rot[0, 2]  # R ∇L·∂u/∂p
        q1 = gp0 * rot[1, 0] + gp1 * rot[1, 1] + gp2 * rot[1, 2]
        q2 = gp0 * rot[2, 0] + gp1 * rot[2, 1] + gp2 * rot[2, 2]
        x0, x1, x2 = points[i, 0], points[i, 1], points[i, 2]
        row[0], row[1], row[2] = -q0, -q1, -q2
        row[3], row[4], row[5] = q1 * x2 - q2 * x1, q2 * x0 - q0 * x2, q0 * x1 - q1 * x0
        for k in range(6):
            e += row[k] * xi_cv[k]
        e_out[n] = e
        for j in range(6):
            s = 0.0
            for k in range(6):
                s += row[k] * m[k, j]
            a_out[n, j] = s
        n += 1
    return n


@jit
def _irls(a, e, n, prior, scale, reweight, damping):
    """:meth:`EventOdometry.solve_reference` on the first ``n`` rows, each re-weighting one pass that
    accumulates AᵀWA, AᵀWe and the weighted residual variance (no N×6 weighted copies). Returns
    (ξ, AᵀWA/σ² + prior, σ²); ξ is NaN where the system is not finite (the caller skips the window);
    a singular one raises ``np.linalg.LinAlgError`` as numpy's solve does."""
    xi = np.zeros(6)
    s2 = scale * scale
    sigma2 = s2
    h = prior.copy()
    for _ in range(reweight):
        ata = np.zeros((6, 6))
        ate = np.zeros(6)
        sw = 0.0
        swrr = 0.0
        for i in range(n):
            r = e[i]
            for k in range(6):
                r += a[i, k] * xi[k]
            w = (s2 / (s2 + r * r)) ** 2  # slam.core.robust.geman_mcclure_weight
            sw += w
            swrr += w * r * r
            for j in range(6):
                wa = w * a[i, j]
                ate[j] += wa * e[i]
                for k in range(j, 6):
                    ata[j, k] += wa * a[i, k]
        for j in range(6):
            for k in range(j):
                ata[j, k] = ata[k, j]
        sigma2 = max(swrr / max(sw, 1e-9), 1e-8)
        h = ata / sigma2 + prior
        damped = h + damping * np.eye(6) * max(np.trace(h) / 6, 1e-12)
        rhs = ate / sigma2
        if not (np.all(np.isfinite(damped)) and np.all(np.isfinite(rhs))):
            return np.full(6, np.nan), h, sigma2
        xi = -np.linalg.solve(damped, rhs)
    return xi, h, sigma2


@dataclass
class Keyframe:
    """Points of one RGB-D frame for the event term: world positions and log-intensity gradients."""

    points: np.ndarray  # N×3 world
    grad: np.ndarray  # N×2 smoothed ∇L (per px at the event camera's resolution)
    pose: np.ndarray
    timestamp: float


def _resize_mean(image: np.ndarray, width: int, height: int) -> np.ndarray:
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image.astype(np.float32)
    if h % height == 0 and w % width == 0:
        return image.reshape(height, h // height, width, w // width).mean(axis=(1, 3)).astype(np.float32)
    vs = np.clip(((np.arange(height) + 0.5) * h / height).astype(np.int64), 0, h - 1)
    us = np.clip(((np.arange(width) + 0.5) * w / width).astype(np.int64), 0, w - 1)
    return image[vs[:, None], us[None, :]].astype(np.float32)


def _resize_nearest(depth: np.ndarray, width: int, height: int) -> np.ndarray:
    h, w = depth.shape
    vs = np.clip(np.round((np.arange(height) + 0.5) * h / height - 0.5).astype(np.int64), 0, h - 1)
    us = np.clip(np.round((np.arange(width) + 0.5) * w / width - 0.5).astype(np.int64), 0, w - 1)
    return depth[vs[:, None], us[None, :]]


@dataclass
class WindowReport:
    t: float
    pose: np.ndarray
    events: int
    residual: float


@dataclass
class Propagation:
    """Poses of the windows between two depth frames, the last one's pose and its information."""

    pose: np.ndarray
    information: np.ndarray  # 6×6, in the depth term's units (per unit of its squared residual scale)
    windows: list[WindowReport] = field(default_factory=list)
    events: int = 0
    seconds: float = 0.0


class EventOdometry:
    """Event windows against a keyframe: high-rate poses between depth frames."""

    def __init__(self, config: EventTrackingConfig | None = None, seed: int = 0) -> None:
        self.cfg = config or EventTrackingConfig()
        self.rng = np.random.default_rng([int(seed), 0xE5])
        self.events_processed = 0
        self.seconds = 0.0  # wall-clock time spent in propagate
        self.cpu_seconds = 0.0  # process CPU time spent in propagate (what it costs on a loaded machine)

    def keyframe(
        self, frame: RGBDFrame, pose: np.ndarray, intr: CameraIntrinsics, events: EventPacket | None = None
    ) -> Keyframe | None:
        """The keyframe of ``frame`` (at ``pose``) at the event camera's resolution ``intr``; with the
        frame's ``events`` and ``exposure_s`` set, its colour is deblurred first."""
        cfg = self.cfg
        if frame.color is None:
            return None
        grey = _resize_mean(frame.color.astype(np.float32) @ LUMA, intr.width, intr.height)
        if cfg.exposure_s > 0 and events is not None and len(events):
            grey = deblur(
                grey, events, frame.timestamp, cfg.exposure_s, cfg.contrast_threshold, cfg.deblur_samples
            )
        median = float(np.median(grey))
        grey = grey * (cfg.target_median / max(median, 1.0))  # auto-gain
        log = np.log(grey / 255.0 + cfg.log_eps).astype(np.float32)
        if cfg.smoothing_px > 0:
            log = gaussian_smooth(log, cfg.smoothing_px)
        gy, gx = np.gradient(log)
        depth = _resize_nearest(frame.depth, intr.width, intr.height)
        mag = np.hypot(gx, gy)
        ok = (depth > cfg.depth_min) & (depth < cfg.depth_max) & (mag > cfg.gradient_min)
        ok[:2], ok[-2:], ok[:, :2], ok[:, -2:] = False, False, False, False
        idx = np.flatnonzero(ok)
        if idx.size < 50:
            return None
        if idx.size > cfg.points:  # the strongest gradients, a random half of the budget beyond them
            order = np.argsort(-mag.reshape(-1)[idx], kind="stable")
            top = idx[order[: cfg.points // 2]]
            rest = idx[order[cfg.points // 2 :]]
            idx = np.concatenate([top, self.rng.choice(rest, cfg.points - top.size, replace=False)])
        v, u = np.divmod(idx, intr.width)
        d = depth.reshape(-1)[idx].astype(np.float64)
        cam = np.stack([(u - intr.cx) / intr.fx * d, (v - intr.cy) / intr.fy * d, d], axis=1)
        world = cam @ pose[:3, :3].T + pose[:3, 3]
        grad = np.stack([gx.reshape(-1)[idx], gy.reshape(-1)[idx]], axis=1).astype(np.float64)
        return Keyframe(world, grad, pose.copy(), frame.timestamp)

    def window_system_reference(
        self, key: Keyframe, pose: np.ndarray, image: np.ndarray, intr: CameraIntrinsics
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Rows A (N×6) and observations e (N) of the residual r = e + A ξ at ``pose``, and the point mask
        (numpy reference of :meth:`window_system`)."""
        rot, trans = pose[:3, :3], pose[:3, 3]
        x = key.points
        p = (x - trans) @ rot  # Rᵀ (X - t)
        z = p[:, 2]
        u = intr.fx * p[:, 0] / np.maximum(z, 1e-6) + intr.cx
        v = intr.fy * p[:, 1] / np.maximum(z, 1e-6) + intr.cy
        inside = (
            (z > self.cfg.depth_min) & (u >= 0) & (u <= intr.width - 1) & (v >= 0) & (v <= intr.height - 1)
        )
        if int(inside.sum()) < 30:
            return None
        p, z, u, v, x, g = p[inside], z[inside], u[inside], v[inside], x[inside], key.grad[inside]
        b = self.cfg.binning
        e = _sample(image, (u - (b - 1) / 2) / b, (v - (b - 1) / 2) / b) if b > 1 else _sample(image, u, v)
        # ∇L · ∂u/∂p  (N×3)
        gp = np.stack(
            [
                g[:, 0] * intr.fx / z,
                g[:, 1] * intr.fy / z,
                -(g[:, 0] * intr.fx * p[:, 0] + g[:, 1] * intr.fy * p[:, 1]) / z**2,
            ],
            axis=1,
        )
        # ∂p/∂v = -Rᵀ, ∂p/∂ω = Rᵀ [X]×: gp·Rᵀ = (R gp)ᵀ
        q = gp @ rot.T  # rows (R gpᵀ)ᵀ
        a_v = -q
        a_w = np.cross(q, x)  # q · ([X]× ω) = q · (X × ω) = (q × X) · ω
        return np.concatenate([a_v, a_w], axis=1), e, inside

    def solve_reference(
        self, a: np.ndarray, e: np.ndarray, prior: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """Robust least squares of r = e + A ξ with an optional prior information on ξ (towards 0):
        (ξ, information AᵀWA / σ² + prior, residual RMS). σ² is the weighted residual variance (numpy
        reference of :meth:`solve`)."""
        cfg = self.cfg
        xi = np.zeros(6)
        s2 = cfg.robust_scale**2
        w = np.ones(e.shape[0])
        sigma2 = s2
        prior = np.zeros((6, 6)) if prior is None else prior
        for _ in range(cfg.reweight):
            r = e + a @ xi
            w = geman_mcclure_weight(r, cfg.robust_scale)
            sigma2 = max(float((w * r * r).sum() / max(w.sum(), 1e-9)), 1e-8)
            h = (a * w[:, None]).T @ a / sigma2 + prior
            h = h + cfg.damping * np.eye(6) * max(float(np.trace(h)) / 6, 1e-12)
            try:
                xi = -np.linalg.solve(h, (a * w[:, None]).T @ e / sigma2)
            except np.linalg.LinAlgError:
                return np.zeros(6), np.zeros((6, 6)), float("nan")
        h = (a * w[:, None]).T @ a / sigma2 + prior
        return xi, h, float(np.sqrt(sigma2))

    def window_system(
        self,
        key: Keyframe,
        pose: np.ndarray,
        image: np.ndarray,
        intr: CameraIntrinsics,
        xi_cv: np.ndarray | None = None,
        m: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Rows A, observations e and the point mask of the residual r = e + A ξ at ``pose`` (visible
        points only, None with fewer than 30), as :meth:`window_system_reference` in one compiled pass;
        with ``xi_cv`` the observations are e + A·xi_cv (the window's constant-velocity motion), with ``m``
        the rows are A·m."""
        n_max = key.points.shape[0]
        a = np.empty((n_max, 6))
        e = np.empty(n_max)
        inside = np.empty(n_max, dtype=np.bool_)
        n = _window_rows(
            np.ascontiguousarray(key.points, dtype=np.float64),
            np.ascontiguousarray(key.grad, dtype=np.float64),
            np.ascontiguousarray(pose[:3, :3], dtype=np.float64),
            np.ascontiguousarray(pose[:3, 3], dtype=np.float64),
            np.array([intr.fx, intr.fy, intr.cx, intr.cy], dtype=np.float64),
            np.array([intr.width, intr.height], dtype=np.int64),
            float(self.cfg.depth_min),
            np.ascontiguousarray(image, dtype=np.float32),
            int(self.cfg.binning),
            np.zeros(6) if xi_cv is None else np.asarray(xi_cv, dtype=np.float64),
            np.eye(6) if m is None else np.ascontiguousarray(m, dtype=np.float64),
            a,
            e,
            inside,
        )
        if n < 30:
            return None
        return a[:n], e[:n], inside

    def solve(
        self, a: np.ndarray, e: np.ndarray, prior: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """Robust least squares of r = e + A ξ with an optional prior information on ξ (towards 0):
        (ξ, information AᵀWA / σ² + prior, residual RMS), as :meth:`solve_reference` with each
        re-weighting one compiled pass over the rows."""
        cfg = self.cfg
        prior = np.zeros((6, 6)) if prior is None else np.ascontiguousarray(prior, dtype=np.float64)
        try:
            xi, h, sigma2 = _irls(
                np.ascontiguousarray(a, dtype=np.float64),
                np.ascontiguousarray(e, dtype=np.float64),
                a.shape[0],
                prior,
                float(cfg.robust_scale),
                int(cfg.reweight),
                float(cfg.damping),
            )
        except np.linalg.LinAlgError:
            return np.zeros(6), np.zeros((6, 6)), float("nan")
        return xi, h, float(np.sqrt(sigma2))

    def independent_share(self, rows: int, intr: CameraIntrinsics) -> float:
        """The share of a window's ``rows`` residuals that count as independent: the event image and the
        keyframe are smoothed with a Gaussian of σ = ``smoothing_px``, which correlates residuals closer
        than a few σ; smoothed white noise has about one independent value per 4πσ² px², so an image of
        A px² holds N_eff = A / (4πσ²) of them (1 with ``decorrelate`` off or no smoothing)."""
        sigma = self.cfg.smoothing_px
        if not self.cfg.decorrelate or sigma <= 0 or rows <= 0:
            return 1.0
        n_eff = intr.width * intr.height / (4.0 * np.pi * sigma * sigma)
        return float(min(1.0, n_eff / rows))

    def propagate(
        self,
        key: Keyframe,
        start: np.ndarray,
        events: EventPacket,
        t0: float,
        t1: float,
        velocity: np.ndarray | None = None,
    ) -> Propagation | None:
        """Chain the windows of ``events`` over (t0, t1] from the pose ``start`` at t0.

        With ``velocity`` (a world-frame twist per second, the last depth frames' motion) each window
        starts from the constant-velocity prediction and the events correct it, against a prior on
        the correction (``motion_sigma_*``): the directions the events observe poorly (translation
        against rotation, for distant scenes) stay near constant velocity."""
        intr = events.intrinsics
        if intr is None:
            raise ValueError(
                "the event packet has no intrinsics: the event camera must be calibrated for tracking"
            )
        cfg = self.cfg
        clock, cpu_clock = time.perf_counter(), time.process_time()
        pose = start.copy()
        cov = np.zeros((6, 6))
        n = max(1, int(np.ceil((t1 - t0) / cfg.window_s - 1e-9)))
        edges = np.searchsorted(events.t, t0 + (t1 - t0) * np.arange(1, n + 1) / n, side="right")
        reports: list[WindowReport] = []
        begin = int(np.searchsorted(events.t, t0, side="right"))
        any_window = False
        t_prev = t0
        for k, end in enumerate(edges):
            end = int(end) if k < n - 1 else len(events)
            if end - begin < cfg.min_events and k < n - 1:
                continue  # too few: merge into the next window
            if end - begin < cfg.min_events:
                break
            sl = slice(begin, end)
            img = event_image(
                events.x[sl],
                events.y[sl],
                events.p[sl],
                intr.width,
                intr.height,
                cfg.contrast_threshold,
                cfg.smoothing_px,
                cfg.binning,
            )
            count = end - begin
            begin = end
            self.events_processed += count
            prior, xi_cv = None, np.zeros(6)
            t_end = float(events.t[end - 1])
            dt = max(t_end - t_prev, 1e-6)
            if velocity is not None:
                # the events show the whole motion of the window, xi_cv + the correction δ:
                # r = e + A (xi_cv + δ), with a prior on δ
                xi_cv = velocity * dt
                prior = np.diag(
                    [1.0 / (cfg.motion_sigma_trans**2 * dt)] * 3 + [1.0 / (cfg.motion_sigma_rot**2 * dt)] * 3
                )
            # solve for the motion about the camera centre c, (v_c, ω) with v = v_c + c × ω, so that the
            # prior bounds the camera's own translation (a rotation about the world origin moves it):
            # the rows come as A·m, the observations as e + A·xi_cv
            m = np.eye(6)
            m[:3, 3:] = skew(pose[:3, 3])
            system = self.window_system(key, pose, img, intr, xi_cv, m)
            if system is None:
                continue
            if velocity is not None:
                t_prev = t_end
            a_c, e, _ = system
            xi_c, info_c, rms = self.solve(a_c, e, prior)
            if not np.all(np.isfinite(xi_c)) or not np.all(np.isfinite(info_c)):
                continue
            if prior is not None:  # what the window adds to the depth term: its events' share, decorrelated
                share = self.independent_share(a_c.shape[0], intr)
                info_c = (info_c - prior) * share + prior
            else:
                info_c = info_c * self.independent_share(a_c.shape[0], intr)
            m_inv = np.linalg.inv(m)
            xi, info = m @ xi_c, m_inv.T @ info_c @ m_inv
            pose = se3_exp(xi_cv + xi) @ pose
            try:
                cov += np.linalg.inv(info + 1e-9 * np.eye(6))
            except np.linalg.LinAlgError:
                continue
            any_window = True
            reports.append(WindowReport(float(events.t[end - 1]), pose.copy(), count, rms))
        if velocity is not None and any_window and t1 > t_prev:
            pose = se3_exp(velocity * (t1 - t_prev)) @ pose
        seconds = time.perf_counter() - clock
        self.seconds += seconds
        self.cpu_seconds += time.process_time() - cpu_clock
        if not any_window:
            return None
        try:
            information = np.linalg.inv(cov)
        except np.linalg.LinAlgError:
            information = np.zeros((6, 6))
        information = 0.5 * (information + information.T)
        return Propagation(pose, information, reports, sum(r.events for r in reports), seconds)


class EventFrontend:
    """The RGB-D frontend with the event term (see the module doc): when a frame carries events (with the
    event camera's intrinsics; its frame is taken to be the RGB-D camera's), they are chained from the
    last pose against the last keyframe into a :class:`PosePrior` of the frame's pose: the tracker
    registers from it along with constant velocity, and the events' orientation is a prior term in the
    depth term. Frames without events give the RGB-D frontend's observation unchanged."""

    def __init__(
        self,
        rgbd: RgbdFrontend,
        config: EventTrackingConfig | None = None,
        seed: int = 0,
        constant_velocity: bool = True,
    ) -> None:
        self.rgbd = rgbd
        self.odometry = EventOdometry(config, seed=seed)
        self.event_cfg = self.odometry.cfg
        self.constant_velocity = (
            constant_velocity  # the tracker's: predict the events' start from the last motion
        )
        self._key: Keyframe | None = None
        self.chose_velocity = 0  # frames where the constant-velocity registration fitted better
        self.frames_with_events = 0  # RGB-D frames that carried at least one event
        self.frames_event_aided = 0  # of which the event term predicted the pose
        self.event_windows = 0
        self.uncalibrated = 0  # frames whose events had no intrinsics (not usable)
        self._warned_extrinsics = False
        self._warned_intrinsics = False

    @property
    def tracker_suffix(self) -> str:
        """``+events`` once events were used: a run's stats say which path tracked it (frames without
        events go exactly the depth tracker's way)."""
        return "+events" if self.frames_event_aided else ""

    def stats(self) -> dict:
        """What the event term did so far (a run's stats.json ``events`` block)."""
        odo = self.odometry
        return {
            "events": {
                "frames_with_events": self.frames_with_events,
                "frames_event_aided": self.frames_event_aided,
                "frames_uncalibrated": self.uncalibrated,
                "events": odo.events_processed,
                "windows": self.event_windows,
                "event_term_s": round(odo.seconds, 4),
                "event_term_cpu_s": round(odo.cpu_seconds, 4),
                "event_term_events_per_s": round(odo.events_processed / odo.seconds)
                if odo.seconds > 0
                else None,
                "chose_velocity": self.chose_velocity,
            }
        }

    def observe(self, frame: Frame, history: MotionHistory) -> Observation:
        obs = self.rgbd.observe(frame, history)
        events = getattr(frame, "events", None) if self.event_cfg.enabled else None
        if events is None or len(events) == 0:
            return obs
        self.frames_with_events += 1
        if events.intrinsics is None:
            self.uncalibrated += 1
            if not self._warned_intrinsics:
                log.warning("events without the event camera's intrinsics (events.fx ...): not used")
                self._warned_intrinsics = True
            return obs
        if self._key is None or not history.poses or not self._colocated(events):
            return obs
        velocity = None
        poses, stamps = history.poses, history.timestamps
        if len(poses) >= 2 and len(stamps) >= 2 and self.constant_velocity:
            dt = stamps[-1] - stamps[-2]
            if dt > 0:  # the last motion as a world-frame twist per second
                velocity = se3_log(poses[-1] @ np.linalg.inv(poses[-2])) / dt
        prop = self.odometry.propagate(
            self._key, poses[-1], events, self._key.timestamp, frame.timestamp, velocity
        )
        if prop is None:
            return obs
        self.frames_event_aided += 1
        self.event_windows += len(prop.windows)
        term = partial(self._prior_term, prop) if self.event_cfg.prior_weight > 0 else None
        obs.prior = PosePrior(prop.pose, term, compare_velocity=self.event_cfg.check_velocity)
        obs.info["event_windows"] = len(prop.windows)
        obs.info["events"] = prop.events
        obs.info["event_poses"] = [(w.t, w.pose) for w in prop.windows]
        return obs

    def tracked(self, observation: Observation, pose: np.ndarray, lost: bool, info: dict) -> None:
        self.chose_velocity += int(bool(info.get("chose_velocity")))
        # the next keyframe, also when the depth term lost this frame: its colour and depth are fine, and
        # its pose is the events' prediction then
        frame = observation.frame
        events = getattr(frame, "events", None)
        intr = events.intrinsics if events is not None and events.intrinsics is not None else None
        self._key = self.odometry.keyframe(frame, pose, intr, events) if intr is not None else None
        self.rgbd.tracked(observation, pose, lost, info)

    def _prior_term(self, prediction: Propagation, pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normal-equation terms of the events' prior on the orientation, r = log(R · R_evᵀ), for the depth
        step at ``pose``: the rotation block of the prediction's information with the translation
        marginalised out (the events observe rotation well, translation poorly), in the depth term's
        units (× its residual scale²) and × ``prior_weight``."""
        info = prediction.information
        try:
            rot_info = info[3:, 3:] - info[3:, :3] @ np.linalg.solve(info[:3, :3], info[:3, 3:])
        except np.linalg.LinAlgError:
            rot_info = np.zeros((3, 3))
        h = np.zeros((6, 6))
        h[3:, 3:] = (
            0.5 * (rot_info + rot_info.T) * (self.event_cfg.prior_weight * self.event_cfg.depth_sigma_m**2)
        )
        r = se3_log(pose @ np.linalg.inv(prediction.pose))
        return h, h @ r

    def _colocated(self, events: EventPacket) -> bool:
        """Whether the event camera shares the RGB-D camera's frame (the only case handled so far)."""
        t = events.camera_from_sensor
        if t is None or np.allclose(t, np.eye(4), atol=1e-6):
            return True
        if not self._warned_extrinsics:
            log.warning("event camera offset from the RGB-D camera: not handled yet, events are not used")
            self._warned_extrinsics = True
        return False
