"""The embedded simulator: MuJoCo physics at 200 Hz, a diff-drive robot and its head camera.

`Simulator.reset(episode)` loads the episode's scene (models are cached per scene) and places
the robot; `step(vx, wz, dt)` holds a body-frame velocity command for `dt` seconds of sim time.
Frames are rendered only when asked for (`render=True`), so the expert and tests can run
kinematics and collisions alone, without any OpenGL.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass

# MuJoCo picks its OpenGL backend when first imported; default to headless EGL (Mesa on CPU,
# NVIDIA's EGL on GPU machines) unless the user chose another.
os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco
import numpy as np

from nvila_nav.sim.episodes import Episode, quaternion_to_yaw
from nvila_nav.sim.geometry import Pose, wrap_angle
from nvila_nav.sim.mjcf import TIMESTEP, build_mjcf
from nvila_nav.sim.robot import CameraConfig
from nvila_nav.sim.world import World, world_for_scene

EGL_PACKAGES = "libegl1 libegl-mesa0 libgl1-mesa-dri libgbm1"


class RenderingUnavailable(RuntimeError):
    """Headless OpenGL could not be started; the message says what to install."""


@dataclass(frozen=True)
class Observation:
    """What the robot gets after reset/step.

    rgb: HxWx3 uint8 camera frame, None when rendering was skipped.
    pose: odometry pose (exact in this simulator). velocity: body-frame (vx m/s, wz rad/s).
    time: sim time (s) since reset. collision: the base touches a wall or furniture.
    """

    rgb: np.ndarray | None
    pose: Pose
    velocity: tuple[float, float]
    time: float
    collision: bool


class Simulator:
    """One robot in one scene at a time; switching scenes rebuilds the MuJoCo model."""

    def __init__(self, camera: CameraConfig | None = None) -> None:
        self.camera = camera or CameraConfig()
        self.world: World | None = None
        self._model: mujoco.MjModel | None = None
        self._data: mujoco.MjData | None = None
        self._renderer: mujoco.Renderer | None = None
        self._steps = 0
        self._robot_geom = -1

    @property
    def model(self) -> mujoco.MjModel:
        if self._model is None:
            raise RuntimeError("call reset(episode) or load_scene(scene_id) first")
        return self._model

    @property
    def time(self) -> float:
        return round(self._steps * TIMESTEP, 9)

    def load_scene(self, scene_id: str) -> World:
        """Build (or keep) the MuJoCo model of `scene_id`; returns its world."""
        if self.world is not None and self.world.scene_id == scene_id:
            return self.world
        world = world_for_scene(scene_id)
        self.close()
        self._model = mujoco.MjModel.from_xml_string(build_mjcf(world, self.camera))
        self._data = mujoco.MjData(self._model)
        self._robot_geom = mujoco.mj_name2id(self._model, mujoco.mjtObj.mjOBJ_GEOM, "robot")
        self.world = world
        return world

    def reset(self, episode: Episode, render: bool = True) -> Observation:
        """Load the episode's scene and put the robot at its start pose, at rest, at time 0."""
        x, y = episode.start_position[0], episode.start_position[1]
        return self.reset_to(
            episode.scene_id, Pose(x, y, quaternion_to_yaw(episode.start_rotation)), render
        )

    def reset_to(self, scene_id: str, pose: Pose, render: bool = True) -> Observation:
        """Like reset, from an explicit scene and pose (for tests and teleoperation)."""
        self.load_scene(scene_id)
        data = self._data
        mujoco.mj_resetData(self.model, data)
        data.qpos[:3] = (pose.x, pose.y, pose.yaw)
        mujoco.mj_forward(self.model, data)
        self._steps = 0
        return self.observe(render)

    def step(self, vx: float, wz: float, dt: float, render: bool = True) -> Observation:
        """Hold forward speed `vx` (m/s) and yaw rate `wz` (rad/s, left +) for `dt` seconds.

        dt is rounded to whole 5 ms physics steps (at least one).
        """
        if not (math.isfinite(vx) and math.isfinite(wz) and math.isfinite(dt)) or dt < 0:
            raise ValueError(f"bad command vx={vx} wz={wz} dt={dt}")
        data = self._data
        if data is None:
            raise RuntimeError("call reset(episode) before step()")
        n = max(1, round(dt / TIMESTEP))
        data.ctrl[:] = (vx, 0.0, wz)
        mujoco.mj_step(self.model, data, nstep=n)
        self._steps += n
        return self.observe(render)

    @property
    def pose(self) -> Pose:
        q = self._data.qpos
        return Pose(float(q[0]), float(q[1]), wrap_angle(float(q[2])))

    def observe(self, render: bool = True) -> Observation:
        data = self._data
        yaw = float(data.qpos[2])
        vx = math.cos(yaw) * data.qvel[0] + math.sin(yaw) * data.qvel[1]
        collision = any(
            self._robot_geom in (c.geom1, c.geom2) and c.dist < 0.002
            for c in data.contact[: data.ncon]
        )
        return Observation(
            rgb=self.render() if render else None,
            pose=self.pose,
            velocity=(float(vx), float(data.qvel[2])),
            time=self.time,
            collision=collision,
        )

    def render(self) -> np.ndarray:
        """Current head-camera frame, HxWx3 uint8."""
        if self._renderer is None:
            self._renderer = _make_renderer(self.model, self.camera)
        self._renderer.update_scene(self._data, camera="head")
        return self._renderer.render()

    def close(self) -> None:
        """Free the GL context; the simulator can be reset again afterwards."""
        if self._renderer is not None:
            self._renderer.close()
        self._renderer = None
        self._model = None
        self._data = None
        self.world = None

    def __enter__(self) -> Simulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _gl_backend() -> str:
    """The backend MuJoCo picked when first imported (later changes to MUJOCO_GL are ignored)."""
    module = sys.modules.get("mujoco.rendering.classic.gl_context")
    chosen = getattr(module, "_MUJOCO_GL", os.environ.get("MUJOCO_GL", ""))
    return chosen or "glfw (default)"


def _make_renderer(model: mujoco.MjModel, camera: CameraConfig) -> mujoco.Renderer:
    try:
        return mujoco.Renderer(model, height=camera.height, width=camera.width)
    except Exception as exc:  # the GL backends raise ImportError, RuntimeError or FatalError
        backend = _gl_backend()
        hint = (
            ""
            if backend == "egl"
            else " MuJoCo picks its backend when first imported: export MUJOCO_GL=egl before "
            "starting Python, or import nvila_nav.sim.env before mujoco."
        )
        raise RenderingUnavailable(
            f"cannot start headless OpenGL (MuJoCo GL backend {backend!r}): {exc}. "
            f"On Debian/Ubuntu install EGL with Mesa: sudo apt-get install {EGL_PACKAGES} "
            f"(NVIDIA drivers ship their own libEGL), and run with MUJOCO_GL=egl.{hint}"
        ) from exc
