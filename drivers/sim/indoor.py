"""A procedural furnished room built from triangle-mesh primitives, and a handheld camera path through it.

World frame: metres, z up, the room's floor at z = 0 spanning x in [-3, 3] and y in [-2.5, 2.5], ceiling at
2.8 m. Walls, floor and ceiling are boxes whose inner faces bound the room; the north wall has a recessed
door, the west wall a window. Furniture (table with chairs, sofa, bookshelf with books, sideboard with a
lamp, plant, boxes, pictures) is placed with seeded jitter, so one seed gives one scene, always the same.

Every primitive is a ``Part`` with a base colour and a material (``drivers.sim.textures``); the merged mesh
keeps, per triangle, the index of its part, which is how the renderer finds a hit's colour and material.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import open3d as o3d

from drivers.sim.textures import MATERIAL_ID

ROOM_MIN = np.array([-3.0, -2.5, 0.0])
ROOM_MAX = np.array([3.0, 2.5, 2.8])
WALL = 0.2  # wall, floor and ceiling thickness (outside the room)

# trajectory: an ellipse around the table, one loop per PERIOD_S seconds, looking across the room
PERIOD_S = 10.0
ORBIT_A, ORBIT_B = 0.85, 0.6  # semi-axes (m) along x and y
EYE_HEIGHT = 1.45


@dataclass
class Part:
    name: str
    vertices: np.ndarray  # V×3 float64, world frame
    triangles: np.ndarray  # T×3 int64
    color: np.ndarray  # 3 floats in [0, 1]
    material: str


@dataclass
class IndoorScene:
    seed: int
    parts: list[Part]
    room_min: np.ndarray = field(default_factory=lambda: ROOM_MIN.copy())
    room_max: np.ndarray = field(default_factory=lambda: ROOM_MAX.copy())
    center: np.ndarray = field(default_factory=lambda: np.zeros(2))  # the table's centre (x, y)

    def __post_init__(self) -> None:
        verts, tris, tri_part = [], [], []
        offset = 0
        for k, part in enumerate(self.parts):
            verts.append(part.vertices)
            tris.append(part.triangles + offset)
            tri_part.append(np.full(len(part.triangles), k, dtype=np.int32))
            offset += len(part.vertices)
        self.vertices = np.concatenate(verts).astype(np.float64)
        self.triangles = np.concatenate(tris).astype(np.int64)
        self.triangle_part = np.concatenate(tri_part)
        self.part_colors = np.array([p.color for p in self.parts], dtype=np.float64)
        self.part_materials = np.array([MATERIAL_ID[p.material] for p in self.parts], dtype=np.int64)

    def legacy_mesh(self) -> o3d.geometry.TriangleMesh:
        """The whole scene as one Open3D mesh with per-vertex colours (each part's base colour)."""
        mesh = o3d.geometry.TriangleMesh(
            o3d.utility.Vector3dVector(self.vertices),
            o3d.utility.Vector3iVector(self.triangles.astype(np.int32)),
        )
        vertex_part = np.concatenate([np.full(len(p.vertices), k) for k, p in enumerate(self.parts)])
        mesh.vertex_colors = o3d.utility.Vector3dVector(self.part_colors[vertex_part])
        mesh.compute_vertex_normals()
        return mesh

    def raycasting_scene(self) -> o3d.t.geometry.RaycastingScene:
        scene = o3d.t.geometry.RaycastingScene()
        scene.add_triangles(
            o3d.core.Tensor(self.vertices.astype(np.float32)),
            o3d.core.Tensor(self.triangles.astype(np.uint32)),
        )
        return scene


# --- building


def _rot_z(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _transform(yaw: float = 0.0, origin=(0.0, 0.0, 0.0)) -> np.ndarray:
    t = np.eye(4)
    t[:3, :3] = _rot_z(yaw)
    t[:3, 3] = origin
    return t


_UNIT_BOX = o3d.geometry.TriangleMesh.create_box(1.0, 1.0, 1.0)
_BOX_V = np.asarray(_UNIT_BOX.vertices).copy()
_BOX_T = np.asarray(_UNIT_BOX.triangles).astype(np.int64)


class _Builder:
    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.parts: list[Part] = []
        self.frame = np.eye(4)  # current group transform (local -> world)

    def _add(self, name: str, verts: np.ndarray, tris: np.ndarray, color, material: str) -> None:
        verts = verts @ self.frame[:3, :3].T + self.frame[:3, 3]
        self.parts.append(
            Part(name, verts, tris, np.clip(np.asarray(color, dtype=np.float64), 0, 1), material)
        )

    def box(self, name: str, lo, hi, color, material: str = "plain") -> None:
        lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
        self._add(name, lo + _BOX_V * (hi - lo), _BOX_T, color, material)

    def primitive(self, name: str, mesh: o3d.geometry.TriangleMesh, origin, color, material="plain") -> None:
        verts = np.asarray(mesh.vertices) + np.asarray(origin, dtype=np.float64)
        self._add(name, verts, np.asarray(mesh.triangles).astype(np.int64), color, material)

    def sphere(self, name, center, radius, color, material="plain") -> None:
        self.primitive(name, o3d.geometry.TriangleMesh.create_sphere(radius, 16), center, color, material)

    def cylinder(self, name, base, radius, height, color, material="plain") -> None:
        mesh = o3d.geometry.TriangleMesh.create_cylinder(radius, height, 24, 1)
        self.primitive(name, mesh, np.asarray(base) + [0.0, 0.0, height / 2], color, material)

    def cone(self, name, base, radius, height, color, material="plain") -> None:
        mesh = o3d.geometry.TriangleMesh.create_cone(radius, height, 24, 1)
        self.primitive(name, mesh, base, color, material)

    def torus(self, name, center, radius, tube, color, material="plain") -> None:
        mesh = o3d.geometry.TriangleMesh.create_torus(radius, tube, 24, 12)
        self.primitive(name, mesh, center, color, material)

    def jitter_color(self, color, amount: float = 0.06) -> np.ndarray:
        return np.clip(np.asarray(color) + self.rng.uniform(-amount, amount, 3), 0.0, 1.0)

    def vivid(self) -> np.ndarray:
        """A random saturated colour."""
        hue = self.rng.uniform(0, 1)
        rgb = np.clip(np.abs(((hue * 6 + np.array([0.0, 4.0, 2.0])) % 6) - 3.0) - 1.0, 0, 1)
        return 0.25 + 0.65 * rgb * self.rng.uniform(0.6, 1.0)


def build_indoor_scene(seed: int = 0) -> IndoorScene:
    """The demo room for ``seed``: same seed, same geometry and colours."""
    rng = np.random.default_rng([int(seed), 0x0D0])
    b = _Builder(rng)
    x0, y0, _ = ROOM_MIN
    x1, y1, h = ROOM_MAX
    w = WALL

    # --- shell: floor, ceiling, four walls (door in the north wall, window in the west wall)
    b.box("floor", (x0 - w, y0 - w, -w), (x1 + w, y1 + w, 0.0), b.jitter_color((0.62, 0.44, 0.28)), "floor")
    b.box("ceiling", (x0 - w, y0 - w, h), (x1 + w, y1 + w, h + w), (0.92, 0.92, 0.89), "ceiling")
    wall_a = b.jitter_color(rng.choice([(0.80, 0.74, 0.62), (0.66, 0.74, 0.78), (0.78, 0.70, 0.72)]))
    wall_b = b.jitter_color(rng.choice([(0.58, 0.68, 0.60), (0.80, 0.78, 0.70), (0.72, 0.62, 0.52)]))
    b.box("wall_south", (x0 - w, y0 - w, 0.0), (x1 + w, y0, h), wall_a, "paint")
    b.box("wall_east", (x1, y0, 0.0), (x1 + w, y1, h), wall_b, "paint")
    door_x = 1.2 + rng.uniform(-0.2, 0.2)
    door_w, door_h = 0.9, 2.05
    b.box("wall_north_left", (x0 - w, y1, 0.0), (door_x, y1 + w, h), wall_a, "paint")
    b.box("wall_north_right", (door_x + door_w, y1, 0.0), (x1 + w, y1 + w, h), wall_a, "paint")
    b.box("wall_north_lintel", (door_x, y1, door_h), (door_x + door_w, y1 + w, h), wall_a, "paint")
    b.box(
        "door",
        (door_x, y1 + 0.12, 0.0),
        (door_x + door_w, y1 + w, door_h),
        b.jitter_color((0.55, 0.36, 0.22)),
        "wood",
    )
    b.sphere("door_handle", (door_x + door_w - 0.1, y1 + 0.09, 1.0), 0.035, (0.8, 0.78, 0.7))
    win_y, win_w, win_z0, win_z1 = rng.uniform(-0.9, -0.5), 1.4, 0.9, 2.1
    b.box("wall_west_a", (x0 - w, y0, 0.0), (x0, win_y, h), wall_b, "paint")
    b.box("wall_west_b", (x0 - w, win_y + win_w, 0.0), (x0, y1, h), wall_b, "paint")
    b.box("wall_west_sill", (x0 - w, win_y, 0.0), (x0, win_y + win_w, win_z0), wall_b, "paint")
    b.box("wall_west_top", (x0 - w, win_y, win_z1), (x0, win_y + win_w, h), wall_b, "paint")
    b.box("window", (x0 - w, win_y, win_z0), (x0 - 0.15, win_y + win_w, win_z1), (1.0, 1.0, 1.0), "sky")
    mid = win_y + win_w / 2
    frame_c = (0.95, 0.95, 0.93)
    b.box("window_bar_v", (x0 - 0.17, mid - 0.03, win_z0), (x0 - 0.11, mid + 0.03, win_z1), frame_c)
    b.box("window_bar_h", (x0 - 0.17, win_y, 1.47), (x0 - 0.11, win_y + win_w, 1.53), frame_c)
    b.box(
        "window_ledge",
        (x0 - 0.05, win_y - 0.05, win_z0 - 0.04),
        (x0 + 0.12, win_y + win_w + 0.05, win_z0),
        frame_c,
    )
    # skirting boards
    skirt = (0.93, 0.92, 0.88)
    b.box("skirt_s", (x0, y0, 0.0), (x1, y0 + 0.015, 0.09), skirt)
    b.box("skirt_e", (x1 - 0.015, y0, 0.0), (x1, y1, 0.09), skirt)
    b.box("skirt_w", (x0, y0, 0.0), (x0 + 0.015, y1, 0.09), skirt)
    b.box("skirt_n1", (x0, y1 - 0.015, 0.0), (door_x, y1, 0.09), skirt)
    b.box("skirt_n2", (door_x + door_w, y1 - 0.015, 0.0), (x1, y1, 0.09), skirt)

    # --- table with a rug under it and chairs around it
    tx, ty = rng.uniform(-0.15, 0.15), rng.uniform(-0.1, 0.1)
    b.box("rug", (tx - 1.3, ty - 0.9, 0.0), (tx + 1.3, ty + 0.9, 0.01), b.vivid() * 0.8, "checker")
    table_c = b.jitter_color((0.50, 0.33, 0.20))
    ttop = 0.75
    b.box("table_top", (tx - 0.6, ty - 0.35, ttop - 0.04), (tx + 0.6, ty + 0.35, ttop), table_c, "wood")
    for sx in (-1, 1):
        for sy in (-1, 1):
            lx, ly = tx + sx * 0.52, ty + sy * 0.27
            b.box(
                "table_leg",
                (lx - 0.025, ly - 0.025, 0.0),
                (lx + 0.025, ly + 0.025, ttop - 0.04),
                table_c,
                "wood",
            )
    chair_c = b.jitter_color((0.35, 0.30, 0.28))
    seats = [(-0.3, -1), (0.3, -1), (-0.3, 1), (0.3, 1)]
    skip = int(rng.integers(0, len(seats)))  # one place has no chair
    for k, (dx, side) in enumerate(seats):
        if k == skip:
            continue
        yaw = (0.0 if side > 0 else np.pi) + rng.uniform(-0.25, 0.25)
        origin = (tx + dx + rng.uniform(-0.05, 0.05), ty + side * (0.62 + rng.uniform(0.0, 0.08)), 0.0)
        _chair(b, _transform(yaw, origin), chair_c)

    # --- objects on the table
    _table_objects(b, tx, ty, ttop)

    # --- sofa against the south wall
    sx0 = rng.uniform(-0.6, 0.0)
    sofa_c = b.jitter_color(rng.choice([(0.30, 0.38, 0.55), (0.55, 0.28, 0.25), (0.35, 0.45, 0.32)]))
    ys, yf = y0 + 0.03, y0 + 0.88
    b.box("sofa_base", (sx0 - 1.0, ys, 0.08), (sx0 + 1.0, yf, 0.42), sofa_c, "fabric")
    b.box("sofa_back", (sx0 - 1.0, ys, 0.42), (sx0 + 1.0, ys + 0.22, 0.9), sofa_c, "fabric")
    b.box("sofa_arm_l", (sx0 - 1.0, ys, 0.42), (sx0 - 0.8, yf, 0.64), sofa_c, "fabric")
    b.box("sofa_arm_r", (sx0 + 0.8, ys, 0.42), (sx0 + 1.0, yf, 0.64), sofa_c, "fabric")
    for k in range(2):
        cx = sx0 - 0.8 + 0.8 * k
        b.box(
            "sofa_cushion",
            (cx + 0.01, ys + 0.22, 0.42),
            (cx + 0.79, yf - 0.01, 0.55),
            b.jitter_color(sofa_c, 0.08),
            "fabric",
        )
    for fx in (sx0 - 0.95, sx0 + 0.9):
        for fy in (ys + 0.03, yf - 0.08):
            b.box("sofa_foot", (fx, fy, 0.0), (fx + 0.05, fy + 0.05, 0.08), (0.15, 0.12, 0.1))
    pillow_yaw = rng.uniform(-0.4, 0.4)
    saved = b.frame
    b.frame = _transform(pillow_yaw, (sx0 + rng.uniform(-0.5, 0.5), ys + 0.32, 0.55))
    b.box("pillow", (-0.2, -0.07, 0.0), (0.2, 0.07, 0.36), b.vivid(), "checker")
    b.frame = saved

    # --- bookshelf against the north wall, left of the door
    bx = rng.uniform(-2.2, -1.8)
    _bookshelf(b, bx, y1)

    # --- sideboard against the east wall, with a lamp and a vase
    cy = rng.uniform(-1.1, -0.5)
    _sideboard(b, x1, cy)

    # --- plant in the north-east corner, boxes on the floor, pictures on the walls
    px, py = x1 - 0.35, y1 - 0.35
    b.cylinder("plant_pot", (px, py, 0.0), 0.17, 0.35, b.jitter_color((0.70, 0.40, 0.28)), "plain")
    green = b.jitter_color((0.22, 0.48, 0.2))
    b.sphere("plant_leaves", (px, py, 0.72), 0.32, green, "fabric")
    b.sphere("plant_leaves_top", (px - 0.05, py + 0.03, 1.05), 0.2, b.jitter_color(green), "fabric")
    for zx, zy in ((x0 + 0.45, y0 + 0.45), (x1 - 0.45, y0 + 0.45), (x0 + 0.45, 1.4), (0.55, y1 - 0.4)):
        _box_stack(b, zx, zy)
    _picture(b, "picture_south", (sx0 - 0.5, y0, 1.25), (sx0 + 0.5, y0, 1.9))
    _picture(b, "picture_east", (x1, cy - 0.45, 1.5), (x1, cy + 0.45, 2.1))
    _picture(b, "poster_north", (-0.9, y1, 1.1), (0.1, y1, 1.95))
    _picture(b, "picture_west", (x0, 1.0, 1.2), (x0, 1.8, 1.8))

    return IndoorScene(seed=int(seed), parts=b.parts, center=np.array([tx, ty]))


def _chair(b: _Builder, frame: np.ndarray, color) -> None:
    saved = b.frame
    b.frame = frame
    leg = 0.035
    for sx in (-1, 1):
        for sy in (-1, 1):
            lx, ly = sx * (0.2 - leg / 2), sy * (0.2 - leg / 2)
            b.box(
                "chair_leg",
                (lx - leg / 2, ly - leg / 2, 0.0),
                (lx + leg / 2, ly + leg / 2, 0.43),
                color,
                "wood",
            )
    b.box("chair_seat", (-0.22, -0.22, 0.43), (0.22, 0.22, 0.47), b.jitter_color(color, 0.1), "wood")
    for sx in (-1, 1):
        b.box("chair_post", (sx * 0.2 - 0.02, 0.18, 0.47), (sx * 0.2 + 0.02, 0.22, 0.95), color, "wood")
    for k in range(3):
        x = -0.1 + 0.1 * k
        b.box("chair_slat", (x - 0.02, 0.185, 0.47), (x + 0.02, 0.215, 0.85), color, "wood")
    b.box("chair_rail", (-0.22, 0.18, 0.85), (0.22, 0.22, 0.95), color, "wood")
    b.frame = saved


def _table_objects(b: _Builder, tx: float, ty: float, z: float) -> None:
    rng = b.rng
    kinds = ["mug", "ball", "cone", "book", "cube", "bottle", "torus", "bowl"]
    chosen = rng.permutation(kinds)[: int(rng.integers(5, 8))]
    placed: list[tuple[float, float, float]] = []
    for kind in chosen:
        r = {"book": 0.13, "cube": 0.09, "torus": 0.09}.get(kind, 0.07)
        for _ in range(50):
            x, y = tx + rng.uniform(-0.55 + r, 0.55 - r), ty + rng.uniform(-0.32 + r, 0.32 - r)
            if all((x - px) ** 2 + (y - py) ** 2 > (r + pr + 0.02) ** 2 for px, py, pr in placed):
                break
        else:
            continue
        placed.append((x, y, r))
        c = b.vivid()
        if kind == "mug":
            b.cylinder("mug", (x, y, z), 0.045, 0.1, c)
        elif kind == "ball":
            b.sphere("ball", (x, y, z + 0.065), 0.065, c, "checker")
        elif kind == "cone":
            b.cone("cone", (x, y, z), 0.06, 0.16, c)
        elif kind == "bottle":
            b.cylinder("bottle", (x, y, z), 0.04, 0.2, c)
            b.cylinder("bottle_neck", (x, y, z + 0.2), 0.015, 0.06, c)
        elif kind == "torus":
            b.torus("torus", (x, y, z + 0.025), 0.065, 0.025, c)
        elif kind == "bowl":
            b.sphere("bowl", (x, y, z + 0.03), 0.07, c, "painting")
        else:
            size = (0.2, 0.15, 0.035) if kind == "book" else (0.12, 0.12, 0.12)
            saved = b.frame
            b.frame = _transform(rng.uniform(0, np.pi), (x, y, z))
            half = np.array([size[0] / 2, size[1] / 2, 0.0])
            b.box(kind, -half, half + [0.0, 0.0, size[2]], c, "painting" if kind == "book" else "checker")
            b.frame = saved


def _bookshelf(b: _Builder, bx: float, wall_y: float) -> None:
    rng = b.rng
    c = b.jitter_color((0.78, 0.70, 0.55))
    y0, y1, hh = wall_y - 0.34, wall_y, 1.9
    b.box("shelf_side", (bx - 0.5, y0, 0.0), (bx - 0.48, y1, hh), c, "wood")
    b.box("shelf_side", (bx + 0.48, y0, 0.0), (bx + 0.5, y1, hh), c, "wood")
    b.box("shelf_back", (bx - 0.48, y1 - 0.02, 0.0), (bx + 0.48, y1, hh), c, "wood")
    levels = [0.05, 0.5, 0.95, 1.4]
    for z in [*levels, hh - 0.02]:
        b.box("shelf_board", (bx - 0.48, y0, z - 0.02), (bx + 0.48, y1 - 0.02, z), c, "wood")
    b.box("shelf_kick", (bx - 0.48, y0, 0.0), (bx + 0.48, y0 + 0.02, 0.03), c, "wood")
    for z in levels:
        x = bx - 0.47 + rng.uniform(0.0, 0.1)
        end = bx + 0.47 - rng.uniform(0.0, 0.35)
        while True:
            width = rng.uniform(0.025, 0.06)
            if x + width > end:
                break
            height = rng.uniform(0.2, 0.38)
            depth = rng.uniform(0.17, 0.28)
            b.box("book", (x, y1 - 0.02 - depth, z), (x + width, y1 - 0.02, z + height), b.vivid(), "plain")
            x += width + (rng.uniform(0.05, 0.15) if rng.uniform() < 0.08 else 0.002)


def _sideboard(b: _Builder, wall_x: float, cy: float) -> None:
    rng = b.rng
    c = b.jitter_color((0.42, 0.28, 0.18))
    x0, x1 = wall_x - 0.45, wall_x
    b.box("sideboard", (x0, cy - 0.8, 0.1), (x1, cy + 0.8, 0.85), c, "wood")
    for yy in (cy - 0.75, cy + 0.7):
        for xx in (x0 + 0.03, x1 - 0.08):
            b.box("sideboard_leg", (xx, yy, 0.0), (xx + 0.05, yy + 0.05, 0.1), c, "wood")
    front = b.jitter_color((0.62, 0.48, 0.34))
    for row in range(2):
        for col in range(3):
            ya = cy - 0.78 + col * 0.52 + 0.01
            za = 0.13 + row * 0.36 + 0.01
            b.box("drawer", (x0 - 0.012, ya, za), (x0, ya + 0.5, za + 0.34), front, "wood")
            b.sphere("knob", (x0 - 0.03, ya + 0.25, za + 0.27), 0.02, (0.85, 0.8, 0.6))
    # lamp and vase on top
    ly = cy + rng.uniform(0.3, 0.6)
    lx = wall_x - 0.22
    b.cylinder("lamp_base", (lx, ly, 0.85), 0.09, 0.04, (0.2, 0.2, 0.22))
    b.cylinder("lamp_stem", (lx, ly, 0.89), 0.012, 0.38, (0.7, 0.7, 0.72))
    b.cone("lamp_shade", (lx, ly, 1.2), 0.17, 0.25, b.vivid(), "fabric")
    vy = cy - rng.uniform(0.3, 0.6)
    b.cylinder("vase", (lx, vy, 0.85), 0.07, 0.22, b.vivid(), "painting")
    b.sphere("vase_flowers", (lx, vy, 1.12), 0.09, b.vivid(), "fabric")


def _box_stack(b: _Builder, x: float, y: float) -> None:
    rng = b.rng
    z = 0.0
    for _ in range(int(rng.integers(1, 3))):
        sx, sy, sz = rng.uniform(0.25, 0.45), rng.uniform(0.25, 0.45), rng.uniform(0.2, 0.4)
        saved = b.frame
        b.frame = _transform(rng.uniform(-0.6, 0.6), (x, y, z))
        c = b.jitter_color(rng.choice([(0.70, 0.55, 0.35), (0.5, 0.5, 0.55), (0.8, 0.75, 0.65)]), 0.1)
        b.box(
            "floor_box",
            (-sx / 2, -sy / 2, 0.0),
            (sx / 2, sy / 2, sz),
            c,
            "checker" if rng.uniform() < 0.5 else "plain",
        )
        b.frame = saved
        z += sz


def _picture(b: _Builder, name: str, lo, hi) -> None:
    """A framed picture on a wall: ``lo``/``hi`` are two opposite corners on the wall's inner surface."""
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    # the wall-normal axis is the one on which lo and hi agree; thicken the picture 2 cm into the room
    axis = int(np.argmin(np.abs(hi - lo)))
    into = 1.0 if lo[axis] < 0 else -1.0  # walls at negative coordinates face +axis
    frame_lo, frame_hi = lo.copy(), hi.copy()
    frame_hi[axis] = lo[axis] + into * 0.02
    lo_f, hi_f = np.minimum(frame_lo, frame_hi), np.maximum(frame_lo, frame_hi)
    b.box(name + "_frame", lo_f, hi_f, (0.12, 0.1, 0.08), "wood")
    inset = np.full(3, 0.04)
    inset[axis] = 0.0
    canvas_lo, canvas_hi = lo_f + inset, hi_f - inset
    if into > 0:
        canvas_hi[axis] += 0.005
    else:
        canvas_lo[axis] -= 0.005
    b.box(name, canvas_lo, canvas_hi, b.vivid(), "painting")


# --- camera path


def look_at(eye: np.ndarray, target: np.ndarray, roll: float = 0.0, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Camera-to-world pose (OpenCV axes: x right, y down, z forward) at ``eye`` looking at ``target``."""
    forward = np.asarray(target, dtype=np.float64) - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    c, s = np.cos(roll), np.sin(roll)
    right, down = c * right + s * down, -s * right + c * down
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, down, forward, eye
    return pose


def camera_trajectory(frames: int, seed: int = 0, fps: float = 30.0, center=(0.0, 0.0)) -> np.ndarray:
    """``frames`` camera-to-world poses (N×4×4) of a handheld camera circling the table at ``center``.

    The eye follows an ellipse (semi-axes 0.85 × 0.6 m, one loop per 10 s, so 300 frames at 30 Hz close
    the loop) at about 1.45 m height with small smooth hand shake; it looks across the table at a point
    that wanders over the far side of the room, so every view has the table in front and furniture or
    walls behind. Everything is a sum of sinusoids whose frequencies are multiples of the loop's, hence
    smooth (≤ 2 cm and ≤ 2° per frame at 30 Hz) and periodic. ``seed`` sets the phases.
    """
    rng = np.random.default_rng([int(seed), 0x7A1])
    t = np.arange(frames, dtype=np.float64) / fps
    omega = 2.0 * np.pi / PERIOD_S
    ph = rng.uniform(0.0, 2.0 * np.pi, 12)
    theta = omega * t + ph[0]
    cx, cy = center
    eye = np.stack(
        [
            cx + ORBIT_A * np.cos(theta),
            cy + ORBIT_B * np.sin(theta),
            EYE_HEIGHT + 0.08 * np.sin(2 * theta + ph[1]),
        ],
        axis=1,
    )
    # hand shake: ~1 cm at 0.5-1.1 Hz (multiples of the loop frequency keep the path periodic)
    for k, (harmonic, amp) in enumerate(((5, 0.006), (8, 0.004), (11, 0.003))):
        for axis in range(3):
            eye[:, axis] += amp * np.sin(harmonic * omega * t + ph[2 + k] + 2.1 * axis)
    radial = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    target_xy = np.array([cx, cy]) - 1.2 * radial
    target_xy[:, 0] += 0.3 * np.sin(2 * omega * t + ph[5])
    target_xy[:, 1] += 0.25 * np.sin(3 * omega * t + ph[6])
    target_z = 0.7 + 0.2 * np.sin(2 * omega * t + ph[7]) + 0.08 * np.sin(5 * omega * t + ph[8])
    target = np.concatenate([target_xy, target_z[:, None]], axis=1)
    roll = 0.02 * np.sin(3 * omega * t + ph[9]) + 0.01 * np.sin(7 * omega * t + ph[10])
    return np.stack([look_at(eye[i], target[i], roll[i]) for i in range(frames)])
