"""Mapper: fits the neural SDF to depth (and colour) observations.

Each tracked frame allocates the voxels around its surface points. Keyframes (by motion, or when the
frame sees little of the map) are kept as sparse sets of camera rays with their depth and colour. A
mapping step draws a few thousand rays, half from the current frame and half from random keyframes
so the map does not forget, and places samples along each ray:

- near the surface (|δ| < truncation): the target is the point-to-plane distance δ·|n·d| (δ along the
  ray, n the surface normal from the depth image, d the ray direction), which is the true SDF for a
  locally planar surface where the raw along-ray δ would overestimate it on oblique surfaces;
- in free space, between the camera and the surface: the SDF is at least the truncation, so
  predictions below it are penalised, predictions above are not;
- an eikonal term keeps |∇SDF| near 1 on a subset of near-surface samples, and a colour term fits the
  colour head at the surface.

Every sensor reduces to rays from an origin to an observed surface point with a surface normal (a
:class:`~slam.core.observation.RaySet`, built by the sensor's frontend at the tracked pose): an RGB-D
frame's pixels (origin: the camera centre; normals from the depth image, ``slam.frontends.rgbd``), or a
LiDAR scan's deskewed points (origin: the sensor at each point's firing time; normals from the ground
planes and local point neighbourhoods, ``slam.frontends.lidar``). ``free_space_depth`` keeps the free-space samples of long LiDAR rays near the surface, where the map is allocated.

Embeddings are updated with a row-wise lazy Adam (``slam.map.optim.RowAdam``: SparseAdam's update, only the
rows a step touched), the decoders with Adam.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from pydantic import Field
from scipy.spatial import cKDTree

from slam.core.config import StrictConfig
from slam.core.geometry import rotation_angle
from slam.core.observation import Observation, RaySet
from slam.map.neural_map import NeuralSDFMap
from slam.map.optim import RowAdam
from slam.map.voxel_grid import grow_rows


class MapperConfig(StrictConfig):
    iterations: int = Field(1, ge=0, description="optimizer steps per mapped frame")
    every: int = Field(
        1,
        ge=1,
        description="map every n-th tracked frame (the first always): consecutive frames overlap "
        "almost entirely, so skipped ones cost the map little and save their whole mapping time",
    )
    first_frame_iterations: int = Field(60, ge=0, description="optimizer steps on the first frame")
    rays: int = Field(3072, ge=64, description="rays drawn per step (current frame and keyframes)")
    current_fraction: float = Field(
        0.5, ge=0, le=1, description="share of each step's rays from the current frame"
    )
    surface_samples: int = Field(3, ge=1, description="samples per ray within the truncation band")
    free_samples: int = Field(1, ge=0, description="samples per ray in free space before the surface")
    truncation: float = Field(0.08, gt=0, description="truncation band half-width (m)")
    eikonal_weight: float = Field(
        0.0,
        ge=0,
        description="weight of the |grad| = 1 term (costs a double backward; the point-to-plane "
        "targets already give slope 1 near the surface, and on 7-Scenes it did not change accuracy)",
    )
    eikonal_samples: int = Field(512, ge=0, description="near-surface samples that carry the eikonal term")
    free_weight: float = Field(0.5, ge=0, description="weight of the free-space term")
    free_space_depth: float = Field(
        0.0,
        ge=0,
        description="free-space samples lie within this distance (m) before the truncation band; "
        "0 = anywhere from 0.1 m of the sensor (long LiDAR rays: most of such a ray is unallocated space)",
    )
    color_weight: float = Field(0.1, ge=0, description="weight of the colour term")
    lr_embeddings: float = Field(1e-2, gt=0, description="learning rate of the voxel embeddings")
    lr_decoder: float = Field(2e-3, gt=0, description="learning rate of the decoders")
    freeze_decoder_after: int = Field(
        30,
        ge=0,
        description="frames after which the shared decoder stops learning (0 = never): a decoder "
        "that keeps changing moves the surface everywhere at once, which the tracker sees as drift",
    )
    keyframe_translation: float = Field(0.10, gt=0, description="new keyframe after this much motion (m)")
    keyframe_rotation_deg: float = Field(
        10.0, gt=0, description="new keyframe after this much rotation (deg)"
    )
    keyframe_rays: int = Field(4000, ge=100, description="rays kept per keyframe")
    keyframe_max: int = Field(
        1000,
        ge=0,
        description="keyframes kept at most (0 = all): beyond it the most redundant one goes, the older of the "
        "two keyframes closest in pose (translation in keyframe_translation units, rotation in "
        "keyframe_rotation_deg units), never the newest. A keyframe holds ~32 bytes a ray (128 KiB at 4000 "
        "rays); uncapped, a live LiDAR service at 10 m/s added ~2 GiB of keyframes an hour",
    )
    pixel_stride: int = Field(2, ge=1, description="RGB-D frames: pixel stride when collecting rays")
    depth_min: float = Field(0.1, ge=0, description="RGB-D frames: ignore depth below this (m)")
    depth_max: float = Field(4.0, gt=0, description="RGB-D frames: ignore depth beyond this (m)")
    allocate_dilation: int = Field(1, ge=0, description="voxels allocated around each observed point")
    mesh_min_hits: int = Field(
        5,
        ge=0,
        description="mesh only space the mapper fitted at least this often: barely fitted space "
        "(behind surfaces, at the edge of the view) holds spurious zero crossings; higher trades completion "
        "for accuracy (7-Scenes 0-599, 1 / 3 / 6 / 12: accuracy 2.57 / 2.46 / 2.36 / 2.26 cm, completion "
        "2.15 / 2.24 / 2.31 / 2.42 cm)",
    )


class Mapper:
    """Online fitting of a NeuralSDFMap; call ``integrate`` with each tracked frame."""

    name = "neural-sdf-mapper"

    def __init__(
        self,
        neural_map: NeuralSDFMap,
        config: MapperConfig | None = None,
        seed: int = 0,
    ) -> None:
        self.map = neural_map
        self.cfg = config or MapperConfig()
        self.rng = np.random.default_rng(seed)
        self.gen = torch.Generator().manual_seed(seed)
        self.keyframes: list[RaySet] = []
        self.frames_integrated = 0
        self.frames_offered = 0  # tracked frames handed to ``integrate``, mapped or not (``every``)
        self._emb_opt: torch.optim.Optimizer | None = None
        self._dec_opt = torch.optim.Adam(neural_map.decoder_parameters(), lr=self.cfg.lr_decoder)
        self.last_loss: dict[str, float] = {}
        self.steps_done = 0  # optimiser steps so far (the service reports their rate)
        #: called before allocating and before each optimiser step: the service sets it to wait while its
        #: tracking thread needs the cores (None: replay and benchmarks, which map in the caller's thread)
        self.before_step: Callable[[], None] | None = None
        from slam.map.meshing import BlockMesher

        self.mesher = BlockMesher(neural_map, min_hits=self.cfg.mesh_min_hits)

    # -- keyframes -----------------------------------------------------------------------------
    def is_keyframe(self, pose: np.ndarray) -> bool:
        if not self.keyframes:
            return True
        last = self.keyframes[-1].pose
        rel = np.linalg.inv(last) @ pose
        return bool(
            np.linalg.norm(rel[:3, 3]) > self.cfg.keyframe_translation
            or np.degrees(rotation_angle(rel[:3, :3])) > self.cfg.keyframe_rotation_deg
        )

    # -- per frame -----------------------------------------------------------------------------
    def integrate(self, obs: Observation, pose: np.ndarray) -> None:
        """Fit the map to a tracked observation's rays at ``pose`` (sensor-to-world); only every
        ``every``-th observation offered is mapped (and its rays built)."""
        self.frames_offered += 1
        if (self.frames_offered - 1) % self.cfg.every:
            return
        current = obs.mapping_rays(np.asarray(pose, dtype=np.float64), self.rng)
        if current is not None:
            self.integrate_rays(current)

    def integrate_rays(self, current: RaySet) -> None:
        """Allocate around, keyframe and fit one frame's rays (at ``current.pose``): the entry point every
        sensor uses."""
        cfg = self.cfg
        pose = current.pose
        if len(current) == 0:
            return
        keyframe = self.is_keyframe(pose)
        steps = cfg.first_frame_iterations if self.frames_integrated == 0 else cfg.iterations
        if steps == 1 and not keyframe:
            # one step samples one batch of this frame's rays: allocate around those only (allocation
            # was a fifth of a mapping step's time); keyframes keep all their rays for later steps
            current = _subset(current, self._current_rays(), self.rng)
        self._yield()
        self._allocate(current)
        if keyframe:
            keep = (
                current
                if len(current) <= cfg.keyframe_rays
                else _subset(current, cfg.keyframe_rays, self.rng)
            )
            self.keyframes.append(keep)
            self._thin_keyframes()
        for _ in range(steps):
            self._yield()
            self.step(current)
        self.frames_integrated += 1

    def _thin_keyframes(self) -> None:
        """Drop keyframes beyond ``keyframe_max``: each time the older of the closest pair in pose space."""
        cap = self.cfg.keyframe_max
        while 0 < cap < len(self.keyframes):
            coords = keyframe_coordinates(
                np.stack([k.pose for k in self.keyframes]),
                self.cfg.keyframe_translation,
                np.radians(self.cfg.keyframe_rotation_deg),
            )
            dist, nearest = cKDTree(coords).query(coords, k=2)
            i = int(np.argmin(dist[:, 1]))
            # the older of the pair: never the newest, which the next keyframe decision compares with
            del self.keyframes[min(i, int(nearest[i, 1]))]

    def refine(self, steps: int) -> int:
        """``steps`` optimiser steps on keyframe rays only, without a current frame (the service spends
        spare mapping time so); returns the steps done (none before the first keyframe). The mesher is not
        told: refined blocks are re-meshed when a frame next marks them, or by a whole-mesh request, so
        idle refinement never crowds new surface out of the mesh updates."""
        if not self.keyframes:
            return 0
        for _ in range(steps):
            self._yield()
            self.step(None)
        return steps

    def _yield(self) -> None:
        if self.before_step is not None:
            self.before_step()

    def _allocate(self, rays: RaySet) -> None:
        pts = _surface_points(rays)
        self.map.allocate(pts, dilate=self.cfg.allocate_dilation)
        self.mesher.mark_dirty(pts)
        self._sync_embedding_optimizer()

    def _sync_embedding_optimizer(self) -> None:
        """RowAdam keeps per-row moments; grow them when the embeddings grew (new rows start at 0)."""
        params = self.map.embedding_parameters()
        if self._emb_opt is None:
            if self.map.sparse_embeddings:
                self._emb_opt = RowAdam(params, lr=self.cfg.lr_embeddings)
            else:  # a dense encoding (hash grid) of fixed size
                self._emb_opt = torch.optim.Adam(params, lr=self.cfg.lr_embeddings)
            return
        if not isinstance(self._emb_opt, RowAdam):
            return
        old_group = list(self._emb_opt.param_groups[0]["params"])
        for old, new in zip(old_group, params):
            if old is new:
                continue
            st = self._emb_opt.state.get(old)
            if st:
                # grow_rows: the moments grow geometrically like the embeddings, new rows start at 0
                st = {
                    "step": st["step"],
                    "exp_avg": grow_rows(st["exp_avg"], new.shape[0]),
                    "exp_avg_sq": grow_rows(st["exp_avg_sq"], new.shape[0]),
                }
            self._emb_opt.follow(old, new, st or None)

    # -- one optimizer step --------------------------------------------------------------------
    def _current_rays(self) -> int:
        """How many of a step's rays come from the current frame."""
        return self.cfg.rays if not self.keyframes else int(self.cfg.rays * self.cfg.current_fraction)

    def step(self, current: RaySet | None) -> float:
        """One optimiser step on rays from ``current`` and the keyframes (None: keyframes only)."""
        cfg = self.cfg
        n_cur = self._current_rays() if current is not None else 0
        batches = [_subset(current, n_cur, self.rng)] if current is not None and n_cur else []
        if self.keyframes:
            n_kf = cfg.rays - n_cur
            which = self.rng.integers(0, len(self.keyframes), size=n_kf)
            for k in np.unique(which):
                batches.append(_subset(self.keyframes[k], int((which == k).sum()), self.rng))
        world_o, world_d, depth, cos, color = _to_world(batches)

        n = depth.shape[0]
        t = cfg.truncation
        # near-surface samples: offsets along the ray within ±t of the surface
        off = (torch.rand(n, cfg.surface_samples, generator=self.gen) * 2 - 1) * t
        s_dist = depth[:, None] + off
        s_target = (-off) * cos[:, None]
        near_x = world_o[:, None, :] + world_d[:, None, :] * s_dist[..., None]
        near_x = near_x.reshape(-1, 3)
        s_target = s_target.reshape(-1)
        xs = [near_x]
        # free-space samples: between the camera (from 0.1 m) and the band
        if cfg.free_samples:
            frac = torch.rand(n, cfg.free_samples, generator=self.gen)
            f_start = torch.full_like(depth, 0.1)
            if cfg.free_space_depth > 0:
                f_start = torch.maximum(f_start, depth - t - cfg.free_space_depth)
            f_dist = f_start[:, None] + frac * (depth[:, None] - t - f_start[:, None]).clamp_min(0)
            free_x = (world_o[:, None, :] + world_d[:, None, :] * f_dist[..., None]).reshape(-1, 3)
            xs.append(free_x)
        x = torch.cat(xs)
        n_eik = min(cfg.eikonal_samples, near_x.shape[0]) if cfg.eikonal_weight > 0 else 0
        x_eik = near_x[:n_eik].clone().requires_grad_(True)
        x_all = torch.cat([x_eik, x[n_eik:]]) if n_eik else x
        n_sdf = x_all.shape[0]
        with_color = color is not None and self.map.color_head is not None and cfg.color_weight > 0
        if with_color:
            # colour at the surface (δ = 0 on each ray), looked up in the same query as the SDF samples
            x_all = torch.cat([x_all, world_o + world_d * depth[:, None]])

        n_near = near_x.shape[0]
        # record_hits: the space the SDF samples fit counts as fitted (the tracker trusts only such space)
        # the compiled lookup (no double backward: the eikonal term needs the torch path)
        compiled = self.map.compiled and not n_eik and isinstance(self._emb_opt, RowAdam)
        tape = None
        if compiled:
            feats, valid, tape = self.map.features_for_training(x_all, record_hits=n_sdf)
        else:
            feats, valid = self.map.features(x_all, sparse_grad=self.map.sparse_embeddings, record_hits=n_sdf)
        sdf, color_valid, valid = self.map.decode_sdf(feats[:n_sdf]), valid[n_sdf:], valid[:n_sdf]
        near_sdf, near_valid = sdf[:n_near], valid[:n_near]
        loss_sdf = _masked_mean((near_sdf - s_target).abs(), near_valid)
        loss = loss_sdf
        losses = {"sdf": loss_sdf.item()}
        if cfg.free_samples:
            free_sdf, free_valid = sdf[n_near:], valid[n_near:]
            # every point between the camera and the observed surface is free, so its SDF is positive;
            # a larger margin (say the truncation) would be wrong for rays grazing a surface, whose
            # perpendicular distance to it is much smaller than the distance along the ray
            loss_free = _masked_mean(torch.relu(-free_sdf), free_valid)
            loss = loss + cfg.free_weight * loss_free
            losses["free"] = loss_free.item()
        if n_eik:
            if self.map.supports_double_backward:
                (grad,) = torch.autograd.grad(sdf[:n_eik].sum(), x_eik, create_graph=True)
            else:
                grad = _finite_difference_gradient(self.map, x_eik.detach(), cfg.truncation / 20)
            loss_eik = _masked_mean((grad.norm(dim=1) - 1.0) ** 2, valid[:n_eik])
            loss = loss + cfg.eikonal_weight * loss_eik
            losses["eikonal"] = loss_eik.item()
        if with_color:
            rgb = self.map.decode_color(feats[n_sdf:])
            loss_rgb = _masked_mean((rgb - color).abs().mean(dim=1), color_valid)
            loss = loss + cfg.color_weight * loss_rgb
            losses["color"] = loss_rgb.item()

        self._dec_opt.zero_grad(set_to_none=True)
        assert self._emb_opt is not None
        self._emb_opt.zero_grad(set_to_none=True)
        loss.backward()
        train_decoder = not (0 < cfg.freeze_decoder_after <= self.frames_integrated)
        # the lock covers only the writes (RowAdam computes its new rows before): the tracking thread reads
        # the map meanwhile, and still never sees new embeddings with the old decoder
        pending = self._emb_opt.prepare() if isinstance(self._emb_opt, RowAdam) and tape is None else None
        with self.map.writing():
            if tape is not None:  # fused: the rows' gradients and their update in one loop, in place
                assert isinstance(self._emb_opt, RowAdam) and feats.grad is not None
                self._emb_opt.step_tape(tape, feats.grad)
            elif pending is not None:
                RowAdam.apply(pending)
            else:
                self._emb_opt.step()
            if train_decoder:
                self._dec_opt.step()
        losses["total"] = loss.item()
        self.last_loss = losses
        self.steps_done += 1
        return losses["total"]

    def extract_mesh(self):
        """The map's mesh (open3d); only blocks observed since the last call are re-meshed."""
        if self.frames_integrated == 0:
            return None
        self.mesher.update()
        return self.mesher.to_open3d()

    def map_bytes(self) -> int:
        return self.map.map_bytes()


def keyframe_coordinates(poses: np.ndarray, translation: float, rotation_rad: float) -> np.ndarray:
    """K×12 coordinates of K 4×4 poses whose Euclidean distances are about sqrt((Δt / translation)² +
    (Δθ / rotation_rad)²): the position over ``translation`` and the rotation matrix over √2·``rotation_rad``
    (the chordal distance ‖R₁ − R₂‖ is 2√2·sin(θ/2) ≈ √2·θ)."""
    poses = np.asarray(poses, dtype=np.float64)
    pos = poses[:, :3, 3] / translation
    rot = poses[:, :3, :3].reshape(len(poses), 9) / (np.sqrt(2.0) * rotation_rad)
    return np.concatenate([pos, rot], axis=1)


def _finite_difference_gradient(neural_map: NeuralSDFMap, x: torch.Tensor, h: float) -> torch.Tensor:
    """Central differences of the SDF, differentiable in the parameters (for backends whose fused
    kernels have no second derivative, as in Neuralangelo)."""
    offsets = torch.eye(3, device=x.device, dtype=x.dtype) * h
    pts = torch.cat(
        [x + offsets[0], x - offsets[0], x + offsets[1], x - offsets[1], x + offsets[2], x - offsets[2]]
    )
    sdf = neural_map.decode_sdf(neural_map.features(pts)[0]).reshape(6, -1)
    return torch.stack([sdf[0] - sdf[1], sdf[2] - sdf[3], sdf[4] - sdf[5]], dim=1) / (2 * h)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp_min(1.0)


def _subset(rays: RaySet, n: int, rng: np.random.Generator) -> RaySet:
    if n >= len(rays):
        return rays
    idx = torch.from_numpy(rng.choice(len(rays), n, replace=False))

    def take(t: torch.Tensor) -> torch.Tensor:
        return t.index_select(0, idx)  # several times faster than t[idx] on CPU

    return RaySet(
        take(rays.dirs),
        take(rays.ray_depth),
        take(rays.cos),
        None if rays.color is None else take(rays.color),
        rays.pose,
        None if rays.origins is None else take(rays.origins),
    )


def _to_world(batches: list[RaySet]):
    origins, dirs, depth, cos, colors = [], [], [], [], []
    with_color = all(b.color is not None for b in batches)
    for b in batches:
        rot = torch.from_numpy(b.pose[:3, :3].astype(np.float32))
        trans = torch.from_numpy(b.pose[:3, 3].astype(np.float32))
        origins.append(trans.expand(len(b), 3) if b.origins is None else b.origins @ rot.T + trans)
        dirs.append(b.dirs @ rot.T)
        depth.append(b.ray_depth)
        cos.append(b.cos)
        if with_color:
            colors.append(b.color)
    return (
        torch.cat(origins),
        torch.cat(dirs),
        torch.cat(depth),
        torch.cat(cos),
        torch.cat(colors) if with_color else None,
    )


def _surface_points(rays: RaySet) -> torch.Tensor:
    rot = torch.from_numpy(rays.pose[:3, :3].astype(np.float32))
    trans = torch.from_numpy(rays.pose[:3, 3].astype(np.float32))
    local = rays.dirs * rays.ray_depth[:, None]
    if rays.origins is not None:
        local = local + rays.origins
    return local @ rot.T + trans
