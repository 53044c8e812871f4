"""``ServiceConfig``: how ``slam run`` / ``slam launch`` drive the engine (the ``service:`` section). It lives
in slam.app beside the config that composes it, below the service that reads it."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from slam.core.config import StrictConfig
from slam.transport.control import ControlConfig
from slam.transport.publishers import PublisherConfig

Mode = Literal["auto", "fast", "realtime", "live"]


class ServiceConfig(StrictConfig):
    mode: Mode = Field(
        "auto",
        description="fast: every frame of a recording, as fast as possible; realtime: a recording paced by its "
        "timestamps, stale frames dropped; live: a live sensor, stale frames dropped; auto: live for live "
        "sources, fast for recordings",
    )
    speed: float = Field(
        1.0, gt=0, description="realtime mode: playback rate (2 = twice as fast as recorded)"
    )
    hold_until_initialised: bool = Field(
        True,
        description="realtime mode: stop the recording's clock after its first frame until the first map is "
        "fitted, as a live user holds the camera still until status leaves 'initialising' (false: the "
        "recording runs on and the frames of those seconds are dropped)",
    )
    frame_queue: int = Field(
        2, ge=1, le=1000, description="frames waiting between the driver and the tracker"
    )
    map_queue: int = Field(
        2, ge=1, le=1000, description="tracked frames waiting between the tracker and the mapper"
    )
    map_every_frame: bool | None = Field(
        None,
        description="the tracker waits for room in the mapping queue so every tracked frame is mapped; null = "
        "true in fast mode, false otherwise (realtime and live: mapping never holds tracking back; tracked "
        "frames the mapper has no room for are counted as not mapped)",
    )
    tracking_priority: bool = Field(
        True,
        description="realtime and live modes: the mapper waits before each optimiser step while a frame is "
        "tracked or waits to be, so tracking never shares the cores with mapping (on 2 cores it took twice "
        "its replay time when they ran at once); false: both run at once, as in fast mode",
    )
    tracking_threads: int = Field(
        0,
        ge=0,
        description="cores the tracking thread's torch ops and compiled loops may use; 0 = the run's "
        "`threads` (half the cores). With tracking_priority the mapper pauses while a frame is tracked, so "
        "the tracking thread could use every core then",
    )
    mapping_yield_cap_s: float = Field(
        0.5,
        gt=0,
        description="tracking_priority: the longest the mapper waits for tracking before one step, so a "
        "tracker slower than the frame rate still leaves the map a step every this many seconds",
    )
    mapping_turns_after_s: float = Field(
        0.0,
        ge=0,
        description="tracking_priority: a frame that waited this long to be mapped is mapped taking turns "
        "with tracking (the mapper waits for the frame being tracked to end, not for a frame-free moment): "
        "a tracker slower than the frame rate (7-Scenes at 30 Hz on 2 cores) is always busy and would leave "
        "the map a step per mapping_yield_cap_s. 0 (measured best: 7-Scenes realtime, 12 of 200 frames "
        "mapped against 6 with 1 s, and fewer lost): whenever tracking cannot keep up",
    )
    mapping_max_share: float = Field(
        0.5,
        ge=0,
        le=1,
        description="realtime and live modes: with no frame to map, the mapper refines the map on its "
        "keyframes while mapping took less than this share of the last 2 s of wall time (0: never)",
    )
    mapping_max_age_s: float = Field(
        2.0,
        gt=0,
        description="the mapper counts as behind (status short_of: mapping) when the newest mapped frame "
        "arrived longer ago than this while newer frames were tracked",
    )
    load_map: Path | None = Field(None, description="start from this saved map (slam run --load-map)")
    localize_only: bool = Field(False, description="track in the loaded map without mapping (needs load_map)")
    save_map: bool = Field(
        True, description="on shutdown, write the map, keyframes and trajectory to output.dir/map_file"
    )
    map_file: str = Field("map.pt", min_length=1, description="file name of the saved map in output.dir")
    drain_timeout_s: float = Field(
        30.0,
        ge=0,
        description="on shutdown, how long the mapper may work through its queue before the rest is skipped",
    )
    mesh_max_share: float = Field(
        0.25,
        gt=0,
        le=1,
        description="largest share of the mapping thread's time spent re-meshing for the mesh "
        "topic: updates come every publish.mesh_every_s or further apart (re-meshing a room costs seconds on 2 cores)",
    )
    mesh_update_budget_s: float = Field(
        0.5,
        gt=0,
        description="one mesh update re-meshes changed blocks, longest waiting first, for about this long and "
        "leaves the rest to the next: mapping waits meanwhile, and a LiDAR scan changes blocks 80 m around "
        "(re-meshing all of them took 6.5 s an update on 2 cores, and the realtime tracker lost the map)",
    )
    publish: PublisherConfig = Field(
        default_factory=PublisherConfig, description="ZeroMQ pose / mesh / status topics"
    )
    control: ControlConfig = Field(default_factory=ControlConfig, description="ZeroMQ control requests")

    @model_validator(mode="after")
    def _localize_needs_a_map(self) -> ServiceConfig:
        if self.localize_only and self.load_map is None:
            raise ValueError(
                "localize_only needs a map to track in: set service.load_map (slam run --load-map FILE)"
            )
        return self
