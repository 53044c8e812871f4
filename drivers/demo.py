"""The built-in demo scene: a procedurally generated furnished room with exact ground truth.

On first use the sequence is rendered by ``drivers.sim`` (ray casting on the CPU, a Kinect-like depth-noise
model; about 65 CPU-seconds for the default 300 frames at 640×480, split over two processes) into the cache
(``$SLAM_CACHE_DIR`` or ``~/.cache/neural-slam``, or the folder given as ``path``) under
``demo/<hash of the parameters>``, in the 7-Scenes layout; later runs with the same parameters reuse it.
Frames are then served by the 7-Scenes driver. ``gt_mesh_path`` is the scene's exact mesh.

With ``events=True`` the frames also carry the events of a simulated event camera at the colour camera's
optical centre and axes (``event_scale`` of its resolution): ESIM-style events (``drivers.sim.events``)
from renders along the scene's continuous camera path, as many per frame period as keep the flow between
renders within about 2 px. The stream is simulated once per scene and event camera and cached under
``demo_events/<hash>`` (about 10 CPU-seconds per 30 frames at 320×240). Each frame gets, as
``frame.events``, the events since the previous frame served (none for the first), like an RGB-D source
synchronised with an event recording (``drivers.events.sync``). The colour can be degraded the way event
cameras are meant to cope with: ``blur`` (motion blur over that fraction of the frame period before the
frame, the colour warped with its depth along the path and averaged) and ``low_light`` (15 % of the range,
shot and read noise). Depth is never degraded.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from drivers.base import SequenceSource, SourceError
from drivers.image_io import read_matrix
from drivers.sevenscenes import SevenScenesSource
from drivers.sim import DemoSceneConfig, ensure_scene
from drivers.sim.dataset import MESH_FILE
from slam.core.frames import RGBDFrame

EVENT_MAX_FLOW_PX = 2.0  # flow between two renders of the event simulation (1 px takes twice as long)


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
        events: bool = False,
        event_scale: float = 0.5,
        blur: float = 0.0,
        low_light: bool = False,
    ) -> None:
        """``path``: the cache root to use instead of the default; ``seed`` ... ``noise`` select the scene;
        ``events``: simulate an event camera of ``event_scale`` × the RGB-D resolution; ``blur``: the colour
        exposure as a fraction of the frame period (0 = sharp, 1 = a whole period); ``low_light``: darken
        the colour (see the module doc)."""
        SequenceSource.__init__(self, first, last, stride)  # check the selection before rendering anything
        if not 0.0 <= float(blur) <= 1.0:
            raise SourceError(
                f"demo: blur must be within [0, 1] (a fraction of the frame period), got {blur}"
            )
        if not 0.0 < float(event_scale) <= 1.0:
            raise SourceError(f"demo: event_scale must be within (0, 1], got {event_scale}")
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
        self.blur, self.low_light = float(blur), bool(low_light)
        self.event_intrinsics = self.config.intrinsics.scaled(float(event_scale)) if events else None
        self.events_folder: Path | None = None
        self._stream = None
        self._warper = None
        if self.event_intrinsics is not None:
            from drivers.sim.events import EventSimConfig, ensure_demo_events

            intr = self.event_intrinsics
            if min(intr.width, intr.height) < 8:
                raise SourceError(f"demo: an event camera of {intr.width}x{intr.height} px is too small")
            try:
                self.events_folder = ensure_demo_events(
                    self.config, intr, EventSimConfig(seed=int(seed)), EVENT_MAX_FLOW_PX, path, progress
                )
            except OSError as exc:
                raise SourceError(f"demo: cannot simulate the events: {exc}") from exc

    def _load(self, position: int, entry: int) -> RGBDFrame:
        frame = super()._load(position, entry)
        if frame.color is None:
            return frame
        if self.blur > 0 and entry > 0 and frame.gt_pose is not None:
            from drivers.sim.events import DepthWarper, blurred_color

            if self._warper is None:
                self._warper = DepthWarper(frame.intrinsics)
            previous = read_matrix(self._path(entry - 1, "pose.txt"), (4, 4))  # one frame period earlier
            frame.color = blurred_color(frame, previous, exposure=self.blur, warper=self._warper)
        if self.low_light:
            from drivers.sim.events import low_light

            frame.color = low_light(frame.color, np.random.default_rng([self.config.seed, entry, 0x11]))
        return frame

    def __iter__(self) -> Iterator[RGBDFrame]:
        if self.events_folder is None:
            yield from super().__iter__()
            return
        from drivers.sim.events import Events, load_events

        if self._stream is None:
            self._stream = load_events(self.events_folder)
        intr = self.event_intrinsics
        previous: float | None = None
        for frame in super().__iter__():
            ev = Events.empty() if previous is None else self._stream.between(previous, frame.timestamp)
            previous = frame.timestamp
            frame.events = ev.packet(
                intr.width, intr.height, timestamp=frame.timestamp, index=frame.index, intrinsics=intr
            )
            yield frame
