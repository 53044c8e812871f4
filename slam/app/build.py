"""Building what a config describes: the source (with events attached) and the engine (tracker, mapper
and the sensor's frontend). Shared by ``slam replay``, the service and the benchmarks."""

from __future__ import annotations

from drivers.base import Source, SourceError, open_source
from slam.app.config import SLAMConfig, torch_threads
from slam.engine.baseline import Open3DOdometryTracker, TSDFMapper
from slam.engine.engine import Engine
from slam.engine.mapper import Mapper
from slam.engine.tracker import Tracker
from slam.frontends.events import EventAidedTracker
from slam.frontends.lidar import LidarFrontend
from slam.map.neural_map import NeuralSDFMap, build_map


def open_configured_source(cfg: SLAMConfig) -> Source:
    """The configured driver; with ``events.path`` set, its RGB-D frames carry that recording's events."""
    s = cfg.source
    source = open_source(s.kind, s.path, first=s.first, last=s.last, stride=s.stride, **s.options)
    if cfg.events.path is not None:
        from drivers.events.reader import EventFileError
        from drivers.events.sync import EventSyncedSource

        try:
            if source.sensor != "rgbd":
                raise SourceError(
                    f"events.path is set but source {s.kind!r} yields {source.sensor} data: events are attached "
                    "to RGB-D frames"
                )
            source = EventSyncedSource(source, cfg.events)
        except EventFileError as exc:
            source.close()
            raise SourceError(f"events.path: {exc}") from exc
        except BaseException:
            source.close()
            raise
    return source


def build_engine(cfg: SLAMConfig, neural_map: NeuralSDFMap | None = None, with_mapper: bool = True) -> Engine:
    """The configured tracker and mapper; ``neural_map`` continues an existing (loaded) map, and
    ``with_mapper=False`` tracks only (localisation in a saved map)."""
    import torch

    torch.set_num_threads(torch_threads(cfg))
    # the decoder's initial weights and fresh embeddings come from torch's global generator: seed it, or
    # two runs of the same config start from different maps
    torch.manual_seed(cfg.seed)
    if cfg.pipeline == "baseline":
        if neural_map is not None:
            raise ValueError("a saved neural map needs pipeline: neural (the baseline keeps an Open3D TSDF)")
        return Engine(
            Open3DOdometryTracker(cfg.baseline.odometry),
            TSDFMapper(cfg.baseline.tsdf) if with_mapper else None,
        )
    neural_map = neural_map if neural_map is not None else build_map(cfg.map)
    # RGB-D frames and LiDAR scans go through the same tracker and mapper; the LiDAR front end only
    # preprocesses scans and turns them into points and rays (slam/lidar.py)
    lidar = LidarFrontend(cfg.lidar)
    mapper = Mapper(neural_map, cfg.mapper, seed=cfg.seed, lidar=lidar) if with_mapper else None
    if cfg.events.tracking.enabled:
        # the depth tracker plus the event term; frames without events take the depth tracker's path exactly
        tracker: Tracker = EventAidedTracker(
            neural_map, cfg.tracker, seed=cfg.seed, lidar=lidar, events=cfg.events.tracking
        )
    else:
        tracker = Tracker(neural_map, cfg.tracker, seed=cfg.seed, lidar=lidar)
    return Engine(tracker, mapper)
