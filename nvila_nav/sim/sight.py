"""What the head camera sees, from the world's geometry alone (no MuJoCo, no renderer).

The captions, the statements a navigation model makes before it acts and the expert's stop all
ask the same question, "which landmarks are in view, and which of them close ahead?", so they
answer it here, in one place.
"""

from __future__ import annotations

import math

from nvila_nav.sim.geometry import Pose, wrap_angle
from nvila_nav.sim.navgrid import ROBOT_RADIUS
from nvila_nav.sim.world import World

CAMERA_FORWARD = ROBOT_RADIUS - 0.05
"""Where `robot.robot_body` mounts the head camera, ahead of the base centre (m). Bearings are
taken from there: near the edge of the image, the base centre would see a wider angle."""
CLOSE_AHEAD = 2.0
"""A landmark is "close ahead" when it is in view and its footprint within this many metres:
where the expert's stop in front of it leaves the robot, with a margin."""


def camera_position(pose: Pose) -> tuple[float, float]:
    """Where the head camera is at robot `pose` (x, y)."""
    return (
        pose.x + CAMERA_FORWARD * math.cos(pose.yaw),
        pose.y + CAMERA_FORWARD * math.sin(pose.yaw),
    )


def camera_bearing(pose: Pose, x: float, y: float) -> float:
    """The bearing of point (x, y) from the head camera at `pose` (radians, + left)."""
    cam = camera_position(pose)
    return wrap_angle(math.atan2(y - cam[1], x - cam[0]) - pose.yaw)


def landmarks_in_view(
    world: World, pose: Pose, hfov_deg: float, max_range: float = 8.0
) -> list[tuple[float, str, float]]:
    """(distance, name, bearing) of every landmark the camera sees, nearest first: the centre's
    bearing within hfov/2, the footprint within `max_range`, no wall on the line to the centre."""
    cam = camera_position(pose)
    half = math.radians(hfov_deg) / 2
    seen = []
    for lm in world.landmarks:
        bearing = camera_bearing(pose, lm.x, lm.y)
        distance = lm.footprint.distance_to(*cam)
        if abs(bearing) <= half and distance <= max_range and world.nav.visible(cam, (lm.x, lm.y)):
            seen.append((distance, lm.name, bearing))
    return sorted(seen)


def landmarks_close_ahead(world: World, pose: Pose, hfov_deg: float) -> list[str]:
    """Names of the landmarks close ahead (in view, within CLOSE_AHEAD), nearest first."""
    return [name for d, name, _ in landmarks_in_view(world, pose, hfov_deg) if d <= CLOSE_AHEAD]
