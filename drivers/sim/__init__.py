"""The built-in demo scene: a procedural furnished room, a handheld camera path, a ray-cast RGB-D renderer
with a structured-light depth-noise model, and a cache of the rendered sequence in the 7-Scenes layout.

Depends only on ``slam.core.frames`` and ``slam.core.geometry`` (and numpy, scipy, open3d, pillow, tqdm).
"""

from drivers.sim.cache import default_cache_root
from drivers.sim.dataset import (
    GENERATOR_VERSION,
    DemoSceneConfig,
    ensure_scene,
    generate_scene,
    is_complete,
    scene_folder,
)
from drivers.sim.depth_noise import DepthNoiseParams, apply_color_noise, apply_depth_noise
from drivers.sim.indoor import IndoorScene, build_indoor_scene, camera_trajectory, look_at
from drivers.sim.render import Renderer, RenderOutput

__all__ = [
    "GENERATOR_VERSION",
    "DemoSceneConfig",
    "DepthNoiseParams",
    "IndoorScene",
    "RenderOutput",
    "Renderer",
    "apply_color_noise",
    "apply_depth_noise",
    "build_indoor_scene",
    "camera_trajectory",
    "default_cache_root",
    "ensure_scene",
    "generate_scene",
    "is_complete",
    "look_at",
    "scene_folder",
]
