"""`nvila-nav-bringup` refuses what cannot work before anything starts: one line, exit code 2.

Run as a user runs it (a fresh process) for the command line, and in-process on real rclpy for
the node-level checks behind it (nodes that fail construction are destroyed cleanly)."""

import os
import subprocess
import sys
import time

import pytest
from geometry_msgs.msg import TwistStamped
from ros_harness import isolated_context

from nvila_nav.nodes.bringup import (
    GRAPHS,
    Bringup,
    GraphStartError,
    argument_values,
    matched_cmd_vel_types,
    write_params_file,
)
from nvila_nav.sim.episodes import generate_episodes, write_episodes

pytestmark = pytest.mark.ros


def bringup(args, domain_id, timeout=60):
    command = [sys.executable, "-m", "nvila_nav.nodes.bringup", *args]
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain_id)}
    started = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    return done, time.monotonic() - started


def assert_one_line_error(done, *fragments):
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_sim_eval_without_episodes_fails_at_once(ros_domain_id, tmp_path):
    done, seconds = bringup(["sim_eval", "policy:=nvila"], ros_domain_id)
    assert_one_line_error(done, "episodes_file is required", "episodes:=FILE", "--episodes FILE")
    assert seconds < 30  # no model was loaded (it used to fail only after loading it)
    missing = tmp_path / "missing.json.gz"
    done, _ = bringup(["sim_eval", "--episodes", str(missing)], ros_domain_id)
    assert_one_line_error(done, f"episodes_file {missing} does not exist")


def test_a_robot_graph_refuses_random_weights(ros_domain_id):
    done, _ = bringup(["navigation"], ros_domain_id)
    assert_one_line_error(done, "RANDOM weights", "allow_random_weights: true", "model:=")
    done, _ = bringup(["navigation", "no_such_argument:=1"], ros_domain_id)
    assert_one_line_error(done, "unknown argument(s) no_such_argument")


def test_voice_without_a_microphone_names_audio_source(ros_domain_id, tmp_path):
    params = write_params_file(
        {"voice_teleop": {"microphone_device": "no such microphone"}}, tmp_path / "params.yaml"
    )
    done, _ = bringup(["voice", "policy:=expert", f"params_file:={params}"], ros_domain_id)
    assert_one_line_error(done, "audio_source", "audio_source:=file", "topic", "none")


def test_nodes_that_fail_construction_are_destroyed_without_a_second_error(ros_domain_id, tmp_path):
    """In-process, past the command line's checks: the sim refuses a missing episodes file, the
    navigator built before it is torn down, and one GraphStartError names the node."""
    episodes = write_episodes(tmp_path / "e.json.gz", generate_episodes("val_unseen", 1, seed=0))
    params = write_params_file(
        {
            "sim": {"episodes_file": str(tmp_path / "missing.json.gz")},
            "evaluator": {"episodes_file": str(episodes)},
        },
        tmp_path / "params.yaml",
    )
    with isolated_context(ros_domain_id) as context:
        with pytest.raises(GraphStartError, match=r"^sim: episodes_file .* does not exist"):
            Bringup(
                "sim_eval",
                context=context,
                extra_params_files=[params],
                arguments={"policy": "expert"},
            )
        with pytest.raises(GraphStartError, match=r"^voice_teleop: audio_source is microphone"):
            Bringup(
                "voice",
                context=context,
                extra_params_files=[
                    write_params_file(
                        {"voice_teleop": {"microphone_device": "no such microphone"}},
                        tmp_path / "voice.yaml",
                    )
                ],
                arguments={"policy": "expert"},
            )
        with pytest.raises(
            GraphStartError, match=r"^navigator: trigger_configure failed: .*RANDOM"
        ):
            Bringup("navigation", context=context)


def test_voice_graph_follows_a_stamped_motion_controller(ros_domain_id, tmp_path):
    """use_stamped: true in a controller params file only: the voice node (and the sim) are set
    to TwistStamped too, instead of the graph failing to start (one process cannot hold Twist
    and TwistStamped on one topic)."""
    controller = write_params_file(
        {"motion_controller": {"use_stamped": True}}, tmp_path / "controller.yaml"
    )
    given = {"controller_params_file": str(controller)}
    for graph in ("voice", "sim_eval"):
        values = argument_values(GRAPHS[graph], given)
        overrides, notes = matched_cmd_vel_types(GRAPHS[graph], (), values)
        follower = {
            "voice": ("voice_teleop", "cmd_vel_stamped"),
            "sim_eval": ("sim", "use_stamped"),
        }
        node, parameter = follower[graph]
        assert overrides == {node: {parameter: True}} and "match motion_controller" in notes[0]
    # given explicitly, every node agrees already: nothing to match
    values = argument_values(GRAPHS["voice"], {**given, "cmd_vel_stamped": "true"})
    assert matched_cmd_vel_types(GRAPHS["voice"], (), values) == ({}, [])

    with isolated_context(ros_domain_id) as context:
        graph = Bringup(
            "voice",
            context=context,
            arguments={**given, "policy": "forward", "audio_source": "none"},
        )
        try:
            assert graph.nodes["voice_teleop"]._cmd_vel_type is TwistStamped
            assert graph.nodes["motion_controller"].get_parameter("use_stamped").value
        finally:
            graph.close()
