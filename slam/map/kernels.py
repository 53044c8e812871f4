"""Fused CPU kernels (numba) for the map's two hot paths; ``NeuralSDFMap``'s torch code is the reference.

Why: a tracking query of a few thousand points through the torch path is ~60 small ops (searchsorted,
index_select, the trilinear weights, the embedding gather, autograd's backward), each costing
microseconds of dispatch while the arithmetic of the whole query is well under a millisecond. Here one
compiled loop per level finds each point's block (binary search over the sorted block keys), reads its
eight corner rows from the block's table and interpolates the embeddings; the decoder stays a few batched
matmuls in torch (BLAS beats a per-point loop there), and a second loop turns the decoder's gradient with
respect to the features into the gradient with respect to the point (tracking) or into the embedding
rows' gradient and their Adam update in place (mapping), touching only the rows the step reached.

Every kernel releases the GIL (``nogil``), so the tracking and mapping threads run them side by side.
Compiled once per machine and cached (numba's ``cache=True``: in ``__pycache__`` next to this file, or the
user's cache directory when the package is installed read-only).
"""

from __future__ import annotations

import numpy as np

try:
    import numba

    AVAILABLE = True
except ImportError:  # pragma: no cover - numba is a dependency; kept importable without it
    numba = None
    AVAILABLE = False

_BITS = 21  # as slam.map.voxel_grid.pack_keys
_OFFSET = 1 << (_BITS - 1)


def jit(fn, **options):
    """``numba.njit`` with the on-disk cache where one can be written (a read-only install without a
    writable home compiles in memory instead: slower start, same code)."""
    if numba is None:  # pragma: no cover
        return fn
    try:
        return numba.njit(cache=True, nogil=True, **options)(fn)
    except RuntimeError:  # numba finds no cache location it may write
        return numba.njit(cache=False, nogil=True, **options)(fn)


def _threadsafe_layer() -> bool:
    """Whether numba has a thread pool that two Python threads may use at once (OpenMP or TBB; numba's
    own workqueue pool aborts when the tracking and mapping threads both launch parallel loops)."""
    if numba is None:
        return False
    for layer in ("omppool", "tbbpool"):
        try:
            __import__(f"numba.np.ufunc.{layer}")
        except ImportError:
            continue
        return True
    return False


PARALLEL = _threadsafe_layer()
if PARALLEL:
    numba.config.THREADING_LAYER = "threadsafe"


def _jit_per_point(fn):
    """A per-point loop (``prange``) compiled twice: serial, and split over the calling thread's numba
    threads (``set_threads``). One thread runs the serial build: a parallel region costs tens of µs."""
    serial = jit(fn)
    if not PARALLEL:
        return serial
    parallel = jit(fn, parallel=True)

    def dispatch(*args):
        return (parallel if numba.get_num_threads() > 1 else serial)(*args)

    dispatch.__name__ = fn.__name__
    dispatch.__doc__ = fn.__doc__
    return dispatch


def set_threads(n: int) -> int:
    """Use up to ``n`` cores in this Python thread's per-point loops (numba's setting is per thread);
    returns the count set (1 where no thread-safe pool exists)."""
    if not PARALLEL:
        return 1
    n = max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(n)
    return n


@jit
def _block_position(block_keys, key):
    """Index of ``key`` in the sorted ``block_keys``, -1 when absent."""
    lo, hi = 0, block_keys.shape[0]
    while lo < hi:
        mid = (lo + hi) >> 1
        if block_keys[mid] < key:
            lo = mid + 1
        else:
            hi = mid
    if lo < block_keys.shape[0] and block_keys[lo] == key:
        return lo
    return -1


@jit
def _block_key(vx, vy, vz, block):
    """The packed key (``voxel_grid.pack_keys``) of the block holding voxel (vx, vy, vz)."""
    bx, by, bz = vx // block, vy // block, vz // block
    return ((bx + _OFFSET) << (2 * _BITS)) | ((by + _OFFSET) << _BITS) | (bz + _OFFSET)


@jit
def _corner_entry(slot, vx, vy, vz, block, c):
    """Index into the flat table buffer of corner ``c`` (``voxel_grid.CORNERS`` bit order) of voxel
    (vx, vy, vz), whose block's table is at ``slot``."""
    n = block + 1
    lx, ly, lz = vx - (vx // block) * block, vy - (vy // block) * block, vz - (vz // block) * block
    return slot * n * n * n + (lx + ((c >> 2) & 1)) * n * n + (ly + ((c >> 1) & 1)) * n + lz + (c & 1)


@_jit_per_point
def locate_level(points, voxel_size, block, block_keys, block_slot, tables, rows, frac):
    """For N×3 float32 ``points``: each point's 8 corner rows (N×8 int64, -1 where unallocated, in the
    (x, y, z) bit order of ``voxel_grid.CORNERS``) and its position inside its voxel (N×3 float32).
    ``tables`` is the grid's flat table buffer ((block+1)³ entries per slot)."""
    vs = np.float32(voxel_size)
    for i in numba.prange(points.shape[0]):
        vx = np.int64(0)
        vy = np.int64(0)
        vz = np.int64(0)
        for a in range(3):
            s = points[i, a] / vs
            f = np.floor(s)
            frac[i, a] = s - f
            if a == 0:
                vx = np.int64(f)
            elif a == 1:
                vy = np.int64(f)
            else:
                vz = np.int64(f)
        pos = _block_position(block_keys, _block_key(vx, vy, vz, block)) if block_keys.shape[0] > 0 else -1
        for c in range(8):
            rows[i, c] = -1 if pos < 0 else tables[_corner_entry(block_slot[pos], vx, vy, vz, block, c)]


@jit
def _corner_weights(fx, fy, fz, w):
    one = np.float32(1.0)
    for c in range(8):
        wx = fx if (c >> 2) & 1 else one - fx
        wy = fy if (c >> 1) & 1 else one - fy
        wz = fz if c & 1 else one - fz
        w[c] = wx * wy * wz


@_jit_per_point
def interpolate_level(rows, frac, emb, feats, col, corners):
    """``feats[:, col:col+F]`` = trilinear interpolation of the embedding rows (unallocated corners
    count zero, as in the torch path). With ``corners`` of N×8×F (not 0×8×F) the gathered corner rows
    are kept there, so the gradient pass reads them in order instead of from the table again (on a large
    map each corner row is a cache miss)."""
    nf = emb.shape[1]
    one = np.float32(1.0)
    keep = corners.shape[0] > 0
    for i in numba.prange(rows.shape[0]):
        fx, fy, fz = frac[i, 0], frac[i, 1], frac[i, 2]
        for f in range(nf):
            feats[i, col + f] = 0.0
        for c in range(8):  # no scratch arrays: the loop body runs on several threads
            r = rows[i, c]
            if r < 0:
                if keep:
                    for f in range(nf):
                        corners[i, c, f] = 0.0
                continue
            wx = fx if (c >> 2) & 1 else one - fx
            wy = fy if (c >> 1) & 1 else one - fy
            wz = fz if c & 1 else one - fz
            wc = wx * wy * wz
            for f in range(nf):
                e = emb[r, f]
                feats[i, col + f] += wc * e
                if keep:
                    corners[i, c, f] = e


@_jit_per_point
def accumulate_point_gradient(corners, frac, voxel_size, grad_feats, col, grad):
    """``grad`` (N×3) += ∂feats/∂x ᵀ · grad_feats[:, col:col+F]: the chain rule through the trilinear
    weights of one level (d frac / d x = 1 / voxel size), from the corner rows ``interpolate_level`` kept
    (zero for unallocated corners)."""
    nf = corners.shape[2]
    one = np.float32(1.0)
    inv = np.float32(1.0) / np.float32(voxel_size)
    for i in numba.prange(corners.shape[0]):
        fx, fy, fz = frac[i, 0], frac[i, 1], frac[i, 2]
        gx = np.float32(0.0)
        gy = np.float32(0.0)
        gz = np.float32(0.0)
        for c in range(8):
            # how much this corner's embedding, projected on the feature gradient, moves the output
            s = np.float32(0.0)
            for f in range(nf):
                s += corners[i, c, f] * grad_feats[i, col + f]
            bx, by, bz = (c >> 2) & 1, (c >> 1) & 1, c & 1
            wx = fx if bx else one - fx
            wy = fy if by else one - fy
            wz = fz if bz else one - fz
            sx = one if bx else -one
            sy = one if by else -one
            sz = one if bz else -one
            gx += s * sx * wy * wz
            gy += s * wx * sy * wz
            gz += s * wx * wy * sz
        grad[i, 0] += gx * inv
        grad[i, 1] += gy * inv
        grad[i, 2] += gz * inv


@jit
def fitted(rows, hits, min_hits, valid):
    """``valid`` &= the point's finest corners were all fitted at least ``min_hits`` times."""
    for i in range(rows.shape[0]):
        if not valid[i]:
            continue
        for c in range(8):
            r = rows[i, c]
            if r < 0 or hits[r] < min_hits:
                valid[i] = False
                break


@jit
def record_hits(rows, n_first, hits):
    """Count the first ``n_first`` points whose 8 corners are all allocated as fitted once more."""
    for i in range(min(n_first, rows.shape[0])):
        complete = True
        for c in range(8):
            if rows[i, c] < 0:
                complete = False
                break
        if complete:
            for c in range(8):
                hits[rows[i, c]] += 1


@jit
def _number_touched_rows(rows, slot, touched):
    """Number the rows the points reach in ascending row order (``slot[row]`` = its number, ``touched``
    the rows): Adam then walks the embedding and moment tables in address order, which on a large map
    is several times faster than the order the points came in (each row a cache miss in three tables)."""
    n_table = slot.shape[0]
    count = 0
    for i in range(rows.shape[0]):
        for c in range(8):
            r = rows[i, c]
            if r >= 0 and slot[r] == -1:
                slot[r] = -2
                touched[count] = r
                count += 1
    if n_table <= 16 * rows.shape[0] * 8:  # a small table: a scan of the marks is cheaper than a sort
        count = 0
        for r in range(n_table):
            if slot[r] == -2:
                slot[r] = count
                touched[count] = r
                count += 1
    else:
        touched[:count] = np.sort(touched[:count])
        for k in range(count):
            slot[touched[k]] = k
    return count


@jit
def _sum_row_gradients(rows, frac, grad_feats, col, slot, summed):
    nf = summed.shape[1]
    w = np.empty(8, dtype=np.float32)
    for i in range(rows.shape[0]):
        _corner_weights(frac[i, 0], frac[i, 1], frac[i, 2], w)
        for c in range(8):
            r = rows[i, c]
            if r < 0:
                continue
            k = slot[r]
            wc = w[c]
            for f in range(nf):
                summed[k, f] += wc * grad_feats[i, col + f]


@jit
def _adam_rows(touched, summed, emb, exp_avg, exp_avg_sq, slot, alpha, b1, b2, e):
    one = np.float32(1.0)
    for k in range(touched.shape[0]):
        r = touched[k]
        slot[r] = -1
        for f in range(emb.shape[1]):
            g = summed[k, f]
            m = exp_avg[r, f] * b1 + (one - b1) * g
            v = exp_avg_sq[r, f] * b2 + (one - b2) * g * g
            exp_avg[r, f] = m
            exp_avg_sq[r, f] = v
            emb[r, f] -= alpha * (m / (np.sqrt(v) + e))


@jit
def row_adam_level(rows, frac, grad_feats, col, emb, exp_avg, exp_avg_sq, slot, lr, beta1, beta2, eps, step):
    """One lazy-Adam step (``RowAdam``'s update) of the embedding rows the N points reached, from the
    gradient of the loss with respect to their interpolated features (``grad_feats[:, col:col+F]``).

    ``slot`` (one int32 per row, all -1 on entry and again on return) maps a touched row to its place in
    the step's summed gradient, so the step costs the rows it touches, not the table's size.
    """
    touched = np.empty(rows.shape[0] * 8, dtype=np.int64)
    count = _number_touched_rows(rows, slot, touched)
    summed = np.zeros((count, emb.shape[1]), dtype=np.float32)
    _sum_row_gradients(rows, frac, grad_feats, col, slot, summed)
    bias1 = 1.0 - beta1**step
    bias2 = 1.0 - beta2**step
    alpha = np.float32(lr * np.sqrt(bias2) / bias1)
    _adam_rows(touched[:count], summed, emb, exp_avg, exp_avg_sq, slot, alpha,
               np.float32(beta1), np.float32(beta2), np.float32(eps))  # fmt: skip
    return count


@jit
def missing_voxels(points, voxel_size, dilate, block, block_keys, block_slot, tables):
    """The voxels within ``dilate`` voxels (each way) of the points' voxels that lack one of their 8
    corner rows (M×3 int64, with repeats): what allocation still has to add. A frame mostly re-observes
    mapped space, so this replaces sorting every dilated voxel of every point by one lookup each."""
    vs = np.float32(voxel_size)
    side = 2 * dilate + 1
    out = np.empty((points.shape[0] * side * side * side, 3), dtype=np.int64)
    count = 0
    n_blocks = block_keys.shape[0]
    last_key = np.int64(-1)  # neighbouring voxels mostly share a block: skip its binary search
    last_pos = -1
    for i in range(points.shape[0]):
        cx = np.int64(np.floor(points[i, 0] / vs))
        cy = np.int64(np.floor(points[i, 1] / vs))
        cz = np.int64(np.floor(points[i, 2] / vs))
        for dx in range(-dilate, dilate + 1):
            for dy in range(-dilate, dilate + 1):
                for dz in range(-dilate, dilate + 1):
                    vx, vy, vz = cx + dx, cy + dy, cz + dz
                    complete = False
                    if n_blocks > 0:
                        key = _block_key(vx, vy, vz, block)
                        if key != last_key:
                            last_key = key
                            last_pos = _block_position(block_keys, key)
                        if last_pos >= 0:
                            complete = True
                            for c in range(8):
                                if tables[_corner_entry(block_slot[last_pos], vx, vy, vz, block, c)] < 0:
                                    complete = False
                                    break
                    if not complete:
                        out[count, 0] = vx
                        out[count, 1] = vy
                        out[count, 2] = vz
                        count += 1
    return out[:count]
