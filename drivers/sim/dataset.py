"""Generate the demo scene's RGB-D sequence once, in the 7-Scenes layout, and cache it.

The folder ``<cache root>/demo/<digest>`` (cache root: ``$SLAM_CACHE_DIR``, else
``~/.cache/neural-slam``; digest: a short hash of every parameter and the generator version) holds::

    frame-NNNNNN.color.jpg   RGB, JPEG quality 95
    frame-NNNNNN.depth.png   uint16 millimetres, 0 = invalid
    frame-NNNNNN.pose.txt    4×4 camera-to-world (OpenCV axes)
    camera-intrinsics.txt    3×3 K
    trajectory.txt           the ground truth in TUM format (t tx ty tz qx qy qz qw), t = index / fps
    gt_mesh.ply              the scene's exact mesh, vertex-coloured
    scene.json               parameters, generator version, frame count, room bounds, valid-pixel stats

A sequence is rendered into a hidden partial folder and renamed into place when complete
(``drivers.sim.cache``), so an interrupted run is never mistaken for a finished one; a finished folder is
reused as is. Everything written is a deterministic function of the parameters.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import open3d as o3d
from PIL import Image

from drivers.sim.cache import cache_folder, config_digest, finished_count, generate_atomically
from drivers.sim.depth_noise import DepthNoiseParams, apply_color_noise, apply_depth_noise
from drivers.sim.indoor import build_indoor_scene, camera_trajectory
from drivers.sim.render import Renderer
from slam.core.frames import CameraIntrinsics
from slam.core.geometry import pose_to_tum

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1
SCENE_FILE = "scene.json"
MESH_FILE = "gt_mesh.ply"
# the default camera: 640×480 with fx = fy = 525, principal point at the image centre
BASE_WIDTH, BASE_HEIGHT, BASE_FOCAL = 640, 480, 525.0


@dataclass(frozen=True)
class DemoSceneConfig:
    seed: int = 0
    frames: int = 300
    width: int = 640
    height: int = 480
    fps: float = 30.0
    noise: bool = True
    noise_params: DepthNoiseParams = field(default_factory=DepthNoiseParams)

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise ValueError(f"frames must be >= 1, got {self.frames}")
        if self.width < 8 or self.height < 8:
            raise ValueError(f"image size must be at least 8x8, got {self.width}x{self.height}")
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}")

    @property
    def intrinsics(self) -> CameraIntrinsics:
        """fx = fy = 525 at 640×480, scaled with the resolution; principal point at the image centre."""
        return CameraIntrinsics(
            fx=BASE_FOCAL * self.width / BASE_WIDTH,
            fy=BASE_FOCAL * self.height / BASE_HEIGHT,
            cx=(self.width - 1) / 2.0,
            cy=(self.height - 1) / 2.0,
            width=self.width,
            height=self.height,
        )

    def to_dict(self) -> dict:
        out = asdict(self)
        out["noise_params"] = self.noise_params.to_dict()
        return out

    @property
    def digest(self) -> str:
        return config_digest(self.to_dict(), GENERATOR_VERSION)


def scene_folder(config: DemoSceneConfig, cache_root: Path | None = None) -> Path:
    return cache_folder("demo", config.digest, cache_root)


def is_complete(folder: Path, config: DemoSceneConfig | None = None) -> bool:
    """True when ``folder`` holds a finished sequence (for ``config``, when given)."""
    frames = finished_count(
        folder / SCENE_FILE, GENERATOR_VERSION, None if config is None else config.digest, "frames"
    )
    if frames is None:
        return False
    return (folder / MESH_FILE).is_file() and (folder / _name(frames - 1, "depth.png")).is_file()


def ensure_scene(config: DemoSceneConfig, cache_root: Path | None = None, progress: bool = True) -> Path:
    """The folder of ``config``'s sequence, rendering it first unless a finished one is cached."""
    return generate_atomically(
        scene_folder(config, cache_root),
        config.digest,
        lambda folder: is_complete(folder, config),
        lambda partial: generate_scene(config, partial, progress=progress),
        "demo scene",
    )


def _name(index: int, suffix: str) -> str:
    return f"frame-{index:06d}.{suffix}"


def frame_rng(seed: int, index: int) -> np.random.Generator:
    """The noise generator of one frame: independent of the order in which frames are rendered."""
    return np.random.default_rng([int(seed), int(index), 0x5E75])


class _FrameWriter:
    """Renders and writes single frames; one per process (Open3D's raycasting scene cannot be pickled)."""

    def __init__(self, config: DemoSceneConfig, out_dir: Path) -> None:
        self.config = config
        self.out_dir = Path(out_dir)
        self.scene = build_indoor_scene(config.seed)
        self.poses = camera_trajectory(config.frames, config.seed, config.fps, center=self.scene.center)
        self.renderer = Renderer(self.scene, config.intrinsics)

    def __call__(self, i: int) -> tuple[int, float]:
        """Write frame ``i``; returns (i, fraction of valid depth pixels)."""
        config, out_dir = self.config, self.out_dir
        out = self.renderer.render(self.poses[i])
        depth, color = out.depth, out.color
        if config.noise:
            rng = frame_rng(config.seed, i)
            depth = apply_depth_noise(depth, out.cos_incidence, rng, config.noise_params)
            color = apply_color_noise(color, rng, config.noise_params)
        depth_mm = np.clip(np.round(depth * 1000.0), 0, 65534).astype(np.uint16)
        Image.fromarray(depth_mm).save(out_dir / _name(i, "depth.png"), compress_level=1)
        Image.fromarray(color).save(out_dir / _name(i, "color.jpg"), quality=95)
        np.savetxt(out_dir / _name(i, "pose.txt"), self.poses[i], fmt="%.10f", delimiter="\t")
        return i, np.count_nonzero(depth_mm) / depth_mm.size


_WORKER: _FrameWriter | None = None


def _worker_init(config: DemoSceneConfig, out_dir: str) -> None:
    global _WORKER
    _WORKER = _FrameWriter(config, Path(out_dir))


def _worker_frame(i: int) -> tuple[int, float]:
    assert _WORKER is not None
    return _WORKER(i)


def default_workers(config: DemoSceneConfig) -> int:
    """Processes to render with: up to 2 (one per core) for sequences big enough to repay their start-up."""
    if config.frames * config.width * config.height < 20 * 640 * 480:
        return 1
    return max(1, min(2, os.cpu_count() or 1))


def generate_scene(
    config: DemoSceneConfig, out_dir: Path, progress: bool = True, workers: int | None = None
) -> dict:
    """Render ``config``'s sequence into ``out_dir`` (which must exist); returns the scene.json content.

    ``workers`` processes render frames in parallel (default: ``default_workers``); the files written do
    not depend on it.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    workers = default_workers(config) if workers is None else max(1, int(workers))
    writer = _FrameWriter(config, out_dir)
    scene, poses, intr = writer.scene, writer.poses, config.intrinsics
    np.savetxt(out_dir / "camera-intrinsics.txt", intr.matrix, fmt="%.10g")
    valid = np.zeros(config.frames)
    bar = tqdm(total=config.frames, desc="demo scene", unit="frame", disable=not progress, leave=False)
    with bar:
        if workers == 1:
            for i in range(config.frames):
                valid[i] = writer(i)[1]
                bar.update()
        else:
            # spawn, not fork: the parent may already run Open3D's threads
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(workers, initializer=_worker_init, initargs=(config, str(out_dir))) as pool:
                for i, fraction in pool.imap_unordered(_worker_frame, range(config.frames), chunksize=2):
                    valid[i] = fraction
                    bar.update()
    tum = pose_to_tum(poses)
    times = np.arange(config.frames) / config.fps
    np.savetxt(out_dir / "trajectory.txt", np.column_stack([times, tum]), fmt="%.9f")
    o3d.io.write_triangle_mesh(str(out_dir / MESH_FILE), scene.legacy_mesh(), write_ascii=False)
    meta = {
        "generator": "slam.sim demo room",
        "generator_version": GENERATOR_VERSION,
        "digest": config.digest,
        **config.to_dict(),
        "intrinsics": asdict(intr),
        "room": {"min": scene.room_min.tolist(), "max": scene.room_max.tolist()},
        "parts": len(scene.parts),
        "triangles": int(len(scene.triangles)),
        "valid_fraction": {"mean": float(valid.mean()), "min": float(valid.min()), "max": float(valid.max())},
        "complete": True,
    }
    # written last: its presence (with "complete") marks the folder finished
    (out_dir / SCENE_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta
