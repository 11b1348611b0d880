"""Simulator physics, odometry, collisions and headless rendering."""

import math

import numpy as np
import pytest

from nvila_nav.sim import env as env_module
from nvila_nav.sim.env import EGL_PACKAGES, RenderingUnavailable, Simulator
from nvila_nav.sim.geometry import Pose
from nvila_nav.sim.robot import CameraConfig
from nvila_nav.sim.world import WALL_THICKNESS, world_for_scene

SCENE = "nvsim/scene_0000"


@pytest.fixture
def sim():
    with Simulator(CameraConfig(width=64, height=48)) as s:
        yield s


def _room():
    world = world_for_scene(SCENE)
    return world, world.rooms[0].rect


def test_forward_and_turn_commands_move_by_navila_amounts(sim):
    _, rect = _room()
    cx, cy = rect.centre
    sim.reset_to(SCENE, Pose(cx, cy, 0.0), render=False)
    sim.step(0.5, 0.0, 1.5, render=False)
    obs = sim.step(0.0, 0.0, 0.5, render=False)
    assert obs.pose.x - cx == pytest.approx(0.75, abs=0.005)
    assert obs.pose.y == pytest.approx(cy, abs=1e-6)
    sim.step(0.0, math.pi / 6, 1.5, render=False)
    obs = sim.step(0.0, 0.0, 0.5, render=False)
    assert math.degrees(obs.pose.yaw) == pytest.approx(45.0, abs=0.2)
    assert obs.time == pytest.approx(4.0) and obs.rgb is None
    assert obs.velocity == pytest.approx((0.0, 0.0), abs=1e-6)


def test_collision_stops_the_robot_at_a_wall(sim):
    _, rect = _room()
    cx, cy = rect.centre
    sim.reset_to(SCENE, Pose(cx, cy, math.pi), render=False)  # facing the west wall
    for _ in range(120):  # 12 s at 0.5 m/s: far more than the distance to the wall
        obs = sim.step(0.5, 0.0, 0.1, render=False)
    wall_face = rect.x0 + WALL_THICKNESS / 2
    assert obs.collision
    assert obs.pose.x - wall_face == pytest.approx(0.25, abs=0.01)  # the robot radius
    assert obs.velocity[0] == pytest.approx(0.0, abs=1e-3)
    assert obs.pose.y == pytest.approx(cy, abs=1e-3) and abs(obs.pose.yaw) == pytest.approx(math.pi)


def test_glancing_contact_neither_penetrates_nor_twists_the_robot(sim):
    _, rect = _room()
    start = Pose(rect.x0 + 0.8, rect.centre[1], math.radians(160))
    sim.reset_to(SCENE, start, render=False)
    for _ in range(20):
        obs = sim.step(0.5, 0.0, 0.1, render=False)
    assert obs.pose.x >= rect.x0 + WALL_THICKNESS / 2 + 0.24
    assert obs.pose.y >= start.y  # the wheels do not slip sideways, so it barely slides
    assert obs.pose.yaw == pytest.approx(start.yaw, abs=1e-6)


def test_same_commands_give_the_same_trajectory():
    _, rect = _room()
    poses = []
    for _ in range(2):
        with Simulator() as s:
            s.reset_to(SCENE, Pose(*rect.centre, 0.3), render=False)
            for k in range(50):
                obs = s.step(0.5, 0.8 * math.sin(k / 5), 0.1, render=False)
            poses.append(obs.pose)
    assert poses[0] == poses[1]


def test_bad_commands_are_rejected(sim):
    sim.reset_to(SCENE, Pose(*_room()[1].centre, 0.0), render=False)
    with pytest.raises(ValueError):
        sim.step(math.nan, 0.0, 0.1)
    with pytest.raises(ValueError):
        sim.step(0.1, 0.0, -1.0)


def test_renders_a_camera_frame(sim):
    _, rect = _room()
    try:
        obs = sim.reset_to(SCENE, Pose(*rect.centre, 0.0), render=True)
    except RenderingUnavailable as exc:
        pytest.skip(str(exc))
    assert obs.rgb.shape == (48, 64, 3) and obs.rgb.dtype == np.uint8
    assert obs.rgb.std() > 5  # walls, floor and ceiling, not a blank image
    turned = sim.step(0.0, math.pi / 6, 1.0, render=True).rgb
    assert not np.array_equal(turned, obs.rgb)


def test_missing_egl_names_the_debian_packages(sim, monkeypatch):
    def broken(*args, **kwargs):
        raise env_module.mujoco.FatalError("gladLoadGL error")

    monkeypatch.setattr(env_module.mujoco, "Renderer", broken)
    sim.reset_to(SCENE, Pose(*_room()[1].centre, 0.0), render=False)
    with pytest.raises(RenderingUnavailable) as info:
        sim.render()
    assert EGL_PACKAGES in str(info.value) and "MUJOCO_GL" in str(info.value)


def test_camera_config_gives_the_requested_horizontal_fov():
    cam = CameraConfig(width=640, height=480, hfov_deg=79.0)
    half_h = math.tan(math.radians(cam.fovy_deg) / 2) * cam.width / cam.height
    assert math.degrees(2 * math.atan(half_h)) == pytest.approx(79.0)
    with pytest.raises(ValueError):
        CameraConfig(hfov_deg=200)
