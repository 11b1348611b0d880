"""Procedural worlds: determinism, landmark catalogue, connectivity, scene splits."""

import math

import numpy as np
import pytest

from nvila_nav.sim.episodes import SPLIT_SCENES, generate_episodes
from nvila_nav.sim.furniture import COLOURS, KINDS
from nvila_nav.sim.mjcf import FLOOR_TEXTURES, build_mjcf
from nvila_nav.sim.robot import CameraConfig
from nvila_nav.sim.world import FLOOR_STYLES, generate_world, scene_id, scene_index, world_for_scene


def test_same_index_gives_the_same_world_and_mjcf():
    a, b = generate_world(7), generate_world(7)
    assert a == b  # rooms, doorways, walls, landmarks (the grid is derived from them)
    assert np.array_equal(a.nav.occupied, b.nav.occupied)
    assert build_mjcf(a, CameraConfig()) == build_mjcf(b, CameraConfig())


def test_different_indices_give_different_worlds():
    layouts = {
        (w.size, len(w.rooms), tuple(lm.name for lm in w.landmarks))
        for w in map(generate_world, range(10))
    }
    assert len(layouts) == 10


def test_landmark_catalogue_has_at_least_8_kinds_and_6_colours_and_unique_names():
    kinds, colours = set(), set()
    for index in range(20):
        world = generate_world(index)
        names = [lm.name for lm in world.landmarks]
        assert len(names) == len(set(names)), f"scene {index} repeats a landmark name"
        assert len(world.rooms) >= 3 and len(world.doorways) >= len(world.rooms) - 1
        kinds |= {lm.kind for lm in world.landmarks}
        colours |= {lm.colour for lm in world.landmarks}
    assert kinds == set(KINDS) and len(kinds) >= 8
    assert colours == set(COLOURS) and len(colours) >= 6


@pytest.mark.parametrize("index", [0, 3, 11, 1000, 1005])
def test_every_room_and_every_landmark_approach_is_reachable(index):
    world = generate_world(index)
    nav = world.nav
    furniture = [lm for lm in world.landmarks if lm.kind != "door"]
    field = nav.distance_field(furniture[0].approach).values
    for lm in furniture:
        assert nav.clearance_at(*lm.approach) >= 0.35, lm.name
        assert math.isfinite(field[nav.cell(*lm.approach)]), lm.name
    for room in world.rooms:
        reachable = np.isfinite(field)
        x0, y0 = nav.cell(room.rect.x0, room.rect.y0)[::-1]
        x1, y1 = nav.cell(room.rect.x1, room.rect.y1)[::-1]
        assert reachable[y0:y1, x0:x1].any(), room.name


def test_walls_and_furniture_are_obstacles_on_the_grid():
    world = generate_world(2)
    for w in world.walls:
        if w.z0 == 0.0:
            assert world.nav.occupied[world.nav.cell(*w.rect.centre)]
    for lm in world.landmarks:
        if lm.kind != "door":
            assert world.nav.occupied[world.nav.cell(lm.x, lm.y)]
    for d in world.doorways:
        assert not world.nav.occupied[world.nav.cell(d.x, d.y)], "doorways must be open"


def test_every_floor_style_has_a_texture():
    assert set(FLOOR_TEXTURES) == set(FLOOR_STYLES)


def test_scene_ids_round_trip_and_reject_other_datasets():
    assert scene_index(scene_id(42)) == 42
    assert world_for_scene("nvsim/scene_0042") is world_for_scene("nvsim/scene_0042")
    with pytest.raises(ValueError, match="Matterport"):
        scene_index("mp3d/17DRP5sb8fy/17DRP5sb8fy.glb")


def test_unseen_scenes_are_disjoint_from_training_scenes():
    assert not set(SPLIT_SCENES["val_unseen"]) & set(SPLIT_SCENES["train"])
    assert set(SPLIT_SCENES["val_seen"]) <= set(SPLIT_SCENES["train"])


def test_geodesic_distance_matches_the_route_length():
    for e in generate_episodes("val_seen", 5, seed=2):
        field = world_for_scene(e.scene_id).nav.geodesic(e.goal.position[:2])
        d = field.at(*e.start_position[:2])
        assert d >= math.dist(e.start_position, e.goal.position)
        assert d == pytest.approx(e.info["geodesic_distance"], rel=0.1)
        assert field.at(*e.goal.position[:2]) == 0.0
