"""MJCF text of a world plus the robot, tuned for cheap CPU rendering.

Rendering cost on Mesa's llvmpipe is dominated by shadow maps and multisampling, so both are off;
one directional light plus the headlight light every wall from any view. Furniture is made of
visual-only geoms with one invisible box per piece (geom group 3) for collisions.
"""

from __future__ import annotations

import math

from nvila_nav.sim.furniture import COLOURS, RGB, parts
from nvila_nav.sim.furniture import height as furniture_height
from nvila_nav.sim.robot import CameraConfig, robot_actuators, robot_body
from nvila_nav.sim.world import DOOR_HEIGHT, WALL_HEIGHT, WALL_THICKNESS, World

TIMESTEP = 0.005
"""Physics step (s): 200 Hz, as the Isaac Lab setup NaVILA was evaluated in."""

FLOOR_TEXTURES: dict[str, tuple[str, RGB, RGB, str, str]] = {
    # style: (builtin, colour 1, colour 2, texrepeat per metre, mark)
    "wood": ("checker", (0.55, 0.36, 0.20), (0.50, 0.32, 0.17), "1 4", "none"),
    "oak": ("checker", (0.76, 0.60, 0.40), (0.70, 0.55, 0.36), "1 4", "none"),
    "tiles": ("checker", (0.90, 0.90, 0.88), (0.72, 0.72, 0.72), "1 1", "none"),
    "slate": ("checker", (0.38, 0.40, 0.43), (0.30, 0.32, 0.35), "1.5 1.5", "none"),
    "carpet_blue": ("flat", (0.32, 0.40, 0.58), (0.32, 0.40, 0.58), "1 1", "random"),
    "carpet_red": ("flat", (0.58, 0.30, 0.28), (0.58, 0.30, 0.28), "1 1", "random"),
}


def _f(*values: float) -> str:
    return " ".join(f"{v:.4f}".rstrip("0").rstrip(".") if v else "0" for v in values)


def _rgba(rgb: RGB) -> str:
    return _f(*rgb) + " 1"


def build_mjcf(world: World, camera: CameraConfig) -> str:
    """Complete model: world geometry, robot at the origin (reset moves it), camera offscreen size."""
    xs, ys = world.size
    out = [
        f'<mujoco model="{world.scene_id}">',
        '<compiler angle="radian" autolimits="true"/>',
        f'<option timestep="{TIMESTEP}" integrator="implicitfast" gravity="0 0 -9.81"/>',
        f'<statistic extent="5" center="{_f(xs / 2, ys / 2, 1)}"/>',
        "<visual>",
        f'<global offwidth="{camera.width}" offheight="{camera.height}"/>',
        '<quality shadowsize="0" offsamples="0" numslices="16" numstacks="8"/>',
        '<headlight ambient="0.42 0.42 0.42" diffuse="0.38 0.38 0.38" specular="0 0 0"/>',
        '<map znear="0.008" zfar="20"/>',
        "</visual>",
        "<default>",
        '<geom contype="0" conaffinity="0" friction="0.05 0.005 0.0001"/>',
        '<default class="solid"><geom contype="1" conaffinity="0" condim="1"/></default>',
        '<default class="proxy"><geom contype="1" conaffinity="0" condim="1" group="3" rgba="1 0 1 0.3"/>'
        "</default>",
        "</default>",
        "<asset>",
    ]
    for style, (builtin, c1, c2, repeat, mark) in FLOOR_TEXTURES.items():
        out.append(
            f'<texture name="{style}" type="2d" builtin="{builtin}" rgb1="{_f(*c1)}" '
            f'rgb2="{_f(*c2)}" mark="{mark}" markrgb="{_f(*(0.8 * c for c in c1))}" '
            'random="0.04" width="64" height="64"/>'
        )
        out.append(
            f'<material name="{style}" texture="{style}" texrepeat="{repeat}" texuniform="true" '
            'specular="0.1" shininess="0.1"/>'
        )
    out.append('<material name="matte" specular="0.05" shininess="0.05"/>')
    # The ceiling faces away from the light; a little emission keeps it from reading as a void.
    out.append('<material name="ceiling" emission="0.5" specular="0" shininess="0"/>')
    out.append("</asset>")
    out.append("<worldbody>")
    out.append(
        '<light name="sun" directional="true" castshadow="false" pos="0 0 10" '
        'dir="0.35 0.25 -1" diffuse="0.45 0.45 0.45" specular="0.05 0.05 0.05"/>'
    )
    for room in world.rooms:
        r = room.rect
        cx, cy = r.centre
        out.append(
            f'<geom name="floor{room.index}" type="plane" pos="{_f(cx, cy, 0)}" '
            f'size="{_f(r.width / 2, r.depth / 2, 0.1)}" material="{room.floor}"/>'
        )
    out.append(
        f'<geom name="ceiling" type="box" pos="{_f(xs / 2, ys / 2, WALL_HEIGHT + 0.03)}" '
        f'size="{_f(xs / 2 + 0.2, ys / 2 + 0.2, 0.03)}" rgba="0.93 0.93 0.91 1" material="ceiling"/>'
    )
    out += _walls(world)
    out += _landmarks(world)
    out.append(robot_body(camera))
    out.append("</worldbody>")
    out.append(robot_actuators())
    out.append("</mujoco>")
    return "\n".join(out)


def _walls(world: World) -> list[str]:
    """Each wall piece as two half-thickness boxes, one per face colour."""
    q = WALL_THICKNESS / 4
    geoms = []
    for w in world.walls:
        half_len = (w.hi - w.lo) / 2
        mid = (w.lo + w.hi) / 2
        hz, z = (w.z1 - w.z0) / 2, (w.z1 + w.z0) / 2
        for sign, rgb in ((-1, w.rgb_lo), (1, w.rgb_hi)):
            c = w.c + sign * q
            pos, size = (
                ((mid, c, z), (half_len, q, hz)) if w.along_x else ((c, mid, z), (q, half_len, hz))
            )
            geoms.append(
                f'<geom class="solid" type="box" pos="{_f(*pos)}" size="{_f(*size)}" '
                f'rgba="{_rgba(rgb)}" material="matte"/>'
            )
    return geoms


def _landmarks(world: World) -> list[str]:
    geoms = []
    for lm in world.landmarks:
        rgb = COLOURS[lm.colour]
        if lm.kind == "door":
            geoms += _door_frame(world, lm.x, lm.y, rgb)
            continue
        c, s = math.cos(lm.yaw), math.sin(lm.yaw)
        for p in parts(lm.kind, rgb):
            px, py, pz = p.pos
            pos = (lm.x + c * px - s * py, lm.y + s * px + c * py, pz)
            geoms.append(
                f'<geom type="{p.shape}" pos="{_f(*pos)}" size="{_f(*p.size)}" '
                f'euler="0 0 {lm.yaw:.5f}" rgba="{_rgba(p.rgb)}" material="matte"/>'
            )
        f = lm.footprint
        h = furniture_height(lm.kind)
        geoms.append(
            f'<geom class="proxy" type="box" pos="{_f(*f.centre, h / 2)}" '
            f'size="{_f(f.width / 2, f.depth / 2, h / 2)}"/>'
        )
    return geoms


def _door_frame(world: World, x: float, y: float, rgb: RGB) -> list[str]:
    """Two posts beside the opening and a lintel over it, all outside the walkable gap."""
    door = min(world.doorways, key=lambda d: math.hypot(d.x - x, d.y - y))
    across = WALL_THICKNESS / 2 + 0.03
    geoms = []
    boxes = [
        (sign * (door.width / 2 + 0.05), DOOR_HEIGHT / 2, 0.05, DOOR_HEIGHT / 2) for sign in (-1, 1)
    ]
    boxes.append((0.0, DOOR_HEIGHT + 0.05, door.width / 2 + 0.1, 0.05))
    for offset, z, half_along, hz in boxes:
        if door.along_x:
            pos, size = (x + offset, y, z), (half_along, across, hz)
        else:
            pos, size = (x, y + offset, z), (across, half_along, hz)
        geoms.append(
            f'<geom type="box" pos="{_f(*pos)}" size="{_f(*size)}" rgba="{_rgba(rgb)}" '
            'material="matte"/>'
        )
    return geoms
