"""Generate the LiDAR demo sequence once, in the KITTI odometry layout, and cache it.

The folder ``<cache root>/lidar_demo/<digest>`` (cache root: ``$SLAM_CACHE_DIR``, else
``~/.cache/neural-slam``; digest: a short hash of every parameter and the generator version) holds::

    velodyne/NNNNNN.bin        float32 x y z intensity per point, LiDAR frame (x forward, y left, z up);
                               each point in the sensor frame at its own firing time: NOT deskewed
    velodyne_times/NNNNNN.bin  float32 per point: its time in seconds relative to the scan's times.txt
                               stamp, i.e. to the END of the sweep, in (−0.1, 0] at 10 Hz
    labels/NNNNNN.label        uint32 per point (SemanticKITTI's layout): the class of the surface hit,
                               ``drivers.sim.outdoor.LABELS`` (0 = ground)
    poses.txt                  KITTI ground truth: camera-0 poses, Tr · T_lidar · Tr⁻¹, row-major 3×4
    calib.txt                  P0–P3 and Tr (LiDAR to camera 0, KITTI's axes convention)
    times.txt                  one timestamp a scan (s): the END of its sweep
    gt_mesh.ply                the scene's exact mesh, in the world frame of the poses
    sequence.json              parameters, generator version, path length, statistics

**Which instant a scan's pose refers to: the end of its sweep.** Scan ``k`` sweeps the interval
``(k·T − T, k·T]`` (``T = 1 / rate_hz``) and ``times.txt`` holds ``k·T``; ``poses.txt`` holds the pose at
that instant, which is also the instant ``slam.frontends.lidar_preprocess.deskew`` compensates a scan to and the one
KISS-ICP reports. World frame: the LiDAR frame at the end of scan 0, so the first pose is the identity
(as in KITTI). The ``kitti`` driver converts the poses back to the LiDAR frame with ``Tr``.

The drive is one loop of ``drivers.sim.outdoor.VehiclePath`` (about 355 m, 65 s, 655 scans by default) and
ends where it started. Everything written is a deterministic function of the parameters; scans are
generated into a partial folder and renamed into place when complete (``drivers.sim.cache``).
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

from drivers.sim.cache import cache_folder, config_digest, finished_count, generate_atomically
from drivers.sim.lidar import SpinningLidar, Sweep, simulate_sweep
from drivers.sim.outdoor import LABELS, OutdoorScene, VehiclePath, build_outdoor_scene
from slam.core.geometry import invert_pose

log = logging.getLogger(__name__)

GENERATOR_VERSION = 2  # 2: inner-street route, denser buildings and street furniture
SEQUENCE_FILE = "sequence.json"
MESH_FILE = "gt_mesh.ply"
SWEEP_INSTANT = "end"
#: LiDAR to camera 0 with KITTI's axes (camera x right, y down, z forward) and an offset like KITTI's
TR_LIDAR_TO_CAMERA = np.array(
    [[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, -0.08], [1.0, 0.0, 0.0, -0.27], [0.0, 0.0, 0.0, 1.0]]
)
# KITTI-like projection matrices (unused by the LiDAR pipeline, written so the calib file is complete)
_K = np.array([[718.856, 0.0, 607.1928], [0.0, 718.856, 185.2157], [0.0, 0.0, 1.0]])
_BASELINES = (0.0, -0.54, 0.06, -0.48)


@dataclass(frozen=True)
class LidarSequenceConfig:
    seed: int = 0
    scans: int | None = None  # None: one whole loop
    lidar: SpinningLidar = field(default_factory=SpinningLidar)
    noise: bool = True  # range noise and dropouts
    speed: float = 8.0  # cruise speed (m/s); turns are slower

    def __post_init__(self) -> None:
        if self.scans is not None and self.scans < 1:
            raise ValueError(f"scans must be >= 1, got {self.scans}")
        if not self.speed > 0:
            raise ValueError(f"speed must be positive, got {self.speed}")

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def digest(self) -> str:
        return config_digest(self.to_dict(), GENERATOR_VERSION)


def sequence_folder(config: LidarSequenceConfig, cache_root: Path | None = None) -> Path:
    return cache_folder("lidar_demo", config.digest, cache_root)


def is_complete(folder: Path, config: LidarSequenceConfig | None = None) -> bool:
    """True when ``folder`` holds a finished sequence (for ``config``, when given)."""
    scans = finished_count(
        folder / SEQUENCE_FILE, GENERATOR_VERSION, None if config is None else config.digest, "scans"
    )
    if scans is None:
        return False
    return (folder / MESH_FILE).is_file() and (folder / "velodyne" / f"{scans - 1:06d}.bin").is_file()


def ensure_sequence(
    config: LidarSequenceConfig, cache_root: Path | None = None, progress: bool = True
) -> Path:
    """The folder of ``config``'s sequence, generating it first unless a finished one is cached."""
    return generate_atomically(
        sequence_folder(config, cache_root),
        config.digest,
        lambda folder: is_complete(folder, config),
        lambda partial: generate_sequence(config, partial, progress=progress),
        "lidar demo",
    )


def scan_rng(seed: int, index: int) -> np.random.Generator:
    """The noise generator of one scan: independent of the order in which scans are generated."""
    return np.random.default_rng([int(seed), int(index), 0x11DA])


class SequenceWorld:
    """The scene, the path and the sensor of a sequence; simulates and writes single scans.

    One per process (Open3D's raycasting scene cannot be pickled).
    """

    def __init__(self, config: LidarSequenceConfig) -> None:
        self.config = config
        self.scene: OutdoorScene = build_outdoor_scene(config.seed)
        self.path = VehiclePath(self.scene.layout, self.scene.terrain, speed=config.speed)
        self.raycaster = self.scene.raycasting_scene()
        period = config.lidar.period
        self.scans = config.scans if config.scans is not None else int(self.path.duration // period) + 1
        self.times = np.arange(self.scans) * period  # end of each sweep
        # world = the LiDAR frame at the end of scan 0
        self.world_from_scene = invert_pose(self.path.poses(np.array(0.0)))

    def lidar_poses(self) -> np.ndarray:
        """Ground truth: LiDAR-to-world at the end of each sweep, scans×4×4."""
        return self.world_from_scene @ self.path.poses(self.times)

    def sweep(self, index: int) -> Sweep:
        rng = scan_rng(self.config.seed, index) if self.config.noise else None
        return simulate_sweep(
            self.config.lidar,
            self.raycaster,
            self.scene.triangle_label,
            self.path.poses,
            self.times[index],
            rng,
        )

    def write_scan(self, index: int, out_dir: Path) -> tuple[int, int]:
        """Write scan ``index``'s files; returns (index, number of points)."""
        sweep = self.sweep(index)
        name = f"{index:06d}"
        np.column_stack([sweep.points, sweep.intensity]).astype("<f4").tofile(
            out_dir / "velodyne" / f"{name}.bin"
        )
        sweep.times.astype("<f4").tofile(out_dir / "velodyne_times" / f"{name}.bin")
        sweep.label.astype("<u4").tofile(out_dir / "labels" / f"{name}.label")
        return index, len(sweep.points)


_WORKER: tuple[SequenceWorld, Path] | None = None


def _worker_init(config: LidarSequenceConfig, out_dir: str) -> None:
    global _WORKER
    _WORKER = (SequenceWorld(config), Path(out_dir))


def _worker_scan(index: int) -> tuple[int, int]:
    assert _WORKER is not None
    world, out_dir = _WORKER
    return world.write_scan(index, out_dir)


def default_workers(scans: int, lidar: SpinningLidar) -> int:
    """Processes to generate with: up to 2 (one per core) when the sequence repays their start-up."""
    if scans * lidar.beams * lidar.columns < 50 * 64 * 1024:
        return 1
    return max(1, min(2, os.cpu_count() or 1))


def write_calib(path: Path) -> None:
    lines = []
    for k, baseline in enumerate(_BASELINES):
        proj = np.column_stack([_K, _K @ np.array([baseline, 0.0, 0.0])])
        lines.append(f"P{k}: " + " ".join(f"{v:.12e}" for v in proj.ravel()))
    lines.append("Tr: " + " ".join(f"{v:.12e}" for v in TR_LIDAR_TO_CAMERA[:3].ravel()))
    path.write_text("\n".join(lines) + "\n")


def write_kitti_poses(path: Path, lidar_poses: np.ndarray) -> None:
    """LiDAR-to-world poses as KITTI's camera-0 poses, ``Tr · T_lidar · Tr⁻¹``."""
    cam = TR_LIDAR_TO_CAMERA @ lidar_poses @ invert_pose(TR_LIDAR_TO_CAMERA)
    np.savetxt(path, cam[:, :3, :4].reshape(-1, 12), fmt="%.12e")


def generate_sequence(
    config: LidarSequenceConfig, out_dir: Path, progress: bool = True, workers: int | None = None
) -> dict:
    """Simulate ``config``'s sequence into ``out_dir`` (which must exist); returns the sequence.json content.

    ``workers`` processes simulate scans in parallel (default: ``default_workers``); the files written do
    not depend on it.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    world = SequenceWorld(config)
    for sub in ("velodyne", "velodyne_times", "labels"):
        (out_dir / sub).mkdir(exist_ok=True)
    workers = default_workers(world.scans, config.lidar) if workers is None else max(1, int(workers))
    counts = np.zeros(world.scans, dtype=np.int64)
    bar = tqdm(total=world.scans, desc="lidar demo", unit="scan", disable=not progress, leave=False)
    with bar:
        if workers == 1:
            for i in range(world.scans):
                counts[i] = world.write_scan(i, out_dir)[1]
                bar.update()
        else:
            # spawn, not fork: the parent already runs Open3D's threads
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(workers, initializer=_worker_init, initargs=(config, str(out_dir))) as pool:
                for i, n in pool.imap_unordered(_worker_scan, range(world.scans), chunksize=4):
                    counts[i] = n
                    bar.update()
    poses = world.lidar_poses()
    write_kitti_poses(out_dir / "poses.txt", poses)
    write_calib(out_dir / "calib.txt")
    np.savetxt(out_dir / "times.txt", world.times, fmt="%.6f")
    mesh = world.scene.legacy_mesh(transform=world.world_from_scene)
    o3d.io.write_triangle_mesh(str(out_dir / MESH_FILE), mesh, write_ascii=False)
    steps = np.linalg.norm(np.diff(poses[:, :3, 3], axis=0), axis=1)
    meta = {
        "generator": "slam.sim outdoor LiDAR drive",
        "generator_version": GENERATOR_VERSION,
        "digest": config.digest,
        **config.to_dict(),
        "scans": int(world.scans),
        "sweep_instant": SWEEP_INSTANT,
        "world_frame": "LiDAR frame at the end of scan 0",
        "labels": LABELS,
        "path_length_m": float(steps.sum()),
        "loop_length_m": float(world.path.length),
        "loop_duration_s": float(world.path.duration),
        "start_to_end_m": float(np.linalg.norm(poses[-1, :3, 3] - poses[0, :3, 3])),
        "points_per_scan": {"mean": float(counts.mean()), "min": int(counts.min()), "max": int(counts.max())},
        "triangles": int(len(world.scene.triangles)),
        "complete": True,
    }
    # written last: its presence (with "complete") marks the folder finished
    (out_dir / SEQUENCE_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta
