"""A procedural outdoor scene (streets, building blocks, walls, poles, trees, parked cars on sloped
ground) and a vehicle path around its blocks, both deterministic functions of a seed.

World frame: metres, z up. The street grid has intersections at ``x = i · (block_x + street)``,
``y = j · (block_y + street)``; blocks lie between the streets. The ground is the height field
``Terrain.height`` (a tilted plane plus a broad hill, slopes up to about 8 %) meshed on a 2 m grid that
extends ``margin`` metres beyond the blocks. Every object stands on the ground (its base sunk a little into
it so that no gap shows). Each triangle carries a class label (``LABELS``), which is how a simulated scan
knows which returns are ground.

The vehicle path (:class:`VehiclePath`) drives the street centrelines around an L-shaped group of three
blocks (about 390 m with the default layout, six turns) and comes back to where it started. The route
keeps to inner streets, so there are buildings, trees and parked cars on both sides of every street it
drives (the outer streets border open ground), and it starts halfway along a block, not in a junction. The polyline
of the streets is smoothed into a curve with continuous curvature, the speed is the cruise speed limited
by a lateral acceleration in the turns (and smoothed), and the vehicle keeps its wheels on the ground: its
z axis is the ground normal, its x axis the direction of travel, up to the sway of the body on its
suspension (``VehiclePath.body_sway``, a few tenths of a degree of pitch and roll while moving). The LiDAR
sits ``height`` metres above the ground along the ground normal; its frame is x forward, y left, z up
(KITTI's LiDAR frame).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import open3d as o3d
from scipy.interpolate import CubicSpline
from scipy.ndimage import gaussian_filter1d, minimum_filter1d
from scipy.spatial import cKDTree

#: triangle class labels
LABELS = {"ground": 0, "building": 1, "wall": 2, "pole": 3, "trunk": 4, "crown": 5, "car": 6, "object": 7}
LABEL_COLORS = np.array(
    [
        [0.45, 0.45, 0.42],  # ground
        [0.75, 0.62, 0.52],  # building
        [0.60, 0.58, 0.55],  # wall
        [0.30, 0.30, 0.32],  # pole
        [0.40, 0.28, 0.18],  # trunk
        [0.25, 0.50, 0.22],  # crown
        [0.20, 0.30, 0.60],  # car
        [0.55, 0.35, 0.30],  # object: bins, benches, balconies
    ]
)
TERRAIN_RESOLUTION = 0.5  # m between height-field vertices: fine enough for kerbs and surface texture
KERB = 0.12  # m: sidewalks (and everything off the road) stand this much above the road
ROAD_HALF_WIDTH = 4.0  # m from a street's centreline to its kerb
TEXTURE_RMS = 0.02  # m: height texture of the ground surface (not felt by the vehicle)
SINK = 0.3  # objects reach this far below the ground
CLEARANCE = 2.0  # m from the driven curve to any pole, trunk or parked car (the vehicle is 1.8 m wide)
#: the default loop, as street intersections (i, j): an L around blocks (1, 1), (2, 1) and (1, 2), on inner
#: streets (built up on both sides); (2, 1) is passed straight through, so the drive starts mid-block
DEFAULT_ROUTE = ((1, 1), (2, 1), (3, 1), (3, 2), (2, 2), (2, 3), (1, 3))
ROUTE_SMOOTHING = 10.0  # m: σ of the Gaussian that rounds the route's corners
PATH_SPACING = 0.1  # m between samples of the curve


@dataclass(frozen=True)
class StreetLayout:
    blocks_x: int = 5
    blocks_y: int = 4
    block_x: float = 40.0  # block length along x (m)
    block_y: float = 30.0  # along y
    street: float = 14.0  # street width between blocks, sidewalks included
    margin: float = 60.0  # ground beyond the outer streets

    @property
    def pitch(self) -> np.ndarray:
        return np.array([self.block_x + self.street, self.block_y + self.street])

    def intersection(self, i: float, j: float) -> np.ndarray:
        return np.array([i, j], dtype=np.float64) * self.pitch

    def block_bounds(self, i: int, j: int) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) xy corners of block (i, j), between intersections (i, j) and (i + 1, j + 1)."""
        lo = self.intersection(i, j) + self.street / 2
        return lo, lo + np.array([self.block_x, self.block_y])

    @property
    def extent(self) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) xy corners of the ground."""
        hi = self.intersection(self.blocks_x, self.blocks_y)
        return np.full(2, -self.margin), hi + self.margin


@dataclass(frozen=True)
class Terrain:
    """Ground height ``z = gx·x + gy·y + hill · exp(-|xy - centre|² / (2 σ²))``."""

    gx: float
    gy: float
    hill: float
    centre: tuple[float, float]
    sigma: float

    def height(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        dx, dy = np.asarray(x) - self.centre[0], np.asarray(y) - self.centre[1]
        bump = self.hill * np.exp(-(dx * dx + dy * dy) / (2 * self.sigma**2))
        return self.gx * np.asarray(x) + self.gy * np.asarray(y) + bump

    def gradient(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dx, dy = np.asarray(x) - self.centre[0], np.asarray(y) - self.centre[1]
        bump = self.hill * np.exp(-(dx * dx + dy * dy) / (2 * self.sigma**2))
        return self.gx - bump * dx / self.sigma**2, self.gy - bump * dy / self.sigma**2

    def normal(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Unit upward normals, (..., 3)."""
        hx, hy = self.gradient(x, y)
        n = np.stack([-hx, -hy, np.ones_like(hx)], axis=-1)
        return n / np.linalg.norm(n, axis=-1, keepdims=True)


class GroundSurface:
    """The ground as meshed: the smooth ``Terrain`` the vehicle rides on, sidewalks and everything off the
    road raised by ``KERB``, and a height texture (a sum of random plane waves, 0.6–4 m long) that keeps
    the surface from being a perfectly smooth, featureless sheet."""

    def __init__(
        self, terrain: Terrain, layout: StreetLayout, rng: np.random.Generator, waves: int = 16
    ) -> None:
        self.terrain, self.layout = terrain, layout
        wavelength = rng.uniform(0.6, 4.0, waves)
        angle = rng.uniform(0, 2 * np.pi, waves)
        self.k = (2 * np.pi / wavelength)[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
        self.phase = rng.uniform(0, 2 * np.pi, waves)
        self.amplitude = TEXTURE_RMS * np.sqrt(2.0 / waves)

    def on_road(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Within ROAD_HALF_WIDTH of a street centreline, inside the street grid."""
        layout, pitch = self.layout, self.layout.pitch
        hi = layout.intersection(layout.blocks_x, layout.blocks_y)
        near_x_street = np.abs(y - np.round(y / pitch[1]) * pitch[1]) < ROAD_HALF_WIDTH
        near_y_street = np.abs(x - np.round(x / pitch[0]) * pitch[0]) < ROAD_HALF_WIDTH
        inside = (
            (x > -ROAD_HALF_WIDTH)
            & (x < hi[0] + ROAD_HALF_WIDTH)
            & (y > -ROAD_HALF_WIDTH)
            & (y < hi[1] + ROAD_HALF_WIDTH)
        )
        return inside & (near_x_street | near_y_street)

    def height(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        texture = self.amplitude * np.cos(
            x[..., None] * self.k[:, 0] + y[..., None] * self.k[:, 1] + self.phase
        ).sum(-1)
        return self.terrain.height(x, y) + np.where(self.on_road(x, y), 0.0, KERB) + texture


@dataclass
class OutdoorScene:
    seed: int
    layout: StreetLayout
    terrain: Terrain
    vertices: np.ndarray  # V×3 float64
    triangles: np.ndarray  # T×3 int64
    triangle_label: np.ndarray  # T uint8, see LABELS

    def legacy_mesh(self, transform: np.ndarray | None = None) -> o3d.geometry.TriangleMesh:
        """The scene as one Open3D mesh, vertices coloured by class; ``transform`` (4×4) applied first."""
        verts = self.vertices if transform is None else self.vertices @ transform[:3, :3].T + transform[:3, 3]
        mesh = o3d.geometry.TriangleMesh(
            o3d.utility.Vector3dVector(verts), o3d.utility.Vector3iVector(self.triangles.astype(np.int32))
        )
        vertex_label = np.zeros(len(self.vertices), dtype=np.int64)
        vertex_label[self.triangles.reshape(-1)] = np.repeat(self.triangle_label, 3)
        mesh.vertex_colors = o3d.utility.Vector3dVector(LABEL_COLORS[vertex_label])
        mesh.compute_vertex_normals()
        return mesh

    def raycasting_scene(self) -> o3d.t.geometry.RaycastingScene:
        scene = o3d.t.geometry.RaycastingScene()
        scene.add_triangles(
            o3d.core.Tensor(self.vertices.astype(np.float32)),
            o3d.core.Tensor(self.triangles.astype(np.uint32)),
        )
        return scene


# ------------------------------------------------------------------------------------------ mesh building


_UNIT_BOX = o3d.geometry.TriangleMesh.create_box(1.0, 1.0, 1.0)
_BOX_V = np.asarray(_UNIT_BOX.vertices).copy()
_BOX_T = np.asarray(_UNIT_BOX.triangles).astype(np.int64)
_CYLINDER = o3d.geometry.TriangleMesh.create_cylinder(1.0, 1.0, 16, 1)  # unit radius and height, centred
_CYL_V = np.asarray(_CYLINDER.vertices) + [0.0, 0.0, 0.5]  # base at z = 0
_CYL_T = np.asarray(_CYLINDER.triangles).astype(np.int64)
_SPHERE = o3d.geometry.TriangleMesh.create_sphere(1.0, 10)
_SPH_V = np.asarray(_SPHERE.vertices).copy()
_SPH_T = np.asarray(_SPHERE.triangles).astype(np.int64)


class _MeshBuilder:
    def __init__(self, terrain: Terrain) -> None:
        self.terrain = terrain  # objects stand on the smooth terrain, their bases sunk below the surface
        self.verts: list[np.ndarray] = []
        self.tris: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self._count = 0

    def add(self, verts: np.ndarray, tris: np.ndarray, label: str) -> None:
        self.verts.append(np.asarray(verts, dtype=np.float64))
        self.tris.append(np.asarray(tris, dtype=np.int64) + self._count)
        self.labels.append(np.full(len(tris), LABELS[label], dtype=np.uint8))
        self._count += len(verts)

    def ground_z(self, x: float, y: float) -> float:
        return float(self.terrain.height(x, y))

    def box_on_ground(self, lo_xy, hi_xy, height: float, label: str, yaw: float = 0.0) -> None:
        """A box over the footprint [lo, hi] (rotated by ``yaw`` about its centre), standing on the ground."""
        lo_xy, hi_xy = np.asarray(lo_xy, dtype=np.float64), np.asarray(hi_xy, dtype=np.float64)
        centre = (lo_xy + hi_xy) / 2
        half = (hi_xy - lo_xy) / 2
        c, s = np.cos(yaw), np.sin(yaw)
        corners = centre + (np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half) @ np.array(
            [[c, s], [-s, c]]
        )
        ground = self.terrain.height(corners[:, 0], corners[:, 1])
        base, top = float(ground.min()) - SINK, float(ground.max()) + height
        local = _BOX_V * [2 * half[0], 2 * half[1], top - base] - [half[0], half[1], 0.0]
        xy = local[:, :2] @ np.array([[c, s], [-s, c]]) + centre
        self.add(np.column_stack([xy, local[:, 2] + base]), _BOX_T, label)

    def cylinder_on_ground(self, x: float, y: float, radius: float, height: float, label: str) -> None:
        base = self.ground_z(x, y) - SINK
        verts = _CYL_V * [radius, radius, height + SINK] + [x, y, base]
        self.add(verts, _CYL_T, label)

    def sphere(self, centre, radius: float, label: str) -> None:
        self.add(_SPH_V * radius + np.asarray(centre, dtype=np.float64), _SPH_T, label)

    def tree(self, x: float, y: float, rng: np.random.Generator) -> None:
        trunk_h = rng.uniform(2.2, 3.5)
        crown_r = rng.uniform(1.4, 2.6)
        self.cylinder_on_ground(x, y, rng.uniform(0.15, 0.3), trunk_h + crown_r * 0.5, "trunk")
        self.sphere([x, y, self.ground_z(x, y) + trunk_h + crown_r], crown_r, "crown")

    def box(self, lo, hi, label: str) -> None:
        """An axis-aligned box between the 3-D corners ``lo`` and ``hi``."""
        lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
        self.add(lo + _BOX_V * (hi - lo), _BOX_T, label)

    def terrain_grid(self, surface: GroundSurface, lo: np.ndarray, hi: np.ndarray) -> None:
        nx = int(np.ceil((hi[0] - lo[0]) / TERRAIN_RESOLUTION)) + 1
        ny = int(np.ceil((hi[1] - lo[1]) / TERRAIN_RESOLUTION)) + 1
        xs = lo[0] + TERRAIN_RESOLUTION * np.arange(nx)
        ys = lo[1] + TERRAIN_RESOLUTION * np.arange(ny)
        gx, gy = np.meshgrid(xs, ys, indexing="ij")
        verts = np.column_stack([gx.ravel(), gy.ravel(), surface.height(gx, gy).ravel()])
        i, j = np.meshgrid(np.arange(nx - 1), np.arange(ny - 1), indexing="ij")
        v00 = (i * ny + j).ravel()
        v10, v01, v11 = v00 + ny, v00 + 1, v00 + ny + 1
        tris = np.concatenate([np.column_stack([v00, v10, v11]), np.column_stack([v00, v11, v01])])
        self.add(verts, tris, "ground")

    def build(self, seed: int, layout: StreetLayout) -> OutdoorScene:
        return OutdoorScene(
            seed=seed,
            layout=layout,
            terrain=self.terrain,
            vertices=np.concatenate(self.verts),
            triangles=np.concatenate(self.tris),
            triangle_label=np.concatenate(self.labels),
        )


def make_terrain(seed: int, layout: StreetLayout) -> Terrain:
    rng = np.random.default_rng([int(seed), 0x7E2])
    hi = layout.intersection(layout.blocks_x, layout.blocks_y)
    slope = rng.uniform(0.02, 0.035)
    direction = rng.uniform(0, 2 * np.pi)
    return Terrain(
        gx=float(slope * np.cos(direction)),
        gy=float(slope * np.sin(direction)),
        hill=float(rng.uniform(3.0, 5.0)),
        centre=(float(rng.uniform(0.3, 0.7) * hi[0]), float(rng.uniform(0.3, 0.7) * hi[1])),
        sigma=float(rng.uniform(40.0, 55.0)),
    )


def _build_block(b: _MeshBuilder, lo: np.ndarray, hi: np.ndarray, rng: np.random.Generator) -> None:
    """Buildings in a row of lots along the block's long side pair, garden walls in front of some."""
    size = hi - lo
    along = 0 if size[0] >= size[1] else 1
    across = 1 - along
    lots = int(rng.integers(2, 5))
    edges = lo[along] + np.sort(rng.uniform(0.15, 0.85, lots - 1)) * size[along]
    edges = np.concatenate([[lo[along]], edges, [hi[along]]])
    for side in (0, 1):  # the two long sides of the block: two rows of buildings back to back
        for k in range(lots):
            if rng.uniform() < 0.1:
                continue  # an empty lot: the street sees into the block
            setback = rng.uniform(0.5, 4.0)
            gap = rng.uniform(0.0, 2.5)
            a0, a1 = edges[k] + gap, edges[k + 1] - gap
            if a1 - a0 < 6.0:
                continue
            depth = rng.uniform(8.0, size[across] / 2 - 0.5)
            if side == 0:
                c0 = lo[across] + setback
                c1 = min(c0 + depth, lo[across] + size[across] / 2)
            else:
                c1 = hi[across] - setback
                c0 = max(c1 - depth, lo[across] + size[across] / 2)
            box_lo, box_hi = np.zeros(2), np.zeros(2)
            box_lo[along], box_hi[along], box_lo[across], box_hi[across] = a0, a1, c0, c1
            height = rng.uniform(6.0, 24.0)
            b.box_on_ground(box_lo, box_hi, height, "building")
            _facade_details(b, box_lo, box_hi, height, along, across, side, rng)
            if setback > 2.0 and rng.uniform() < 0.5:  # a garden wall along the sidewalk
                wall_lo, wall_hi = box_lo.copy(), box_hi.copy()
                wall_at = lo[across] + 0.3 if side == 0 else hi[across] - 0.6
                wall_lo[across], wall_hi[across] = wall_at, wall_at + 0.3
                b.box_on_ground(wall_lo, wall_hi, rng.uniform(1.0, 2.2), "wall")


def _facade_details(
    b: _MeshBuilder, lo: np.ndarray, hi: np.ndarray, height: float, along: int, across: int, side: int, rng
) -> None:
    """Balconies and bays on the street-facing facade of a building (footprint [lo, hi]), and the relief of
    its ground floor: pilasters, porches and shop fronts standing out of the facade every few metres. A
    64-beam sensor sees a facade only up to about 2 m above itself within 20 m, so it is the ground floor's
    relief (faces across the street) that tells how far a vehicle has driven along a street of flat walls."""
    face = lo[across] if side == 0 else hi[across]
    outward = -1.0 if side == 0 else 1.0
    ground = float(b.terrain.height(*((lo + hi) / 2)))
    at = lo[along] + rng.uniform(0.5, 3.0)
    while at < hi[along] - 0.5:
        width = rng.uniform(0.4, 3.0)
        depth = rng.uniform(0.2, 1.0)
        box_lo, box_hi = np.zeros(2), np.zeros(2)
        box_lo[along], box_hi[along] = at, min(at + width, hi[along])
        box_lo[across], box_hi[across] = sorted((face - outward * 0.1, face + outward * depth))
        b.box_on_ground(box_lo, box_hi, rng.uniform(2.5, min(5.0, height)), "building")
        at += width + rng.uniform(1.5, 6.0)
    for _ in range(int(rng.integers(1, 5))):
        width = rng.uniform(1.5, 4.0)
        start = rng.uniform(lo[along], max(lo[along], hi[along] - width))
        z0 = ground + rng.uniform(2.5, max(2.6, height - 1.5))
        depth = rng.uniform(0.4, 1.2)
        box_lo, box_hi = np.zeros(3), np.zeros(3)
        box_lo[along], box_hi[along] = start, min(start + width, hi[along])
        box_lo[across], box_hi[across] = sorted((face, face + outward * depth))
        box_lo[2], box_hi[2] = z0, z0 + rng.uniform(0.3, 1.2)
        b.box(box_lo, box_hi, "object")


def _build_park(b: _MeshBuilder, lo: np.ndarray, hi: np.ndarray, rng: np.random.Generator) -> None:
    for _ in range(int(rng.integers(10, 18))):
        x, y = rng.uniform(lo + 3.0, hi - 3.0)
        b.tree(float(x), float(y), rng)
    # a low wall along two sides of the park
    b.box_on_ground([lo[0] + 1.0, lo[1] + 0.5], [hi[0] - 1.0, lo[1] + 0.8], 0.9, "wall")
    b.box_on_ground([lo[0] + 1.0, hi[1] - 0.8], [hi[0] - 1.0, hi[1] - 0.5], 0.9, "wall")


def _build_street_furniture(
    b: _MeshBuilder, layout: StreetLayout, rng: np.random.Generator, drive: cKDTree
) -> None:
    """Poles and trees on the sidewalks, cars parked along the kerbs, clear of the intersections and of the
    driven curve ``drive`` (which cuts the corners of the streets it turns between)."""
    half = layout.street / 2
    pitch = layout.pitch
    for axis in (0, 1):  # streets running along x (axis 0) and along y (axis 1)
        other = 1 - axis
        n_streets = (layout.blocks_y if axis == 0 else layout.blocks_x) + 1
        length = (layout.blocks_x if axis == 0 else layout.blocks_y) * pitch[axis]
        for k in range(n_streets):
            centre = k * pitch[other]
            for side in (-1.0, 1.0):
                s = rng.uniform(0.0, 8.0)
                while s < length:
                    offset = s % pitch[axis]
                    if half + 2.0 < offset < pitch[axis] - half - 2.0:
                        kind = rng.uniform()
                        pos = np.zeros(2)
                        pos[axis] = s
                        if kind < 0.1:  # a bin, a bench or a hydrant on the sidewalk
                            pos[other] = centre + side * (half - 2.2)
                            size = rng.uniform([0.4, 0.4], [1.8, 0.7])
                            size = size if axis == 0 else size[::-1]
                            height = rng.uniform(0.6, 1.1)
                            if drive.query(pos)[0] > CLEARANCE:
                                b.box_on_ground(pos - size / 2, pos + size / 2, height, "object")
                        elif kind < 0.35:
                            pos[other] = centre + side * (half - 1.0)
                            height = rng.uniform(5.0, 8.0)
                            if drive.query(pos)[0] > CLEARANCE:
                                b.cylinder_on_ground(pos[0], pos[1], 0.12, height, "pole")
                        elif kind < 0.7:
                            pos[other] = centre + side * (half - 1.5)
                            if drive.query(pos)[0] > CLEARANCE + 1.0:  # the trunk; the crown is overhead
                                b.tree(pos[0], pos[1], rng)
                        elif half + 5.0 < offset < pitch[axis] - half - 5.0:
                            pos[other] = centre + side * (half - 4.0)
                            size = np.array([4.4, 1.8]) if axis == 0 else np.array([1.8, 4.4])
                            height = rng.uniform(1.4, 1.9)
                            corners = pos + size / 2 * np.array([[-1, -1], [1, -1], [1, 1], [-1, 1], [0, 0]])
                            if drive.query(corners)[0].min() > CLEARANCE:
                                b.box_on_ground(pos - size / 2, pos + size / 2, height, "car")
                    s += rng.uniform(3.0, 7.0)


def build_outdoor_scene(
    seed: int = 0, layout: StreetLayout | None = None, route: tuple[tuple[int, int], ...] | None = None
) -> OutdoorScene:
    """The outdoor scene for ``seed``: same seed, same geometry. Street furniture keeps clear of the curve
    driven along ``route`` (default ``DEFAULT_ROUTE``)."""
    layout = layout or StreetLayout()
    route = route or DEFAULT_ROUTE
    rng = np.random.default_rng([int(seed), 0x0D7])
    terrain = make_terrain(seed, layout)
    b = _MeshBuilder(terrain)
    b.terrain_grid(GroundSurface(terrain, layout, rng), *layout.extent)
    park = (int(rng.integers(0, layout.blocks_x)), int(rng.integers(0, layout.blocks_y)))
    for i in range(layout.blocks_x):
        for j in range(layout.blocks_y):
            lo, hi = layout.block_bounds(i, j)
            if (i, j) == park:
                _build_park(b, lo, hi, rng)
            else:
                _build_block(b, lo, hi, rng)
    _build_street_furniture(b, layout, rng, cKDTree(route_curve(layout, route)[0]))
    return b.build(seed, layout)


# ------------------------------------------------------------------------------------------ vehicle path


class VehiclePath:
    """A closed, smooth drive along the street centrelines; ``poses(t)`` gives LiDAR poses at any times.

    The vehicle stands at the start (halfway along the route's first street, facing its second
    intersection) for ``dwell`` seconds, accelerates at ``accel`` up to ``speed`` (slower in the turns:
    ``lateral_accel``), goes once round the loop, brakes to a stop where it started and stands for
    ``dwell`` seconds more; ``duration`` is the whole of it. Before 0 and after ``duration`` it stands.
    (Starting from rest, as KITTI's sequences do, gives odometry a motion it can initialise on.)
    """

    def __init__(
        self,
        layout: StreetLayout,
        terrain: Terrain,
        speed: float = 8.0,
        lateral_accel: float = 2.5,
        accel: float = 1.5,
        dwell: float = 1.0,
        height: float = 1.73,
        sway_deg: float = 0.4,
        route: tuple[tuple[int, int], ...] = DEFAULT_ROUTE,
        smoothing: float = ROUTE_SMOOTHING,
    ) -> None:
        if min(speed, lateral_accel, accel) <= 0 or dwell < 0:
            raise ValueError(
                f"speed and accelerations must be positive, dwell >= 0: {speed}, {lateral_accel}, {accel}, {dwell}"
            )
        self.terrain = terrain
        self.height = float(height)
        self.sway_deg = float(sway_deg)
        self.dwell = float(dwell)
        self.xy, self.s, self.length = route_curve(layout, route, smoothing)
        d1 = (np.roll(self.xy, -1, axis=0) - np.roll(self.xy, 1, axis=0)) / (2 * PATH_SPACING)
        d2 = (np.roll(self.xy, -1, axis=0) - 2 * self.xy + np.roll(self.xy, 1, axis=0)) / PATH_SPACING**2
        self.tangent = d1 / np.linalg.norm(d1, axis=1, keepdims=True)
        self.curvature = (d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]) / np.linalg.norm(d1, axis=1) ** 3
        limit = np.minimum(speed, np.sqrt(lateral_accel / np.maximum(np.abs(self.curvature), 1e-9)))
        # slow down before a turn and speed up after it: the minimum over ±10 m, smoothed, stays near the limit
        window = int(20.0 / PATH_SPACING)
        cruise = gaussian_filter1d(minimum_filter1d(limit, window, mode="wrap"), window / 4, mode="wrap")
        # from rest and back to rest: v ≤ √(2 a s) from both ends; time by the midpoint rule (finite at v = 0)
        step = self.length / len(self.s)
        mid = self.s + step / 2
        ramp = np.sqrt(2 * accel * np.minimum(mid, self.length - mid))
        dt = step / np.minimum(np.interp(mid, self.s, cruise, period=self.length), ramp)
        self.t = self.dwell + np.concatenate([[0.0], np.cumsum(dt)[:-1]])  # time at each sample
        self.t_stop = self.dwell + float(np.sum(dt))
        self.duration = self.t_stop + self.dwell
        self.speed = np.minimum(cruise, np.sqrt(2 * accel * np.minimum(self.s, self.length - self.s)))

    def arc_length(self, times: np.ndarray) -> np.ndarray:
        """Distance driven at ``times``: 0 before the start, the loop's length after the stop."""
        times = np.asarray(times, dtype=np.float64)
        return np.interp(times, np.append(self.t, self.t_stop), np.append(self.s, self.length))

    def body_sway(self, times: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(pitch, roll) in rad of the body on its suspension at ``times`` (arc lengths ``s``): a few slow
        oscillations (0.5-2 Hz, about ``sway_deg`` each way) whose amplitude grows with the speed, none at
        rest. Without it every sweep would draw its ground rings at exactly the same distances from the
        sensor, which no real vehicle does and which a point-to-point ICP mistakes for standing still."""
        gain = np.clip(np.interp(s, self.s, self.speed, period=self.length) / 4.0, 0.0, 1.0)
        gain = np.where((s <= 0.0) | (s >= self.length), 0.0, gain)
        a = np.deg2rad(self.sway_deg)
        pitch = a * (
            0.6 * np.sin(2 * np.pi * 0.7 * times + 0.3) + 0.4 * np.sin(2 * np.pi * 1.9 * times + 2.1)
        )
        roll = a * (
            0.6 * np.sin(2 * np.pi * 1.1 * times + 1.2) + 0.4 * np.sin(2 * np.pi * 0.45 * times + 4.0)
        )
        return gain * pitch, gain * roll

    def poses(self, times: np.ndarray) -> np.ndarray:
        """LiDAR-to-world poses (…×4×4) at ``times`` (s)."""
        times = np.asarray(times, dtype=np.float64)
        s = self.arc_length(times.ravel())
        x = np.interp(s, self.s, self.xy[:, 0], period=self.length)
        y = np.interp(s, self.s, self.xy[:, 1], period=self.length)
        tx = np.interp(s, self.s, self.tangent[:, 0], period=self.length)
        ty = np.interp(s, self.s, self.tangent[:, 1], period=self.length)
        up = self.terrain.normal(x, y)
        heading = np.stack([tx, ty, np.zeros_like(tx)], axis=1)
        forward = heading - np.sum(heading * up, axis=1, keepdims=True) * up
        forward /= np.linalg.norm(forward, axis=1, keepdims=True)
        left = np.cross(up, forward)
        # the body rocks on its suspension (pitch about the left axis, roll about the forward axis)
        pitch, roll = self.body_sway(times.ravel(), s)
        forward, up = (
            forward * np.cos(pitch)[:, None] - up * np.sin(pitch)[:, None],
            (forward * np.sin(pitch)[:, None] + up * np.cos(pitch)[:, None]),
        )
        left, up = (
            left * np.cos(roll)[:, None] + up * np.sin(roll)[:, None],
            (up * np.cos(roll)[:, None] - left * np.sin(roll)[:, None]),
        )
        out = np.tile(np.eye(4), (len(s), 1, 1))
        out[:, :3, 0], out[:, :3, 1], out[:, :3, 2] = forward, left, up
        foot = np.stack([x, y, self.terrain.height(x, y)], axis=1)
        out[:, :3, 3] = foot + self.height * self.terrain.normal(x, y)
        return out.reshape(*times.shape, 4, 4)


def route_curve(
    layout: StreetLayout,
    route: tuple[tuple[int, int], ...] = DEFAULT_ROUTE,
    smoothing: float = ROUTE_SMOOTHING,
) -> tuple[np.ndarray, np.ndarray, float]:
    """The driven curve: the closed polyline through the route's intersections, starting halfway along its
    first street, with its corners rounded by a Gaussian of ``smoothing`` metres; sampled every
    ``PATH_SPACING`` metres of arc length. Returns (xy N×2, arc length N, loop length)."""
    corners = np.array([layout.intersection(i, j) for i, j in route])
    start = (corners[0] + corners[1]) / 2
    polygon = np.concatenate([[start], corners[1:], corners[:1], [start]])
    xy = _densify(polygon, PATH_SPACING)[:-1]  # closed: the last sample would repeat the first
    sigma = smoothing / PATH_SPACING
    xy = np.stack([gaussian_filter1d(xy[:, k], sigma, mode="wrap") for k in range(2)], axis=1)
    return _resample_closed(xy, PATH_SPACING)


def _densify(polygon: np.ndarray, spacing: float) -> np.ndarray:
    """Points every ``spacing`` metres along a polyline (its vertices included)."""
    pieces = []
    for a, b in zip(polygon[:-1], polygon[1:]):
        n = max(1, int(np.ceil(np.linalg.norm(b - a) / spacing)))
        pieces.append(a + (b - a) * (np.arange(n) / n)[:, None])
    pieces.append(polygon[-1:])
    return np.concatenate(pieces)


def _resample_closed(xy: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Resample a closed curve at equal steps (about ``spacing``) of a periodic cubic spline through it,
    so that finite differences of the samples are smooth; returns (xy, s, length)."""
    closed = np.concatenate([xy, xy[:1]])
    s_old = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(closed, axis=0), axis=1))])
    spline = CubicSpline(s_old, closed, bc_type="periodic")
    length = float(s_old[-1])
    n = int(round(length / spacing))
    s = np.arange(n) * (length / n)
    return spline(s), s, length
