"""Building what a config describes: the source (with events attached) and the engine (tracker, mapper
and the sensor's frontend). Shared by ``slam replay``, the service and the benchmarks."""

from __future__ import annotations

from drivers.base import Source, SourceError, open_source
from slam.app.config import SLAMConfig, torch_threads
from slam.core.observation import Frontend
from slam.engine.baseline import Open3DOdometryTracker, TSDFMapper
from slam.engine.engine import Engine
from slam.engine.mapper import Mapper, MapperConfig
from slam.engine.tracker import Tracker, TrackerConfig
from slam.frontends import check_sensor
from slam.frontends.events import EventFrontend
from slam.frontends.lidar import LidarFrontend
from slam.frontends.rgbd import RgbdFrontend, RgbdSampling
from slam.map.neural_map import NeuralSDFMap, build_map, set_compute_threads


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


def rgbd_sampling(tracker: TrackerConfig, mapper: MapperConfig) -> RgbdSampling:
    """The RGB-D frontend's pixels and budgets from the ``tracker`` and ``mapper`` sections (where their
    keys have always been: ``tracker.depth_max``, ``mapper.pixel_stride``, ...)."""
    return RgbdSampling(
        tracking_points=tracker.points,
        tracking_stride=tracker.pixel_stride,
        tracking_depth_min=tracker.depth_min,
        tracking_depth_max=tracker.depth_max,
        depth_weight_power=tracker.depth_weight_power,
        mapping_stride=mapper.pixel_stride,
        mapping_depth_min=mapper.depth_min,
        mapping_depth_max=mapper.depth_max,
        mapping_rays=max(mapper.keyframe_rays, mapper.rays),  # a keyframe keeps its rays for later steps
    )


def build_frontend(cfg: SLAMConfig, sensor: str) -> Frontend:
    """The frontend of a source's sensor kind (``Source.sensor``): the only place that knows which."""
    check_sensor(sensor, "neural")
    if sensor == "lidar":
        return LidarFrontend(cfg.lidar, seed=cfg.seed)
    rgbd = RgbdFrontend(rgbd_sampling(cfg.tracker, cfg.mapper), seed=cfg.seed)
    if not cfg.events.tracking.enabled:
        return rgbd
    # the event term on top; frames without events give the RGB-D observation unchanged
    return EventFrontend(
        rgbd, cfg.events.tracking, seed=cfg.seed, constant_velocity=cfg.tracker.constant_velocity
    )


def build_engine(
    cfg: SLAMConfig, sensor: str, neural_map: NeuralSDFMap | None = None, with_mapper: bool = True
) -> Engine:
    """The configured tracker, mapper and the frontend of ``sensor`` (a source's ``sensor``: "rgbd" or
    "lidar"); ``neural_map`` continues an existing (loaded) map, and ``with_mapper=False`` tracks only
    (localisation in a saved map)."""
    import torch

    set_compute_threads(torch_threads(cfg))
    # the decoder's initial weights and fresh embeddings come from torch's global generator: seed it, or
    # two runs of the same config start from different maps
    torch.manual_seed(cfg.seed)
    check_sensor(sensor, cfg.pipeline)
    if cfg.pipeline == "baseline":
        if neural_map is not None:
            raise ValueError("a saved neural map needs pipeline: neural (the baseline keeps an Open3D TSDF)")
        return Engine(
            Open3DOdometryTracker(cfg.baseline.odometry),
            TSDFMapper(cfg.baseline.tsdf) if with_mapper else None,
        )
    frontend = build_frontend(cfg, sensor)
    neural_map = neural_map if neural_map is not None else build_map(cfg.map)
    # every sensor goes through the same tracker and mapper: its frontend turns frames into points and rays
    mapper = Mapper(neural_map, cfg.mapper, seed=cfg.seed) if with_mapper else None
    return Engine(Tracker(neural_map, cfg.tracker), mapper, frontend)
