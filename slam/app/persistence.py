"""Saving and loading a session: the neural map, the mapper's keyframes and the tracked trajectory.

One file (``map.pt`` by default) written by ``torch.save`` holding only two things: a JSON manifest
(format name, version, map config and backend, counts) and a flat dict of named tensors. It is read
back with ``torch.load(weights_only=True)``, which refuses anything but tensors and plain containers,
so a map file from elsewhere can never run code. Every file this module writes goes through
``atomic_path``: a temporary file in the target's folder, flushed and fsynced, then renamed over the
target, so a crash or a kill mid-write leaves the previous file (or none), never half of one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from slam.engine.mapper import Mapper, RaySet
from slam.map.neural_map import NeuralMapConfig, NeuralSDFMap, build_map

FORMAT = "neural-slam-map"
#: 2: grids without the corner index (corner_keys / corner_rows; the block tables hold the same rows)
VERSION = 2
#: versions this build reads: version 1 files also hold a corner index, which loading ignores
READABLE_VERSIONS = (1, 2)


class MapFileError(ValueError):
    """A map file cannot be read: missing, corrupt, not a map, or of an unsupported version."""


# --------------------------------------------------------------------------------------- atomic files


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` (same suffix, so writers that pick a format by suffix
    work); when the block succeeds the file is fsynced and renamed over ``path``, else removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        # mkstemp makes the file private (0600); outputs get the permissions any new file would
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _read_umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it: done once, at import
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _fsync_dir(folder: Path) -> None:
    # the rename is durable only once the directory entry is on disk (not possible on every OS)
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_trajectory_atomic(path: str | os.PathLike, timestamps: np.ndarray, poses: np.ndarray) -> None:
    """A TUM trajectory file (camera-to-world), written atomically."""
    from slam.core.trajectory import Trajectory, write_tum

    with atomic_path(path) as tmp:
        write_tum(tmp, Trajectory(np.asarray(timestamps, np.float64), np.asarray(poses).reshape(-1, 4, 4)))


def write_mesh_atomic(path: str | os.PathLike, mesh: Any) -> None:
    """An ``open3d.geometry.TriangleMesh`` as PLY (or any suffix Open3D knows), written atomically."""
    import open3d as o3d

    with atomic_path(path) as tmp:
        if not o3d.io.write_triangle_mesh(str(tmp), mesh):
            raise OSError(f"{path}: Open3D could not write the mesh")


# ------------------------------------------------------------------------------------------ snapshot


@dataclass
class SessionSnapshot:
    """What a map file holds, in memory."""

    map_state: dict[str, Any]  # NeuralSDFMap.state()
    keyframes: list[RaySet] = field(default_factory=list)
    frames_integrated: int = 0
    timestamps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    poses: np.ndarray = field(default_factory=lambda: np.zeros((0, 4, 4)))

    @property
    def map_config(self) -> NeuralMapConfig:
        return NeuralMapConfig.model_validate(self.map_state["config"])


def capture(neural_map: NeuralSDFMap, mapper: Mapper | None, timestamps, poses) -> SessionSnapshot:
    """A consistent copy of the map (under its lock), the mapper's keyframes and a trajectory."""
    keyframes = list(mapper.keyframes) if mapper is not None else []
    return SessionSnapshot(
        map_state=neural_map.state(),
        keyframes=keyframes,
        frames_integrated=mapper.frames_integrated if mapper is not None else 0,
        timestamps=np.asarray(timestamps, dtype=np.float64).reshape(-1),
        poses=np.asarray(poses, dtype=np.float64).reshape(-1, 4, 4),
    )


def restore(snapshot: SessionSnapshot, device: str = "auto") -> NeuralSDFMap:
    """A new map holding the snapshot's state (built from the saved map config, on ``device``)."""
    cfg = snapshot.map_config.model_copy(update={"device": device})
    neural_map = build_map(cfg)
    saved_backend = snapshot.map_state["backend"]
    if neural_map.backend_name != saved_backend:
        raise MapFileError(
            f"the map was saved by the {saved_backend!r} backend but this machine builds {neural_map.backend_name!r} "
            "(set map.backend to match)"
        )
    neural_map.load_state(snapshot.map_state)
    return neural_map


def open_map(path: str | os.PathLike, device: str = "auto") -> tuple[NeuralSDFMap, SessionSnapshot]:
    """Load a map file into a new map; every failure is a ``MapFileError`` naming the file."""
    snapshot = load_session(path)
    try:
        return restore(snapshot, device), snapshot
    except MapFileError as exc:
        raise MapFileError(f"{path}: {exc}") from None
    except (RuntimeError, ValueError, KeyError) as exc:  # tables inconsistent with each other
        raise MapFileError(f"{path}: the map does not load ({type(exc).__name__}: {exc})") from None


def restore_mapper(mapper: Mapper, snapshot: SessionSnapshot) -> None:
    """Give a fresh mapper (built on the restored map) the saved keyframes and frame count, so it keeps
    replaying old views (no forgetting) and does not redo its first-frame fitting."""
    mapper.keyframes = list(snapshot.keyframes)
    mapper.frames_integrated = snapshot.frames_integrated


# ----------------------------------------------------------------------------------------- the file


class _GridManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    voxel_size: float
    block: int
    num_corners: int


class MapManifest(BaseModel):
    """The JSON part of a map file."""

    model_config = ConfigDict(extra="forbid")
    format: str
    version: int
    created_unix: float
    backend: str
    map_config: dict[str, Any]
    grids: list[_GridManifest]
    param_names: list[str]
    keyframes: int
    keyframe_color: bool
    frames_integrated: int
    trajectory_poses: int


_GRID_TENSORS = ("block_keys", "block_tables")


def _pack(snapshot: SessionSnapshot) -> tuple[MapManifest, dict[str, torch.Tensor]]:
    state = snapshot.map_state
    tensors: dict[str, torch.Tensor] = {"map.hits": state["hits"]}
    grids = []
    for i, g in enumerate(state["grids"]):
        grids.append(
            _GridManifest(voxel_size=g["voxel_size"], block=g["block"], num_corners=g["num_corners"])
        )
        for name in _GRID_TENSORS:
            tensors[f"map.grids.{i}.{name}"] = g[name].cpu()
    for name, value in state["params"].items():
        tensors[f"map.params.{name}"] = value
    kfs = snapshot.keyframes
    color = bool(kfs) and all(k.color is not None for k in kfs)
    if kfs:
        tensors["keyframes.sizes"] = torch.tensor([len(k) for k in kfs], dtype=torch.int64)
        tensors["keyframes.poses"] = torch.from_numpy(np.stack([k.pose for k in kfs]).astype(np.float64))
        tensors["keyframes.dirs"] = torch.cat([k.dirs for k in kfs]).cpu()
        tensors["keyframes.ray_depth"] = torch.cat([k.ray_depth for k in kfs]).cpu()
        tensors["keyframes.cos"] = torch.cat([k.cos for k in kfs]).cpu()
        if color:
            tensors["keyframes.color"] = torch.cat([k.color for k in kfs]).cpu()
        if any(k.origins is not None for k in kfs):  # LiDAR rays leave from where the sensor was
            tensors["keyframes.origins"] = torch.cat(
                [torch.zeros(len(k), 3) if k.origins is None else k.origins.cpu() for k in kfs]
            )
    tensors["trajectory.timestamps"] = torch.from_numpy(np.ascontiguousarray(snapshot.timestamps, np.float64))
    tensors["trajectory.poses"] = torch.from_numpy(np.ascontiguousarray(snapshot.poses, np.float64))
    manifest = MapManifest(
        format=FORMAT,
        version=VERSION,
        created_unix=time.time(),
        backend=state["backend"],
        map_config=state["config"],
        grids=grids,
        param_names=sorted(state["params"]),
        keyframes=len(kfs),
        keyframe_color=color,
        frames_integrated=snapshot.frames_integrated,
        trajectory_poses=len(snapshot.timestamps),
    )
    return manifest, tensors


def save_session(path: str | os.PathLike, snapshot: SessionSnapshot) -> Path:
    """Write ``snapshot`` to ``path`` atomically; returns the path."""
    path = Path(path)
    manifest, tensors = _pack(snapshot)
    with atomic_path(path) as tmp:
        torch.save({"manifest": manifest.model_dump_json(), "tensors": tensors}, tmp)
    return path


def read_manifest(path: str | os.PathLike) -> MapManifest:
    return _read(Path(path))[0]


def load_session(path: str | os.PathLike) -> SessionSnapshot:
    """Read a map file written by ``save_session``; ``MapFileError`` names the file and the problem."""
    path = Path(path)
    manifest, tensors = _read(path)

    def tensor(name: str) -> torch.Tensor:
        if name not in tensors:
            raise MapFileError(f"{path}: tensor {name!r} is missing (truncated or corrupt map file)")
        return tensors[name]

    grids = []
    for i, g in enumerate(manifest.grids):
        grid = {"voxel_size": g.voxel_size, "block": g.block, "num_corners": g.num_corners}
        grid.update({name: tensor(f"map.grids.{i}.{name}") for name in _GRID_TENSORS})
        grids.append(grid)
    map_state = {
        "config": manifest.map_config,
        "backend": manifest.backend,
        "grids": grids,
        "hits": tensor("map.hits"),
        "params": {name: tensor(f"map.params.{name}") for name in manifest.param_names},
    }
    keyframes: list[RaySet] = []
    if manifest.keyframes:
        sizes = tensor("keyframes.sizes").tolist()
        poses = tensor("keyframes.poses").numpy()
        if len(sizes) != manifest.keyframes or poses.shape != (manifest.keyframes, 4, 4):
            raise MapFileError(
                f"{path}: keyframe tables do not match the manifest's {manifest.keyframes} keyframes"
            )
        parts = {
            name: torch.split(tensor(f"keyframes.{name}"), sizes)
            for name in ("dirs", "ray_depth", "cos")
            + (("color",) if manifest.keyframe_color else ())
            + (("origins",) if "keyframes.origins" in tensors else ())
        }
        for k in range(manifest.keyframes):
            color = parts["color"][k] if manifest.keyframe_color else None
            origins = parts["origins"][k] if "origins" in parts else None
            keyframes.append(
                RaySet(
                    parts["dirs"][k], parts["ray_depth"][k], parts["cos"][k], color, poses[k].copy(), origins
                )
            )
    timestamps = tensor("trajectory.timestamps").numpy()
    poses = tensor("trajectory.poses").numpy().reshape(-1, 4, 4)
    if len(timestamps) != manifest.trajectory_poses or len(poses) != len(timestamps):
        raise MapFileError(
            f"{path}: trajectory tables do not match the manifest's {manifest.trajectory_poses} poses"
        )
    return SessionSnapshot(map_state, keyframes, manifest.frames_integrated, timestamps, poses)


def _read(path: Path) -> tuple[MapManifest, dict[str, torch.Tensor]]:
    if not path.is_file():
        raise MapFileError(f"{path}: no such map file")
    try:
        # weights_only: tensors and plain containers only; a crafted file cannot run code here
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip, pickle and EOF errors all mean the same to the user
        raise MapFileError(f"{path}: not a readable map file ({type(exc).__name__}: {exc})") from None
    if (
        not isinstance(raw, dict)
        or not isinstance(raw.get("manifest"), str)
        or not isinstance(raw.get("tensors"), dict)
    ):
        raise MapFileError(f"{path}: not a {FORMAT} file (no manifest)")
    try:
        head = json.loads(raw["manifest"])
    except json.JSONDecodeError as exc:
        raise MapFileError(f"{path}: manifest is not valid JSON ({exc})") from None
    if not isinstance(head, dict) or head.get("format") != FORMAT:
        raise MapFileError(
            f"{path}: not a {FORMAT} file (format {head.get('format') if isinstance(head, dict) else None!r})"
        )
    if head.get("version") not in READABLE_VERSIONS:
        raise MapFileError(
            f"{path}: map format version {head.get('version')!r} is not supported "
            f"(this build reads versions {', '.join(map(str, READABLE_VERSIONS))})"
        )
    try:
        manifest = MapManifest.model_validate(head)
    except ValidationError as exc:
        where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise MapFileError(f"{path}: malformed manifest: {where}") from None
    tensors = raw["tensors"]
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in tensors.items()):
        raise MapFileError(f"{path}: the tensor table holds something other than named tensors")
    return manifest, tensors
