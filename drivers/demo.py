"""The built-in demo scene: a procedurally generated furnished room with exact ground truth.

On first use the sequence is rendered by ``slam.sim`` (ray casting on the CPU, a Kinect-like depth-noise
model; about 65 CPU-seconds for the default 300 frames at 640×480, split over two processes) into the cache
(``$SLAM_CACHE_DIR`` or ``~/.cache/neural-slam``, or the folder given as ``path``) under
``demo/<hash of the parameters>``, in the 7-Scenes layout; later runs with the same parameters reuse it.
Frames are then served by the 7-Scenes driver. ``gt_mesh_path`` is the scene's exact mesh.
"""

from __future__ import annotations

from pathlib import Path

from drivers.base import SequenceSource, SourceError
from drivers.sevenscenes import SevenScenesSource
from slam.sim import DemoSceneConfig, ensure_scene
from slam.sim.dataset import MESH_FILE


class DemoSource(SevenScenesSource):
    name = "demo"
    sensor = "rgbd"

    def __init__(
        self,
        path: Path | None = None,
        first: int = 0,
        last: int | None = None,
        stride: int = 1,
        seed: int = 0,
        frames: int = 300,
        width: int = 640,
        height: int = 480,
        noise: bool = True,
        progress: bool = True,
    ) -> None:
        """``path``: the cache root to use instead of the default; the other options select the scene."""
        SequenceSource.__init__(self, first, last, stride)  # check the selection before rendering anything
        try:
            self.config = DemoSceneConfig(
                seed=int(seed), frames=int(frames), width=int(width), height=int(height), noise=bool(noise)
            )
        except ValueError as exc:
            raise SourceError(f"demo: {exc}") from exc
        try:
            self.folder = ensure_scene(self.config, cache_root=path, progress=progress)
        except OSError as exc:
            raise SourceError(f"demo: cannot generate the scene: {exc}") from exc
        self.gt_mesh_path = self.folder / MESH_FILE
        super().__init__(self.folder, first=first, last=last, stride=stride, fps=self.config.fps)
