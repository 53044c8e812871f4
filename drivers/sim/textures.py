"""Procedural surface textures evaluated at ray-hit points (vectorised numpy, no image files).

Every surface of the demo scene has a *material*; its albedo at a hit point is a function of the 3-D
position, the surface normal and a per-part salt, so colour images carry texture for photometric
tracking without texture maps. Coordinates on a surface come from box projection: the two world axes
orthogonal to the normal's dominant axis (every primitive in the scene is nearly axis-aligned or small).
"""

from __future__ import annotations

import numpy as np

# material names, in the order of their integer ids
MATERIALS = (
    "plain",  # painted/plastic surface with faint noise
    "paint",  # walls: blotchy paint with wallpaper stripes
    "floor",  # wooden planks with seams and grain
    "ceiling",  # tiles with dark joints
    "checker",  # rug, boxes
    "fabric",  # sofa, foliage: high-frequency noise
    "painting",  # posters and pictures: colourful multi-scale noise
    "wood",  # furniture: grain stripes
    "sky",  # window pane: emissive gradient with clouds
)
MATERIAL_ID = {name: i for i, name in enumerate(MATERIALS)}
EMISSIVE = frozenset({MATERIAL_ID["sky"]})


# a fixed table of lattice values: value noise looks values up instead of hashing (period 1024 cells)
_TABLE_BITS = 10
_TABLE_MASK = (1 << _TABLE_BITS) - 1
_TABLE = np.random.default_rng(0x7E57).random(1 << (2 * _TABLE_BITS), dtype=np.float32)


def _hash(i: np.ndarray, j: np.ndarray, salt: np.ndarray | int) -> np.ndarray:
    """Integer lattice hash to [0, 1] (float32), for per-cell random values such as plank tones."""
    i = np.asarray(i, dtype=np.int64)
    h = (
        i * 374761393
        + np.asarray(j, dtype=np.int64) * 668265263
        + np.asarray(salt, dtype=np.int64) * 1442695041
    )
    h &= 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * 1274126177) & 0xFFFFFFFF
    h ^= h >> 16
    return ((h & 0xFFFFFF) * (1.0 / 0xFFFFFF)).astype(np.float32)


def value_noise(s: np.ndarray, t: np.ndarray, salt: np.ndarray | int = 0) -> np.ndarray:
    """Smooth 2-D value noise in [0, 1] with unit lattice spacing (float32)."""
    s = np.asarray(s, dtype=np.float32)
    t = np.asarray(t, dtype=np.float32)
    fi, fj = np.floor(s), np.floor(t)
    salt = np.asarray(salt, dtype=np.int32)
    i = fi.astype(np.int32) + salt * 97
    j = fj.astype(np.int32) + salt * 61
    fs, ft = s - fi, t - fj
    fs = fs * fs * (3.0 - 2.0 * fs)
    ft = ft * ft * (3.0 - 2.0 * ft)
    i0 = (i & _TABLE_MASK) << _TABLE_BITS
    i1 = ((i + 1) & _TABLE_MASK) << _TABLE_BITS
    j0 = j & _TABLE_MASK
    j1 = (j + 1) & _TABLE_MASK
    a, b, c, d = _TABLE[i0 | j0], _TABLE[i1 | j0], _TABLE[i0 | j1], _TABLE[i1 | j1]
    top = a + (b - a) * fs
    bottom = c + (d - c) * fs
    return top + (bottom - top) * ft


def fbm(s: np.ndarray, t: np.ndarray, salt: np.ndarray | int = 0, octaves: int = 3) -> np.ndarray:
    """Fractal sum of ``octaves`` value-noise layers, normalised to [0, 1]."""
    salt = np.asarray(salt, dtype=np.int32)
    total = value_noise(s, t, salt)
    amp, norm, freq = 0.5, 1.0, 2.0
    for k in range(1, octaves):
        total += amp * value_noise(s * freq, t * freq, salt + 7919 * k)
        norm += amp
        amp *= 0.5
        freq *= 2.0
    return total / norm


def surface_coords(points: np.ndarray, normals: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Box-projected (s, t) coordinates and the dominant normal axis (0, 1, 2) of each point.

    ``points`` and ``normals`` are 3×M (one row per axis). Normal mostly along x: (s, t) = (y, z);
    along y: (x, z); along z: (x, y).
    """
    ax, ay, az = np.abs(normals[0]), np.abs(normals[1]), np.abs(normals[2])
    along_x = (ax >= ay) & (ax >= az)
    along_z = ~along_x & (az > ay)
    s = np.where(along_x, points[1], points[0])
    t = np.where(along_z, points[1], points[2])
    axis = np.where(along_x, 0, np.where(along_z, 2, 1)).astype(np.int8)
    return s, t, axis


def albedo(
    points: np.ndarray,
    normals: np.ndarray,
    material: np.ndarray,
    color: np.ndarray,
    salt: np.ndarray,
) -> np.ndarray:
    """Albedo (M×3 float32 in [0, 1]) at M hit points given as 3×M ``points`` and ``normals``, with each
    point's material id, base colour (M×3) and salt."""
    points = np.asarray(points, dtype=np.float32)
    s, t, axis = surface_coords(points, normals)
    order = np.argsort(material, kind="stable")
    bounds = np.searchsorted(material[order], np.arange(len(MATERIALS) + 1))
    out = np.empty((points.shape[1], 3), dtype=np.float32)
    color = np.asarray(color, dtype=np.float32)
    for mat_id in range(len(MATERIALS)):
        lo, hi = bounds[mat_id], bounds[mat_id + 1]
        if hi > lo:
            sel = order[lo:hi]
            fn = _MATERIAL_FUNCS[MATERIALS[mat_id]]
            out[sel] = fn(points[:, sel], s[sel], t[sel], axis[sel], color[sel], salt[sel])
    return np.clip(out, 0.0, 1.0, out=out)


def _plain(p, s, t, axis, c, salt):
    return c * (0.9 + 0.2 * fbm(s * 6.0, t * 6.0, salt, 2))[:, None]


def _paint(p, s, t, axis, c, salt):
    # vertical wallpaper stripes (period 0.25 m, soft edges) with a small diamond motif, on blotchy paint
    stripe = 0.5 + 0.5 * np.clip(4.0 * np.sin((2 * np.pi / 0.25) * s), -1.0, 1.0)
    diamond = (np.abs(((s / 0.25) % 1.0) - 0.5) + np.abs(((t / 0.3) % 1.0) - 0.5)) < 0.18
    blotch = fbm(s * 1.2, t * 1.2, salt, 2)
    fine = value_noise(s * 25.0, t * 25.0, salt + 3)
    k = 0.78 + 0.1 * stripe + 0.08 * diamond + 0.22 * (blotch - 0.5) + 0.05 * fine
    return c * k[:, None]


def _floor(p, s, t, axis, c, salt):
    # planks along x, 0.16 m wide, 1.2 m long, rows offset at random; grain warped by noise
    x, y = p[0], p[1]
    width, length = 0.16, 1.2
    row_f = np.floor(y / width)
    row = row_f.astype(np.int64)
    xo = x + _hash(row, 17, salt) * length
    col_f = np.floor(xo / length)
    tone = 0.72 + 0.38 * _hash(row, col_f.astype(np.int64), salt + 1)
    v = y / width - row_f
    u = xo / length - col_f
    seam = np.where((v < 0.03) | (v > 0.97) | (u < 0.004) | (u > 0.996), np.float32(0.45), np.float32(1.0))
    warp = value_noise(x * 1.5, y * 6.0, salt + 2)
    grain = 0.86 + 0.14 * np.sin((2 * np.pi) * (v * 5.0 + 3.0 * warp + x * 0.7))
    knots = 1.0 - 1.25 * np.clip(value_noise(x * 9.0, y * 30.0, salt + 5) - 0.8, 0.0, None)
    return c * (tone * grain * seam * knots)[:, None]


def _ceiling(p, s, t, axis, c, salt):
    su, tv = (s / 0.6) % 1.0, (t / 0.6) % 1.0
    joint = np.where(
        (su < 0.015) | (su > 0.985) | (tv < 0.015) | (tv > 0.985), np.float32(0.7), np.float32(1.0)
    )
    speckle = value_noise(s * 40.0, t * 40.0, salt)
    return c * (joint * (0.9 + 0.1 * speckle))[:, None]


def _checker(p, s, t, axis, c, salt):
    size = 0.12
    parity = (np.floor(s / size).astype(np.int64) + np.floor(t / size).astype(np.int64)) & 1
    alt = 1.0 - 0.55 * c  # a contrasting second colour derived from the base colour
    base = np.where(parity[:, None] == 1, c, alt * 0.8)
    return base * (0.88 + 0.2 * fbm(s * 10.0, t * 10.0, salt, 2))[:, None]


def _fabric(p, s, t, axis, c, salt):
    weave = value_noise(s * 60.0, t * 60.0, salt)
    coarse = fbm(s * 4.0, t * 4.0, salt + 1, 2)
    return c * (0.7 + 0.25 * weave + 0.3 * (coarse - 0.5))[:, None]


def _painting(p, s, t, axis, c, salt):
    a = fbm(s * 5.0, t * 5.0, salt, 4)
    b = fbm(s * 9.0 + 3.1, t * 9.0 - 1.7, salt + 11, 3)
    c2 = 1.0 - c
    c3 = np.stack([c[:, 2], c[:, 0], c[:, 1]], axis=1)
    mix = c + (c2 - c) * np.clip(2.2 * a - 0.6, 0, 1)[:, None]
    mix = mix + (c3 - mix) * np.clip(2.5 * b - 1.2, 0, 1)[:, None]
    return mix * (0.55 + 0.55 * fbm(s * 20.0, t * 20.0, salt + 5, 2))[:, None]


def _wood(p, s, t, axis, c, salt):
    # grain along the longer in-plane coordinate is unknown per point: use stripes in s warped by t
    warp = value_noise(s * 2.0, t * 8.0, salt)
    grain = 0.85 + 0.15 * np.sin((2 * np.pi) * (t * 18.0 + 4.0 * warp))
    return c * (grain * (0.92 + 0.16 * value_noise(s * 30.0, t * 3.0, salt + 1)))[:, None]


def _sky(p, s, t, axis, c, salt):
    z = p[2]
    height = np.clip((z - 0.9) / 1.2, 0.0, 1.0)
    blue = np.array([0.55, 0.72, 0.95], dtype=np.float32)
    white = np.array([0.95, 0.97, 1.0], dtype=np.float32)
    sky = white + (blue - white) * height[:, None]
    clouds = np.clip(fbm(s * 3.0, t * 6.0, salt, 4) * 2.0 - 0.9, 0.0, 1.0)
    return sky + (1.0 - sky) * clouds[:, None]


_MATERIAL_FUNCS = {
    "plain": _plain,
    "paint": _paint,
    "floor": _floor,
    "ceiling": _ceiling,
    "checker": _checker,
    "fabric": _fabric,
    "painting": _painting,
    "wood": _wood,
    "sky": _sky,
}
