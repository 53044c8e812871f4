"""Event-camera simulation (ESIM / v2e style) and the degraded colour that event cameras are for.

The model, per pixel: the log intensity ``L = log(I / 255 + eps)`` is linear in time between two
consecutive (rendered, warped or recorded) sub-frames. The pixel keeps a reference level ``ref`` (the
level of its last event); each time ``L`` crosses ``ref ± C`` an event of polarity ±1 fires at the
crossing's interpolated time and ``ref`` moves by ``±C``. The thresholds ``C_on`` / ``C_off`` are per
pixel, drawn once from a normal distribution (threshold mismatch, ``threshold_sigma``). A pixel that
fired is blind for ``refractory_s``: crossings inside that period advance ``ref`` but emit no event.
Everything is vectorised over the pixels (no per-pixel Python loop) and deterministic from the seed.

Sub-frames between two frames come from
- the demo scene: render intermediate poses of its continuous camera path (:func:`demo_events`);
- a real RGB-D sequence: interpolate the poses on SE(3) and warp both neighbouring frames to the
  intermediate pose with their depth, blending them (:class:`DepthWarper`, :func:`rgbd_subframes`).
Their number follows the largest pixel flow, so the linear-in-time model holds to about a pixel.

Degradation of the colour images: :func:`motion_blur` (the mean of the sub-frames over the exposure)
and :func:`low_light` (reduced range, Poisson shot noise and Gaussian read noise, 8-bit quantisation).

Output arrays are ``EventPacket``-compatible: ``t`` float64 seconds, ``x``, ``y`` uint16, ``p`` int8
±1, sorted by ``t`` (stable: ties in pixel order).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from slam.core.frames import CameraIntrinsics, EventPacket, concat_event_arrays
from slam.core.geometry import invert_pose, se3_exp, se3_log

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class EventSimConfig:
    contrast_threshold: float = 0.2  # C, in log-intensity units (ESIM/v2e: 0.15-0.5)
    threshold_sigma: float = 0.03  # std of the per-pixel thresholds around C
    min_threshold: float = 0.01  # thresholds are clipped below at this
    refractory_s: float = 1e-4  # a pixel that fired is blind for this long (s)
    log_eps: float = 0.02  # L = log(I / 255 + eps): keeps dark pixels from firing on noise
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.contrast_threshold > 0:
            raise ValueError(f"contrast_threshold must be positive, got {self.contrast_threshold}")
        if self.threshold_sigma < 0 or self.refractory_s < 0:
            raise ValueError("threshold_sigma and refractory_s must be non-negative")
        if not self.log_eps > 0:
            raise ValueError(f"log_eps must be positive, got {self.log_eps}")


def gray(image: np.ndarray) -> np.ndarray:
    """H×W×3 RGB (uint8 or float, 0-255) or H×W grey to float32 grey in 0-255."""
    image = np.asarray(image)
    if image.ndim == 3:
        return (image.astype(np.float32) @ LUMA).astype(np.float32)
    return image.astype(np.float32)


def log_intensity(image: np.ndarray, eps: float = EventSimConfig.log_eps) -> np.ndarray:
    """Log intensity ``log(I / 255 + eps)`` (float32) of an RGB or grey image in 0-255."""
    return np.log(gray(image) / np.float32(255.0) + np.float32(eps)).astype(np.float32)


@dataclass
class Events:
    """Events as four arrays sorted by time: t (s, float64), x, y (uint16), p (int8, ±1)."""

    t: np.ndarray
    x: np.ndarray
    y: np.ndarray
    p: np.ndarray

    def __len__(self) -> int:
        return int(self.t.shape[0])

    @staticmethod
    def empty() -> Events:
        return Events(np.zeros(0), np.zeros(0, np.uint16), np.zeros(0, np.uint16), np.zeros(0, np.int8))

    @staticmethod
    def concat(parts: list[Events]) -> Events:
        parts = [e for e in parts if len(e)]
        if not parts:
            return Events.empty()
        return Events(**concat_event_arrays(parts))

    def between(self, t0: float, t1: float) -> Events:
        """The events with t0 < t <= t1 (two binary searches)."""
        a, b = np.searchsorted(self.t, [t0, t1], side="right")
        return Events(self.t[a:b], self.x[a:b], self.y[a:b], self.p[a:b])

    def packet(self, width: int, height: int, timestamp: float = 0.0, index: int = 0, **kw) -> EventPacket:
        return EventPacket(
            self.t, self.x, self.y, self.p, width, height, timestamp=timestamp, index=index, **kw
        )


class EventSimulator:
    """Stateful per-pixel event generator: feed it log-intensity images with increasing timestamps."""

    def __init__(self, width: int, height: int, config: EventSimConfig | None = None) -> None:
        self.width, self.height = int(width), int(height)
        self.cfg = config or EventSimConfig()
        rng = np.random.default_rng([int(self.cfg.seed), 0xE7E])
        shape = (self.height * self.width,)
        c, s, lo = self.cfg.contrast_threshold, self.cfg.threshold_sigma, self.cfg.min_threshold
        self.c_on = np.maximum(rng.normal(c, s, shape), lo)
        self.c_off = np.maximum(rng.normal(c, s, shape), lo)
        self.ref: np.ndarray | None = None  # per-pixel level of the last event (float64)
        self.last_log: np.ndarray | None = None
        self.last_t: float | None = None
        self.last_event = np.full(shape, -np.inf)  # per-pixel time of the last emitted event

    def reset(self, log_image: np.ndarray, t: float) -> None:
        """Start (or restart) at ``log_image`` taken at time ``t``: no events, references set to it."""
        log_image = self._check(log_image)
        self.ref = log_image.copy()
        self.last_log = log_image
        self.last_t = float(t)
        self.last_event[:] = -np.inf

    def _check(self, log_image: np.ndarray) -> np.ndarray:
        log_image = np.asarray(log_image, dtype=np.float64)
        if log_image.shape != (self.height, self.width):
            raise ValueError(f"expected a {self.width}x{self.height} image, got shape {log_image.shape}")
        return log_image.reshape(-1)

    def step(self, log_image: np.ndarray, t: float) -> Events:
        """The events of the interval (last time, ``t``], the log intensity linear in time over it."""
        if self.ref is None or self.last_log is None or self.last_t is None:
            self.reset(log_image, t)
            return Events.empty()
        l1 = self._check(log_image)
        t0, t1 = self.last_t, float(t)
        if not t1 > t0:
            raise ValueError(f"timestamps must increase: {t1} after {t0}")
        l0, ref = self.last_log, self.ref
        dt = t1 - t0
        up = l1 > ref
        c = np.where(up, self.c_on, self.c_off)
        n = np.floor(np.abs(l1 - ref) / c).astype(np.int64)  # crossings of ref ± k·C, k = 1..n
        sign = np.where(up, 1.0, -1.0)
        pix = np.flatnonzero(n)
        self.ref = ref + sign * n * c
        self.last_log, self.last_t = l1, t1
        if pix.size == 0:
            return Events.empty()
        npix = n[pix]
        slope = (l1[pix] - l0[pix]) / dt  # non-zero where a crossing happened
        spacing = c[pix] / np.abs(slope)  # time between consecutive crossings
        t_first = t0 + (ref[pix] + sign[pix] * c[pix] - l0[pix]) / slope
        # refractory period: of the evenly spaced crossings, keep greedily those at least `refr` after
        # the last kept one: the first allowed, then every m-th
        refr = self.cfg.refractory_s
        k0 = np.zeros(pix.size, dtype=np.int64)
        m = np.ones(pix.size, dtype=np.int64)
        if refr > 0:
            wait = self.last_event[pix] + refr - t_first
            k0 = np.maximum(0, np.ceil(wait / spacing - 1e-9)).astype(np.int64)
            m = np.maximum(1, np.ceil(refr / spacing - 1e-9)).astype(np.int64)
        kept = np.where(k0 < npix, (npix - 1 - k0) // m + 1, 0)
        has = kept > 0
        pix, kept, k0, m, spacing, t_first = pix[has], kept[has], k0[has], m[has], spacing[has], t_first[has]
        if pix.size == 0:
            return Events.empty()
        total = int(kept.sum())
        owner = np.repeat(np.arange(pix.size), kept)
        starts = np.cumsum(kept) - kept
        j = np.arange(total) - starts[owner]  # 0..kept-1 within each pixel
        k = k0[owner] + j * m[owner]
        times = t_first[owner] + k * spacing[owner]
        times = np.clip(times, t0, t1)
        self.last_event[pix] = t_first + (k0 + (kept - 1) * m) * spacing
        p_pix = pix[owner]
        order = np.argsort(times, kind="stable")
        return Events(
            times[order],
            (p_pix % self.width).astype(np.uint16)[order],
            (p_pix // self.width).astype(np.uint16)[order],
            sign[p_pix].astype(np.int8)[order],
        )


def simulate(log_images: np.ndarray, times: np.ndarray, config: EventSimConfig | None = None) -> Events:
    """Events of a whole stack of log-intensity images (N×H×W) taken at ``times`` (N, increasing)."""
    log_images = np.asarray(log_images)
    sim = EventSimulator(log_images.shape[2], log_images.shape[1], config)
    sim.reset(log_images[0], times[0])
    return Events.concat([sim.step(img, t) for img, t in zip(log_images[1:], times[1:], strict=True)])


# ------------------------------------------------------------------------------------------- poses


def interpolate_pose(pose0: np.ndarray, pose1: np.ndarray, alpha: float) -> np.ndarray:
    """The pose a fraction ``alpha`` of the way from ``pose0`` to ``pose1`` (constant twist, SE(3))."""
    return pose0 @ se3_exp(alpha * se3_log(invert_pose(pose0) @ pose1))


def max_flow_px(
    depth: np.ndarray, intr: CameraIntrinsics, pose0: np.ndarray, pose1: np.ndarray, stride: int = 8
) -> float:
    """Largest image displacement (px) of the depth's points (every ``stride``-th pixel) from pose0 to pose1."""
    vs, us = np.mgrid[0 : depth.shape[0] : stride, 0 : depth.shape[1] : stride]
    d = depth[vs, us]
    ok = d > 0
    if not ok.any():
        return 0.0
    u, v, d = us[ok].astype(np.float64), vs[ok].astype(np.float64), d[ok].astype(np.float64)
    p = np.stack([(u - intr.cx) / intr.fx * d, (v - intr.cy) / intr.fy * d, d], axis=1)
    rel = np.linalg.inv(pose1) @ pose0
    q = p @ rel[:3, :3].T + rel[:3, 3]
    z = np.maximum(q[:, 2], 1e-3)
    du = intr.fx * q[:, 0] / z + intr.cx - u
    dv = intr.fy * q[:, 1] / z + intr.cy - v
    return float(np.sqrt(du * du + dv * dv).max())


def resize_depth(depth: np.ndarray, intr: CameraIntrinsics, target: CameraIntrinsics) -> np.ndarray:
    """Nearest-neighbour resampling of a depth image to another resolution of the same camera."""
    us = np.clip(
        np.round((np.arange(target.width) + 0.5) * intr.width / target.width - 0.5), 0, intr.width - 1
    )
    vs = np.clip(
        np.round((np.arange(target.height) + 0.5) * intr.height / target.height - 0.5), 0, intr.height - 1
    )
    return depth[vs.astype(np.int64)[:, None], us.astype(np.int64)[None, :]]


def resize_image(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area-average downsampling by an integer factor (or nearest for other ratios), float32."""
    image = np.asarray(image, dtype=np.float32)
    h, w = image.shape[:2]
    if h % height == 0 and w % width == 0:
        fy, fx = h // height, w // width
        return image.reshape(height, fy, width, fx, *image.shape[2:]).mean(axis=(1, 3))
    vs = np.clip(((np.arange(height) + 0.5) * h / height).astype(np.int64), 0, h - 1)
    us = np.clip(((np.arange(width) + 0.5) * w / width).astype(np.int64), 0, w - 1)
    return image[vs[:, None], us[None, :]]


def bilinear(image: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear samples of an H×W(×C) image at float pixel coordinates (borders replicated)."""
    h, w = image.shape[:2]
    u = np.clip(u, 0.0, w - 1.0)
    v = np.clip(v, 0.0, h - 1.0)
    u0 = np.minimum(np.floor(u).astype(np.int64), w - 2) if w > 1 else np.zeros(u.shape, np.int64)
    v0 = np.minimum(np.floor(v).astype(np.int64), h - 2) if h > 1 else np.zeros(v.shape, np.int64)
    a = (u - u0).astype(np.float32)
    b = (v - v0).astype(np.float32)
    u1, v1 = np.minimum(u0 + 1, w - 1), np.minimum(v0 + 1, h - 1)
    if image.ndim == 3:
        a, b = a[..., None], b[..., None]
    top = image[v0, u0] * (1 - a) + image[v0, u1] * a
    bottom = image[v1, u0] * (1 - a) + image[v1, u1] * a
    return top * (1 - b) + bottom * b


class DepthWarper:
    """Warps an image with its depth from one camera pose to another (same intrinsics).

    Forward-projects the source depth into the target view (z-buffered, nearest pixel) to get the
    target's depth, fills its holes with the source depth at the same pixel (then the median depth),
    and samples the source image bilinearly where each target pixel's 3-D point lands in the source.
    An identity pose change returns the image (up to float rounding).
    """

    def __init__(self, intrinsics: CameraIntrinsics) -> None:
        self.intr = intrinsics
        vs, us = np.mgrid[0 : intrinsics.height, 0 : intrinsics.width]
        self.u = us.reshape(-1).astype(np.float64)
        self.v = vs.reshape(-1).astype(np.float64)
        self.rx = (self.u - intrinsics.cx) / intrinsics.fx
        self.ry = (self.v - intrinsics.cy) / intrinsics.fy

    def _project(self, z: np.ndarray, rel: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        intr = self.intr
        x, y = self.rx * z, self.ry * z
        r, t = rel[:3, :3], rel[:3, 3]
        qx = r[0, 0] * x + r[0, 1] * y + r[0, 2] * z + t[0]
        qy = r[1, 0] * x + r[1, 1] * y + r[1, 2] * z + t[1]
        qz = r[2, 0] * x + r[2, 1] * y + r[2, 2] * z + t[2]
        zs = np.maximum(qz, 1e-6)
        return intr.fx * qx / zs + intr.cx, intr.fy * qy / zs + intr.cy, qz

    def target_depth(self, depth: np.ndarray, src_pose: np.ndarray, dst_pose: np.ndarray) -> np.ndarray:
        intr = self.intr
        d = depth.reshape(-1).astype(np.float64)
        valid = d > 0
        fill = float(np.median(d[valid])) if valid.any() else 1.0
        rel = np.linalg.inv(dst_pose) @ src_pose  # source camera -> target camera (exact also for
        # slightly non-orthonormal recorded rotations, where the transpose is not the inverse)
        u, v, z = self._project(d, rel)
        ui, vi = np.round(u).astype(np.int64), np.round(v).astype(np.int64)
        ok = valid & (z > 1e-3) & (ui >= 0) & (ui < intr.width) & (vi >= 0) & (vi < intr.height)
        target = np.full(d.shape, np.inf)
        np.minimum.at(target, vi[ok] * intr.width + ui[ok], z[ok])
        holes = ~np.isfinite(target)
        target[holes] = np.where(valid[holes], d[holes], fill)
        return target

    def warp(
        self, image: np.ndarray, depth: np.ndarray, src_pose: np.ndarray, dst_pose: np.ndarray
    ) -> np.ndarray:
        """``image`` (H×W or H×W×C, float) seen from ``dst_pose``; both poses camera-to-world."""
        intr = self.intr
        z_dst = self.target_depth(depth, src_pose, dst_pose)
        rel = np.linalg.inv(src_pose) @ dst_pose  # target camera -> source camera
        u, v, _ = self._project(z_dst, rel)
        out = bilinear(np.asarray(image, dtype=np.float32), u, v)
        return out.reshape(intr.height, intr.width, *np.shape(image)[2:]).astype(np.float32)


def subframe_count(flow_px: float, max_flow_px: float = 1.0, min_count: int = 1, max_count: int = 64) -> int:
    return int(np.clip(np.ceil(flow_px / max_flow_px), min_count, max_count))


@dataclass
class KeyFrame:
    """One RGB-D frame as the event simulator needs it: grey image (0-255), depth, pose, time."""

    image: np.ndarray  # H×W float32 grey at the event camera's resolution
    depth: np.ndarray  # H×W float32 metres at the same resolution
    pose: np.ndarray
    t: float


def rgbd_subframes(
    warper: DepthWarper, k0: KeyFrame, k1: KeyFrame, max_flow: float = 1.0
) -> Iterator[tuple[float, np.ndarray, np.ndarray]]:
    """(t, grey image, pose) of the sub-frames strictly after ``k0`` up to and including ``k1``: both
    frames warped to the interpolated pose and blended by their distance in time."""
    flow = max(
        max_flow_px(k0.depth, warper.intr, k0.pose, k1.pose),
        max_flow_px(k1.depth, warper.intr, k1.pose, k0.pose),
    )
    n = subframe_count(flow, max_flow)
    for i in range(1, n + 1):
        a = i / n
        pose = interpolate_pose(k0.pose, k1.pose, a)
        if i == n:
            img = k1.image
        else:
            img = (1 - a) * warper.warp(k0.image, k0.depth, k0.pose, pose) + a * warper.warp(
                k1.image, k1.depth, k1.pose, pose
            )
        yield k0.t + a * (k1.t - k0.t), img.astype(np.float32), pose


# ------------------------------------------------------------------------------------------- degradation


def motion_blur(images: list[np.ndarray] | np.ndarray) -> np.ndarray:
    """The mean of the sub-frames over the exposure (uint8 in, uint8 out): a static scene is unchanged."""
    stack = np.asarray(images)
    if stack.ndim < 3:
        raise ValueError("expected a stack of images")
    if stack.dtype == np.uint8 and np.all(stack == stack[0]):
        return stack[0].copy()
    mean = stack.astype(np.float64).mean(axis=0)
    return np.clip(np.round(mean), 0, 255).astype(np.uint8)


def low_light(
    image: np.ndarray,
    rng: np.random.Generator,
    scale: float = 0.15,
    photons_at_white: float = 60.0,
    read_noise: float = 1.5,
) -> np.ndarray:
    """A dark exposure of ``image`` (uint8): the signal reduced to ``scale`` of the range, Poisson shot
    noise (a white pixel collects ``photons_at_white`` photons in normal light, so ``scale`` times
    fewer here), Gaussian read noise (``read_noise`` grey levels) and 8-bit quantisation."""
    signal = np.asarray(image, dtype=np.float64) / 255.0 * scale  # in units of full scale
    photons = rng.poisson(signal * photons_at_white) / photons_at_white
    out = photons * 255.0 + rng.normal(0.0, read_noise, np.shape(image))
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------- sequences


def keyframe_of(frame, intr: CameraIntrinsics) -> KeyFrame:
    """An RGB-D frame (colour, depth, ground-truth pose) at the event camera's resolution ``intr``."""
    if frame.color is None or frame.gt_pose is None:
        raise ValueError(f"frame {frame.index}: the event simulator needs colour and a ground-truth pose")
    image = resize_image(gray(frame.color), intr.width, intr.height)
    depth = resize_depth(frame.depth, frame.intrinsics, intr)
    return KeyFrame(image.astype(np.float32), depth.astype(np.float32), frame.gt_pose, float(frame.timestamp))


def rgbd_sequence_events(
    frames, intr: CameraIntrinsics, config: EventSimConfig | None = None, max_flow: float = 1.0
) -> Iterator[tuple[object, Events]]:
    """For each frame of a real RGB-D sequence with ground truth: (frame, the events since the previous
    frame), simulated from sub-frames warped with depth between consecutive frames (none for the first)."""
    cfg = config or EventSimConfig()
    warper = DepthWarper(intr)
    sim = EventSimulator(intr.width, intr.height, cfg)
    prev: KeyFrame | None = None
    for frame in frames:
        key = keyframe_of(frame, intr)
        if prev is None:
            sim.reset(log_intensity(key.image, cfg.log_eps), key.t)
            events = Events.empty()
        else:
            events = Events.concat(
                [
                    sim.step(log_intensity(img, cfg.log_eps), t)
                    for t, img, _ in rgbd_subframes(warper, prev, key, max_flow)
                ]
            )
        prev = key
        yield frame, events


def blurred_color(
    frame,
    previous_pose: np.ndarray,
    exposure: float = 1.0,
    max_flow: float = 1.0,
    warper: DepthWarper | None = None,
) -> np.ndarray:
    """Motion blur of an RGB-D frame's colour: the mean of the colour warped (with the frame's depth) to the
    poses of the exposure, which ends at the frame and spans ``exposure`` of the way back to
    ``previous_pose`` (the pose one frame period earlier)."""
    warper = warper or DepthWarper(frame.intrinsics)
    end = interpolate_pose(frame.gt_pose, previous_pose, exposure)
    n = subframe_count(max_flow_px(frame.depth, frame.intrinsics, frame.gt_pose, end), max_flow, 1, 32)
    if n <= 1:
        return frame.color.copy()
    image = frame.color.astype(np.float32)
    subs = [image] + [
        warper.warp(image, frame.depth, frame.gt_pose, interpolate_pose(frame.gt_pose, end, i / (n - 1)))
        for i in range(1, n)
    ]
    return motion_blur(np.stack(subs))


def demo_events(
    seed: int,
    frames: int,
    fps: float,
    intr: CameraIntrinsics,
    config: EventSimConfig | None = None,
    max_flow: float = 1.0,
    max_substeps: int = 16,
    progress: bool = False,
) -> tuple[list[Events], float]:
    """Events of the demo scene's camera path (``drivers.sim.indoor.camera_trajectory``), rendered at
    intermediate poses: per frame, the events since the previous frame (none for the first), and the
    largest pixel flow between two consecutive renders (to check the sampling).

    The path is a smooth function of time, sampled ``max_substeps`` times finer than the frames; each
    frame period is rendered at 1, 2, 4, … of those poses, the fewest that keep the flow between
    renders (estimated from the last render's depth) within ``max_flow`` px (ESIM-style adaptive)."""
    from drivers.sim.indoor import build_indoor_scene, camera_trajectory
    from drivers.sim.render import Renderer

    cfg = config or EventSimConfig()
    n_max = 1 << int(np.ceil(np.log2(max(1, max_substeps))))
    scene = build_indoor_scene(seed)
    poses = camera_trajectory((frames - 1) * n_max + 1, seed, fps * n_max, center=scene.center)
    renderer = Renderer(scene, intr)
    sim = EventSimulator(intr.width, intr.height, cfg)
    out = renderer.render(poses[0])
    sim.reset(log_intensity(out.color, cfg.log_eps), 0.0)
    per_frame = [Events.empty()]
    worst = 0.0
    for k in range(frames - 1):
        a, b = k * n_max, (k + 1) * n_max
        flow = max_flow_px(out.depth, intr, poses[a], poses[b])
        n = 1
        while n < n_max and flow / n > max_flow:
            n *= 2
        step = n_max // n
        parts = []
        for j in range(a + step, b + 1, step):
            worst = max(worst, max_flow_px(out.depth, intr, poses[j - step], poses[j]))
            out = renderer.render(poses[j])
            parts.append(sim.step(log_intensity(out.color, cfg.log_eps), j / (fps * n_max)))
        per_frame.append(Events.concat(parts))
        if progress and (k + 1) % 50 == 0:
            print(f"  demo events: frame {k + 1}/{frames - 1}", flush=True)
    return per_frame, worst


# ------------------------------------------------------------------------------------------- demo cache

DEMO_EVENTS_VERSION = 1
DEMO_EVENTS_FILE = "events.npz"
DEMO_EVENTS_META = "events.json"


def ensure_demo_events(
    scene,
    intr: CameraIntrinsics,
    config: EventSimConfig | None = None,
    max_flow: float = 2.0,
    cache_root=None,
    progress: bool = False,
):
    """The folder of the demo scene's (``scene``: a ``DemoSceneConfig``) simulated event stream for an event
    camera with intrinsics ``intr`` at the colour camera's centre and axes, simulating it first (with
    :func:`demo_events`) unless a finished one is cached: ``<cache root>/demo_events/<digest>`` holding
    ``events.npz`` (the whole stream: t, x, y, p, sorted by time) and ``events.json`` (parameters,
    counts). Deterministic from the parameters; generated atomically like the scene."""
    import json
    from dataclasses import asdict

    from drivers.sim.cache import cache_folder, config_digest, finished_count, generate_atomically

    cfg = config or EventSimConfig()
    params = {
        "scene": scene.digest,
        "intrinsics": asdict(intr),
        "sim": asdict(cfg),
        "max_flow": float(max_flow),
    }
    digest = config_digest(params, DEMO_EVENTS_VERSION)
    folder = cache_folder("demo_events", digest, cache_root)

    def complete(path) -> bool:
        meta = path / DEMO_EVENTS_META
        return (
            finished_count(meta, DEMO_EVENTS_VERSION, digest, "frames") is not None
            and (path / DEMO_EVENTS_FILE).is_file()
        )

    def generate(partial) -> None:
        per_frame, worst = demo_events(
            scene.seed, scene.frames, scene.fps, intr, cfg, max_flow=max_flow, progress=progress
        )
        ev = Events.concat(per_frame)
        np.savez(partial / DEMO_EVENTS_FILE, t=ev.t, x=ev.x, y=ev.y, p=ev.p)
        meta = {
            "generator_version": DEMO_EVENTS_VERSION,
            "digest": digest,
            **params,
            "frames": scene.frames,
            "events": len(ev),
            "max_subframe_flow_px": worst,
            "complete": True,
        }
        (partial / DEMO_EVENTS_META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")

    return generate_atomically(folder, digest, complete, generate, "demo events")


def load_events(path) -> Events:
    """The event stream an :func:`ensure_demo_events` folder (or its ``events.npz``) holds."""
    from pathlib import Path

    path = Path(path)
    if path.is_dir():
        path = path / DEMO_EVENTS_FILE
    with np.load(path) as data:
        return Events(data["t"], data["x"], data["y"], data["p"])
