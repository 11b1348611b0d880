"""The simulated robot: a differential-drive base (a 25 cm-radius sphere for contacts) with a forward RGB camera at head height.

The base slides on x/y and turns about z; three velocity servos act in the body frame (forward,
sideways held at zero, yaw), so a (vx, wz) command is tracked within a few milliseconds while
contacts with walls and furniture push back and stop it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from nvila_nav.sim.navgrid import ROBOT_RADIUS

ROBOT_MASS = 12.0
ROBOT_HEIGHT = 0.35
_TAU = 0.01
"""Velocity servo time constant (s): gain = mass / tau."""


@dataclass(frozen=True)
class CameraConfig:
    """Forward RGB camera. Defaults: 640×480, 79° horizontal FOV (as StreamVLN's R2R setup),
    0.5 m above the floor, about the head height of a Unitree Go2."""

    width: int = 640
    height: int = 480
    hfov_deg: float = 79.0
    mount_height: float = 0.5
    pitch_deg: float = 0.0

    def __post_init__(self) -> None:
        if self.width < 8 or self.height < 8:
            raise ValueError(f"camera resolution too small: {self.width}x{self.height}")
        if not 10.0 <= self.hfov_deg <= 170.0:
            raise ValueError(f"hfov_deg must be in [10, 170], got {self.hfov_deg}")

    @property
    def fovy_deg(self) -> float:
        """Vertical FOV for MuJoCo, which specifies cameras by fovy and square pixels."""
        half = math.tan(math.radians(self.hfov_deg) / 2) * self.height / self.width
        return math.degrees(2 * math.atan(half))


def robot_body(camera: CameraConfig) -> str:
    """MJCF <body> of the robot with its joints, collision cylinder and camera."""
    pitch = math.radians(camera.pitch_deg)
    inertia_z = 0.5 * ROBOT_MASS * ROBOT_RADIUS**2
    inertia_xy = ROBOT_MASS * (3 * ROBOT_RADIUS**2 + ROBOT_HEIGHT**2) / 12
    return (
        '<body name="robot" pos="0 0 0.03">'
        '<joint name="x" type="slide" axis="1 0 0"/>'
        '<joint name="y" type="slide" axis="0 1 0"/>'
        '<joint name="yaw" type="hinge" axis="0 0 1"/>'
        f'<inertial pos="0 0 {ROBOT_HEIGHT / 2:.3f}" mass="{ROBOT_MASS}" '
        f'diaginertia="{inertia_xy:.4f} {inertia_xy:.4f} {inertia_z:.4f}"/>'
        # A sphere: its contact normals pass through the centre, so pushing against a corner
        # never twists the base; condim 1 (frictionless) lets it slide along walls.
        f'<geom name="robot" type="sphere" size="{ROBOT_RADIUS}" pos="0 0 {ROBOT_RADIUS - 0.03:.3f}" '
        'rgba="0.2 0.2 0.22 1" contype="0" conaffinity="1" condim="1" solref="0.01 1"/>'
        '<site name="base" pos="0 0 0"/>'
        f'<camera name="head" pos="{ROBOT_RADIUS - 0.05:.3f} 0 {camera.mount_height - 0.03:.3f}" '
        f'xyaxes="0 -1 0 {math.sin(pitch):.5f} 0 {math.cos(pitch):.5f}" '
        f'fovy="{camera.fovy_deg:.4f}"/>'
        "</body>"
    )


def robot_actuators() -> str:
    """Body-frame velocity servos: forward, sideways (held at 0: no wheel slip) and yaw."""
    kv = ROBOT_MASS / _TAU
    kw = 0.5 * ROBOT_MASS * ROBOT_RADIUS**2 / _TAU
    force = 30 * ROBOT_MASS
    torque = force * ROBOT_RADIUS  # enough to hold the heading against any contact push
    return (
        "<actuator>"
        f'<velocity name="vx" site="base" gear="1 0 0 0 0 0" kv="{kv:.2f}" '
        f'forcerange="{-force:.1f} {force:.1f}" ctrlrange="-2 2"/>'
        f'<velocity name="vy" site="base" gear="0 1 0 0 0 0" kv="{kv:.2f}" '
        f'forcerange="{-force:.1f} {force:.1f}" ctrlrange="-2 2"/>'
        f'<velocity name="wz" site="base" gear="0 0 0 0 0 1" kv="{kw:.3f}" '
        f'forcerange="{-torque:.2f} {torque:.2f}" ctrlrange="-4 4"/>'
        "</actuator>"
    )
